"""The web console at ``/console`` and the offline API documentation pages."""

from __future__ import annotations

from fastapi import FastAPI

from recloop.console import docs, routes


def install(app: FastAPI) -> None:
    """Add the console's pages and assets, ``/docs`` and ``/redoc`` to ``app``."""
    routes.install(app)
    docs.install(app)


__all__ = ["install"]
