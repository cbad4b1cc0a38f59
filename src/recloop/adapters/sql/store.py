"""The state store over SQL (SQLite or PostgreSQL): one class per role, combined; the
event log is in ``log.py``.

=====================  ======================  ==================================
role (``ports``)       class                   module
=====================  ======================  ==================================
``UserStateStore``     ``SqlUserStateStore``   ``users.py`` (and the state commit)
``ReliabilityStore``   ``SqlReliabilityStore`` ``reliability.py``
``ExperimentStore``    ``SqlExperimentStore``  ``experiments.py``
``OptimizerStore``     ``SqlOptimizerStore``   ``optimizer.py``
``ImpressionStore``    ``SqlImpressionStore``  ``impressions.py``
``ModelStore``         ``SqlModelStore``       ``models.py``
``ItemStore``          ``SqlItemStore``        ``items.py``
``DeadLetterStore``    ``SqlDeadLetterStore``  ``dead_letters.py``
=====================  ======================  ==================================

They share the database and the fast lane's machinery (``base.py``).
"""

from __future__ import annotations

from sqlalchemy import func, select

from recloop.adapters.sql.dead_letters import SqlDeadLetterStore
from recloop.adapters.sql.experiments import SqlExperimentStore
from recloop.adapters.sql.impressions import SqlImpressionStore
from recloop.adapters.sql.items import SqlItemStore
from recloop.adapters.sql.models import SqlModelStore
from recloop.adapters.sql.optimizer import SqlOptimizerStore
from recloop.adapters.sql.reliability import SqlReliabilityStore
from recloop.adapters.sql.tables import items, user_state
from recloop.adapters.sql.users import SqlUserStateStore


class SqlStateStore(
    SqlUserStateStore,
    SqlReliabilityStore,
    SqlExperimentStore,
    SqlOptimizerStore,
    SqlImpressionStore,
    SqlModelStore,
    SqlItemStore,
    SqlDeadLetterStore,
):
    """Every role of the state store over one database (``ports.StateStore``)."""

    async def stored_dims(self) -> set[int]:
        found: set[int] = set()
        async with self._db.read() as conn:
            for table in (user_state, items):
                query = select(func.length(table.c.vector)).limit(1)
                size = (await conn.execute(query)).scalar()
                if size is not None:
                    found.add(int(size) // 8)  # float64 bytes
        return found

    async def ping(self) -> None:
        await self._db.ping()
