"""History files as feedback events: JSON Lines, CSV or Parquet, one event per row.

A row has the API's fields (``POST /feedback``: ``user_id``, ``item_id``, ``type``,
``value``, ``timestamp``, ``event_id``, ``text``, ``context``, ``attribution``); other
names are given by a column mapping (``--map rating=value``). CSV and Parquet rows
nest with dotted columns (``attribution.algorithm``) or a JSON object in a
``context`` / ``attribution`` column; columns that are no API field are ignored
(and reported). Each row is decoded into the API's own struct
(``api.wire.FeedbackWire``, with the id rule), so an import accepts and refuses
what the API does; it also needs a ``timestamp`` (history is judged by its own).

A row without ``event_id`` gets one derived from the file's name, the row's number
and its content (:func:`derived_event_id`): importing the same file again makes the
same ids, which the event log then refuses as duplicates.

:func:`read` streams a file: one row at a time (Parquet: record batches of
:data:`PARQUET_BATCH` rows), so a file of any size is read in bounded memory.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import msgspec

from recloop.api.wire import FeedbackWire, error_of, id_error
from recloop.core.errors import InvalidInput
from recloop.core.ids import json_may_break_id_rule

FIELDS: Final = frozenset(FeedbackWire.__struct_fields__)
NESTED: Final = ("context", "attribution")
_canonical: Final = msgspec.json.Encoder(order="sorted", enc_hook=str)
FORMATS: Final = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}


PAST_HEADER: Final = "(cells past the header)"
PARQUET_BATCH: Final = 8_192
"""Rows of a Parquet file read at a time."""

Raw = bytes | dict[str, Any]
"""A row as read, kept for the rejected rows' file: a JSON Lines line's bytes, or a CSV
or Parquet record."""


@dataclass(frozen=True, slots=True)
class Row:
    """One decoded row: where it came from, and its event (or why it has none)."""

    number: int
    """1-based: the line of a JSON Lines file, the record of a CSV or Parquet file."""
    raw: Raw
    event: FeedbackWire | None
    error: InvalidInput | None = None


def parse_mapping(items: list[str]) -> dict[str, str]:
    """``["old=new", ...]`` as a dict; ValueError naming the bad item.

    >>> parse_mapping(["rating=value", "ts=timestamp"])
    {'rating': 'value', 'ts': 'timestamp'}
    """
    mapping: dict[str, str] = {}
    for item in items:
        old, sep, new = item.partition("=")
        if not sep or not old or not new:
            raise ValueError(f"--map {item!r}: expected OLD=NEW, e.g. rating=value")
        mapping[old] = new
    return mapping


def format_of(path: Path) -> str:
    """``jsonl``, ``csv`` or ``parquet`` by the file's suffix; ValueError otherwise."""
    found = FORMATS.get(path.suffix.lower())
    if found is None:
        raise ValueError(f"{path}: unknown format {path.suffix!r}; expected one of {list(FORMATS)}")
    return found


def read(path: Path, mapping: Mapping[str, str], ignored: set[str]) -> Iterator[Row]:
    """Each row of ``path``, decoded (errors per row), as it is read; the columns that
    are no API field are added to ``ignored``. An unreadable file raises OSError or
    ValueError (when the rows are iterated)."""
    kind = format_of(path)
    records = {"jsonl": _jsonl, "csv": _csv, "parquet": _parquet}[kind](path)
    flat, strict = kind != "jsonl", kind == "jsonl"
    for number, (raw, record) in enumerate(records, start=1):
        if isinstance(record, InvalidInput):
            yield Row(number, raw, None, record)
            continue
        if not flat and not mapping and FIELDS.issuperset(record) and None not in record.values():
            renamed = record  # what _renamed would give: API names only, no nulls
        else:
            renamed = _renamed(record, mapping, ignored, flat=flat)
        yield _decode(path.name, number, raw, record, renamed, strict=strict)


def raw_record(raw: Raw) -> Any:
    """A row as read, for the rejected rows' file: the JSON value of a line (its text if
    it is no JSON), or the record."""
    if isinstance(raw, bytes):
        try:
            return msgspec.json.decode(raw)
        except msgspec.DecodeError:
            return raw.decode("utf-8", "replace").rstrip("\r\n")
    return raw


def derived_event_id(file: str, number: int, record: Mapping[str, Any]) -> str:
    """A stable event id for a row without one: from the file's name, the row's number
    and its content (two equal rows are two events; the same row imported again is
    the same event).

    >>> derived_event_id("h.csv", 1, {"a": 1}) == derived_event_id("h.csv", 1, {"a": 1})
    True
    >>> derived_event_id("h.csv", 1, {"a": 1}) == derived_event_id("h.csv", 2, {"a": 1})
    False
    """
    content = _canonical.encode(record)
    digest = hashlib.sha256(f"{file}\n{number}\n".encode() + content).hexdigest()
    return f"import-{digest[:32]}"


def _decode(
    name: str,
    number: int,
    raw: Raw,
    record: Mapping[str, Any],
    renamed: dict[str, Any],
    strict: bool,
) -> Row:
    """``name`` (the file's, without its directory) goes into derived event ids."""
    try:
        event = msgspec.convert(renamed, FeedbackWire, strict=strict)
    except msgspec.ValidationError as exc:
        return Row(number, raw, None, error_of(exc))
    # A JSON Lines row is checked as the API checks a body: only when a search of its
    # bytes finds something that could break the id rule (core.ids).
    if not isinstance(raw, bytes) or json_may_break_id_rule(raw):
        problem = id_error(event)
        if problem is not None:
            return Row(number, raw, None, problem)
    if event.timestamp is None:
        missing = InvalidInput("timestamp", "an imported event needs its timestamp")
        return Row(number, raw, None, missing)
    if event.event_id is None:
        event.event_id = derived_event_id(name, number, record)
    return Row(number, raw, event)


def _renamed(
    record: Mapping[str, Any], mapping: Mapping[str, str], ignored: set[str], flat: bool
) -> dict[str, Any]:
    """The record with the API's names, nested; empty CSV cells and nulls left out."""
    out: dict[str, Any] = {}
    for name, value in record.items():
        if name == PAST_HEADER:
            ignored.add(PAST_HEADER)
            continue
        if value is None or (flat and value == ""):
            continue
        target = mapping.get(name, name)
        head, _, rest = target.partition(".")
        if head not in FIELDS:
            ignored.add(name)
            continue
        if flat and isinstance(value, datetime) and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)  # Parquet timestamps without a zone: UTC
        if rest and head in NESTED:
            out.setdefault(head, {})[rest] = value
        elif flat and head in NESTED and isinstance(value, str):
            try:
                out[head] = json.loads(value)
            except json.JSONDecodeError:
                out[head] = value  # refused by decoding, naming the field
        else:
            out[head] = value
    return out


def _jsonl(path: Path) -> Iterator[tuple[Raw, dict[str, Any] | InvalidInput]]:
    decoder = msgspec.json.Decoder(dict[str, Any])
    with path.open("rb") as lines:
        for line in lines:
            if line.isspace():
                continue
            try:
                yield line, decoder.decode(line)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                yield line, InvalidInput("", f"not a JSON object: {exc}")


def _csv(path: Path) -> Iterator[tuple[Raw, dict[str, Any] | InvalidInput]]:
    with path.open(newline="", encoding="utf-8") as text:
        for record in csv.DictReader(text):
            if None in record:  # more cells than the header: kept under a name of their own
                record[PAST_HEADER] = record.pop(None)
            yield record, record


def _parquet(path: Path) -> Iterator[tuple[Raw, dict[str, Any] | InvalidInput]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ValueError(
            f"{path}: reading Parquet needs pyarrow: uv sync --extra parquet "
            "(or pip install 'recloop[parquet]')"
        ) from None
    for batch in pq.ParquetFile(path).iter_batches(batch_size=PARQUET_BATCH):
        for record in batch.to_pylist():
            yield record, record
