"""Chart specifications the console's pages hand to uPlot (``static/console.js``).

A chart is plain data: category, numeric or time (seconds) ``x``, named series of
values (None where a series has no point), and a ``kind`` that says how to draw it
(``forest``: an estimate with its interval as whiskers per row; ``bars``;
``lines``). A line series may be dashed (a bound, a reference) and take the colour
of another; ``bands`` fill between pairs of series (an interval over time).

The page carries the spec in a ``data-chart`` attribute, with the number of
series and points it must draw: the browser test compares them with what the
chart object holds once drawn.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson


@dataclass(frozen=True, slots=True)
class Series:
    label: str
    values: list[float | None]
    dash: bool = False
    colour: int | None = None
    """Index in the page's palette; None: the series' own position."""


@dataclass(slots=True)
class Chart:
    chart_id: str
    title: str
    kind: str
    x: list[float]
    series: list[Series] = field(default_factory=list)
    categories: list[str] | None = None
    """Labels of the x positions (a category axis) or None (numeric x)."""
    x_label: str = ""
    y_label: str = ""
    time: bool = False
    """``x`` holds seconds since the epoch (drawn as dates and times)."""
    bands: list[tuple[int, int]] = field(default_factory=list)
    """(upper, lower) series positions (0-based in ``series``) to fill between."""

    @property
    def points(self) -> int:
        """Points drawn: the series' values that are numbers."""
        return sum(1 for s in self.series for v in s.values if v is not None)

    def spec(self) -> str:
        """The JSON the page carries (``data-chart``)."""
        return orjson.dumps(
            {
                "title": self.title,
                "kind": self.kind,
                "x": self.x,
                "categories": self.categories,
                "x_label": self.x_label,
                "y_label": self.y_label,
                "time": self.time,
                "bands": self.bands,
                "series": [
                    {"label": s.label, "values": s.values, "dash": s.dash, "colour": s.colour}
                    for s in self.series
                ],
            }
        ).decode()


def finite(value: Any) -> float | None:
    """A number for the chart, or None (missing, NaN or infinite)."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def forest(
    chart_id: str,
    title: str,
    rows: Sequence[tuple[str, float | None, float | None, float | None]],
    y_label: str = "",
) -> Chart:
    """One row per (label, estimate, low, high): the estimate and its interval."""
    return Chart(
        chart_id,
        title,
        "forest",
        [float(i) for i in range(len(rows))],
        [
            Series("estimate", [finite(r[1]) for r in rows]),
            Series("low", [finite(r[2]) for r in rows]),
            Series("high", [finite(r[3]) for r in rows]),
        ],
        categories=[r[0] for r in rows],
        y_label=y_label,
    )


def histogram(
    chart_id: str, title: str, values: Sequence[float], low: float, high: float, bins: int
) -> Chart:
    """Counts of ``values`` in ``bins`` equal bins over [low, high] (bars at the centres)."""
    width = (high - low) / bins
    held = np.asarray(values, dtype=np.float64)
    index = np.clip((held - low) // width, 0, bins - 1).astype(np.intp)
    counts = np.bincount(index, minlength=bins).tolist()
    centres = [low + width * (i + 0.5) for i in range(bins)]
    return Chart(
        chart_id,
        title,
        "bars",
        centres,
        [Series("users", [float(c) for c in counts])],
        x_label="score",
        y_label="users",
    )


BandPoints = Sequence[tuple[float, float | None, float | None, float | None]]
"""(time, estimate, low, high) oldest first."""


def over_time(
    chart_id: str,
    title: str,
    groups: Sequence[tuple[str, BandPoints]],
    references: Sequence[tuple[str, float]] = (),
    y_label: str = "",
) -> Chart:
    """Per group, its estimate over time (a line) inside its interval (dashed bounds, the
    band between them filled); each reference a constant dashed line. The groups' times
    are merged: a group has no point (None) where it was not sampled."""
    times = sorted({p[0] for _, points in groups for p in points})
    position = {t: i for i, t in enumerate(times)}
    series: list[Series] = []
    bands: list[tuple[int, int]] = []
    for colour, (label, points) in enumerate(groups):
        columns: list[list[float | None]] = [[None] * len(times) for _ in range(3)]
        for at, *figures in points:
            for column, value in zip(columns, figures, strict=True):
                column[position[at]] = finite(value)
        first = len(series)
        series.append(Series(label, columns[0], colour=colour))
        series.append(Series(f"{label} low", columns[1], dash=True, colour=colour))
        series.append(Series(f"{label} high", columns[2], dash=True, colour=colour))
        bands.append((first + 2, first + 1))
    for i, (label, value) in enumerate(references):
        colour = len(groups) + i
        series.append(Series(label, [float(value)] * len(times), dash=True, colour=colour))
    return Chart(
        chart_id,
        title,
        "lines",
        [float(t) for t in times],
        series,
        y_label=y_label,
        time=True,
        bands=bands,
    )


def curve(
    chart_id: str,
    title: str,
    x: Sequence[float],
    y: Sequence[float],
    label: str,
    reference: str,
    x_label: str,
    y_label: str,
) -> Chart:
    """``y`` against ``x`` (ascending) with the diagonal ``y = x`` as a dashed reference
    (a ROC curve against chance, a reliability diagram against perfect calibration)."""
    xs = [float(v) for v in x]
    return Chart(
        chart_id,
        title,
        "lines",
        xs,
        [Series(label, [finite(v) for v in y]), Series(reference, list(xs), dash=True)],
        x_label=x_label,
        y_label=y_label,
    )
