"""An external sort in bounded memory: sorted runs spilled to files, merged back.

``recloop import`` applies history in timestamp order, and history files are rarely
in it. :class:`ExternalSort` holds at most ``buffer`` items; each time it is full it
sorts them and writes them as one *run* (msgpack frames of :data:`FRAME` items, with
msgspec) into a temporary directory, and :meth:`ExternalSort.sorted` merges the runs
and the items still held (``heapq.merge``), reading each run a frame at a time; runs
that do not overlap (a file already in order: each run's first key past the previous
run's last) are read one after the other instead, which gives the same order without a
comparison per item. An input that fits in the buffer is never written out. Items are
tuples whose first two fields are the sort key (for history rows: timestamp, then the
row's sequence number, so ties keep file and row order).
"""

from __future__ import annotations

import heapq
import itertools
import struct
from collections.abc import Iterator
from operator import itemgetter
from pathlib import Path
from typing import Any, Final, Generic, TypeVar

import msgspec

T = TypeVar("T", bound=tuple[Any, ...])

FRAME: Final = 1_024
"""Items per frame of a run file (one encode and one decode call each)."""
_LENGTH: Final = struct.Struct("<I")
_KEY: Final = itemgetter(0, 1)


class ExternalSort(Generic[T]):
    """Items added in any order, given back sorted by their first two fields.

    ``item_type`` is the items' type as msgspec decodes it from a run (a ``tuple[...]``
    of the fields' types). Memory: ``buffer`` items while adding; while merging, one
    frame per run plus the items held.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     order = ExternalSort(Path(tmp), "demo", 2, tuple[float, int, str])
    ...     for i, (t, name) in enumerate([(3.0, "c"), (1.0, "a"), (2.0, "b"), (1.0, "a2")]):
    ...         order.add((t, i, name))
    ...     [name for _, _, name in order.sorted()], order.runs
    (['a', 'a2', 'b', 'c'], 2)
    """

    def __init__(self, directory: Path, name: str, buffer: int, item_type: Any) -> None:
        if buffer < 1:
            raise ValueError(f"buffer: at least 1 item, got {buffer}")
        self._directory = directory
        self._name = name
        self._buffer = buffer
        self._held: list[T] = []
        self._files: list[Path] = []
        self._bounds: list[tuple[Any, Any]] = []  # each run's first and last key
        self._encoder = msgspec.msgpack.Encoder(enc_hook=str)
        self._decoder = msgspec.msgpack.Decoder(list[item_type])
        self.count = 0
        """Items added."""
        self.runs = 0
        """Runs written out."""

    def add(self, item: T) -> None:
        self._held.append(item)
        self.count += 1
        if len(self._held) >= self._buffer:
            self._spill()

    def sorted(self) -> Iterator[T]:
        """Every item added, in order (once: the runs are deleted as they are read)."""
        self._held.sort(key=_KEY)
        held, self._held = self._held, []
        if not self._files:
            return iter(held)
        runs = [self._read(path) for path in self._files]
        bounds = self._bounds + ([(_KEY(held[0]), _KEY(held[-1]))] if held else [])
        self._files, self._bounds = [], []
        if all(last < first for (_, last), (first, _) in itertools.pairwise(bounds)):
            return itertools.chain(*runs, held)
        return heapq.merge(*runs, iter(held), key=_KEY)

    def _spill(self) -> None:
        self._held.sort(key=_KEY)
        path = self._directory / f"{self._name}-{len(self._files):05d}.run"
        encode, pack = self._encoder.encode, _LENGTH.pack
        with path.open("wb") as out:
            held = self._held
            for start in range(0, len(held), FRAME):
                frame = encode(held[start : start + FRAME])
                out.write(pack(len(frame)))
                out.write(frame)
        self._files.append(path)
        self._bounds.append((_KEY(held[0]), _KEY(held[-1])))
        self.runs += 1
        self._held = []

    def _read(self, path: Path) -> Iterator[T]:
        decode = self._decoder.decode
        try:
            with path.open("rb") as run:
                while header := run.read(_LENGTH.size):
                    (size,) = _LENGTH.unpack(header)
                    yield from decode(run.read(size))
        finally:
            path.unlink(missing_ok=True)
