"""SQL adapters (SQLAlchemy 2 async): SQLite embedded, PostgreSQL distributed."""

from __future__ import annotations

from recloop.adapters.sql.database import SqlDatabase
from recloop.adapters.sql.log import SqlEventLog
from recloop.adapters.sql.store import SqlStateStore

__all__ = ["SqlDatabase", "SqlEventLog", "SqlStateStore"]
