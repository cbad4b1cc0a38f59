"""Chart specifications the console's pages hand to uPlot (``static/console.js``).

A chart is plain data: category or numeric ``x``, named series of values (None
where a series has no point), and a ``kind`` that says how to draw it
(``forest``: an estimate with its interval as whiskers per row; ``bars``;
``lines``). The page carries the spec in a ``data-chart`` attribute, with the
number of series and points it must draw: the browser test compares them with
what the chart object holds once drawn.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class Series:
    label: str
    values: list[float | None]


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
                "series": [{"label": s.label, "values": s.values} for s in self.series],
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
    counts = [0] * bins
    for v in values:
        counts[min(max(int((v - low) // width), 0), bins - 1)] += 1
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
