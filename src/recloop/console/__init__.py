"""The web console at ``/console`` and the offline API documentation pages."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.routing import BaseRoute

from recloop.console import docs, routes


def install(app: FastAPI) -> list[BaseRoute]:
    """Add the console's pages and assets, ``/docs`` and ``/redoc`` to ``app``; the
    console's routes (``/docs`` and ``/redoc`` are the app's own)."""
    added = routes.install(app)
    docs.install(app)
    return added


__all__ = ["install"]
