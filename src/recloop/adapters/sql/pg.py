"""PostgreSQL's lane for the hot statements: compiled once for asyncpg, rows as arrays.

The distributed worker writes a few thousand rows per poll and per checkpoint (the
archived events, the users' states). Through SQLAlchemy's async layer each row is a
mapping processed in Python, and ``INSERT ... RETURNING`` with many rows becomes
multi-row ``VALUES`` statements that PostgreSQL parses and plans anew for each
number of rows. Here a statement is compiled once from its SQLAlchemy definition
(the same SQL, the same casts) and run on the asyncpg connection
(:meth:`~recloop.adapters.sql.database.SqlDatabase.pg_write`):

- :meth:`PgStatement.unnest`: ``INSERT ... SELECT * FROM unnest($1::T[], ...)``, one
  execution whatever the number of rows, its parameters one array per column
  (encoded by asyncpg in C; prepared once per connection);
- :meth:`PgStatement.rows`: positional tuples for ``executemany`` (the small batches).

None of the statements run here has a bind processor under the asyncpg dialect
(checked when compiled), so the values are what SQLAlchemy would have sent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.dialects.postgresql import asyncpg as _asyncpg

_DIALECT = _asyncpg.dialect()


class PgStatement:
    """A SQLAlchemy statement compiled once for asyncpg.

    Parameters
    ----------
    stmt
        An insert (with or without ``ON CONFLICT`` and ``RETURNING``) or a query.
    column_keys
        For an insert: the columns given (by default every column of the table).
    """

    def __init__(self, stmt: Any, column_keys: Sequence[str] | None = None) -> None:
        compiled = stmt.compile(
            dialect=_DIALECT, column_keys=None if column_keys is None else list(column_keys)
        )
        if compiled._bind_processors:
            raise TypeError(f"PgStatement: parameters with bind processors in {compiled}")
        self.sql = str(compiled)
        self.order: tuple[str, ...] = tuple(compiled.positiontup or ())

    def rows(self, params: Sequence[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
        """``params`` as positional tuples, for ``executemany``."""
        order = self.order
        return [tuple(row[k] for k in order) for row in params]

    def unnest(self) -> str:
        """The insert with its one row of ``VALUES`` made ``SELECT * FROM unnest(...)`` of
        one array per parameter: many rows in one execution.

        An ``ON CONFLICT DO UPDATE`` must then not meet the same key twice in one call.

        >>> from sqlalchemy import Integer, String, column, table
        >>> t = table("t", column("a", Integer), column("b", String))
        >>> PgStatement(t.insert(), ["a", "b"]).unnest()
        'INSERT INTO t (a, b) SELECT * FROM unnest($1::INTEGER[], $2::VARCHAR[])'
        """
        head, values = self.sql.split(" VALUES (", 1)
        end = _closing(values)
        marks = [m.strip() for m in values[:end].split(",")]
        if not all(m.startswith("$") and "::" in m for m in marks):
            raise ValueError(f"PgStatement.unnest: not one row of typed parameters: {self.sql}")
        arrays = ", ".join(f"{m}[]" for m in marks)
        return f"{head} SELECT * FROM unnest({arrays}){values[end + 1 :]}"


def _closing(text: str) -> int:
    """Where the parenthesis open before ``text`` closes in it.

    >>> _closing("$1::INTEGER, f($2)) ON CONFLICT")
    18
    """
    depth = 1
    for at, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0:
            return at
    raise ValueError(f"no closing parenthesis in {text!r}")
