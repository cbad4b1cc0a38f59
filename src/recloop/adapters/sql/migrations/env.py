"""Alembic environment: run by ``recloop migrate`` and at start-up (``storage.auto_migrate``).

The caller hands over an open synchronous connection in
``config.attributes["connection"]`` (an async engine's ``run_sync``).
"""

from __future__ import annotations

from alembic import context

from recloop.adapters.sql.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `recloop migrate`, which provides the connection")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
