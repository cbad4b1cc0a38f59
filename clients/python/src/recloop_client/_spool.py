"""The on-disk spool: events the buffer could not deliver, as JSON Lines.

Events are appended to ``path``; a replay first renames the file to a unique
``<path>.<id>.replay`` (so appends made meanwhile start a new spool), sends its
events, and deletes it when every event was delivered or re-spooled. A replay file
left by a crash is replayed at the next start; events sent twice that way are
harmless, because the server drops an ``event_id`` it has seen (``duplicate``).

On POSIX an advisory ``flock`` on the spool file orders appends and renames, so
processes may share a spool.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: in-process locking only
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("recloop_client")


class Spool:
    """Append-only JSON Lines file of undelivered events, replayed by rename."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def append(self, events: list[dict[str, Any]], sync: bool = True) -> None:
        """Add ``events``: written, and fsynced unless ``sync`` is false (then a process
        crash keeps them, a power cut may not)."""
        if not events:
            return
        data = "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in events).encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            while True:
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    if fcntl is not None:
                        fcntl.flock(fd, fcntl.LOCK_EX)
                    # A replay may have renamed the file between open and lock: use the new one.
                    if _same_file(fd, self.path):
                        os.write(fd, data)
                        if sync:
                            os.fsync(fd)
                        return
                finally:
                    os.close(fd)

    def claim(self) -> list[Path]:
        """Move the spool aside for replay; return every replay file (older ones first)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            try:
                fd = os.open(self.path, os.O_RDONLY)
            except FileNotFoundError:
                pass
            else:
                try:
                    if fcntl is not None:
                        fcntl.flock(fd, fcntl.LOCK_EX)
                    if _same_file(fd, self.path):
                        os.rename(self.path, self._replay_name())
                finally:
                    os.close(fd)
        found = self.path.parent.glob(f"{self.path.name}.*.replay")
        return sorted(found, key=_mtime)

    def _replay_name(self) -> Path:
        return self.path.with_name(f"{self.path.name}.{uuid.uuid4().hex}.replay")

    @staticmethod
    def read(path: Path) -> Iterator[dict[str, Any]]:
        """The events of a replay file; a torn last line (a crash mid-write) is logged."""
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:  # another process replayed it
            return
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except ValueError:
                log.error("spool %s line %d is not JSON (torn write?): %.200s", path, n, line)
                continue
            if isinstance(event, dict):
                yield event

    @staticmethod
    def done(path: Path) -> None:
        path.unlink(missing_ok=True)

    def pending(self) -> int:
        """Events in the spool and in replay files not yet finished."""
        files = [self.path, *self.path.parent.glob(f"{self.path.name}.*.replay")]
        count = 0
        for f in files:
            try:
                count += sum(1 for line in f.read_bytes().splitlines() if line.strip())
            except FileNotFoundError:
                continue
        return count


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:  # replayed meanwhile by another process
        return 0.0


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False
