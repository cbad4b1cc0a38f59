"""Logging: every record, ``structlog`` or stdlib ``logging.getLogger``, through one renderer.

``configure_logging("json", "INFO")`` makes each record one JSON object per line
(production); ``"console"`` renders the same records for people. Both carry what
``structlog.contextvars`` holds for the current request (``request_id``, bound by
the HTTP middleware), the logger's name, the level and an ISO timestamp; fields
given with ``extra={...}`` on a stdlib call come out as keys.

Secrets stay out: values under keys that name an API key, an ``Authorization``
header or review text (:data:`REDACTED_KEYS`) are replaced, wherever a caller
put them. Nothing in recloop logs request headers or event bodies; this is the
second line of defence. Tracebacks (both formats) name the frames, never their local
variables (which hold headers and bodies), and SQL errors carry no statement parameters
(``adapters.sql.database``).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, Literal, TextIO

import structlog

LogFormat = Literal["console", "json"]

REDACTED_KEYS = frozenset(
    {"authorization", "api_key", "headers", "password", "secret", "token", "text", "review"}
)
"""Keys whose values are never written (compared lower-case)."""

QUIET_LOGGERS = ("aiosqlite",)
"""Loggers held at INFO: their DEBUG lines quote SQL statements with their parameters
(event and request bodies)."""

_MARK = "_recloop_handler"


def _redact(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    # Not extras: uvicorn's coloured copy of the message, and the message another handler's
    # formatter already stored on the record.
    event_dict.pop("color_message", None)
    event_dict.pop("message", None)
    for key in list(event_dict):
        if key.lower() in REDACTED_KEYS:
            event_dict[key] = "[redacted]"
    return event_dict


def configure_logging(
    format: LogFormat = "console", level: str | int = "INFO", stream: TextIO | None = None
) -> None:
    """Route stdlib ``logging`` and ``structlog`` through one handler on the root logger.

    Replaces the handler an earlier call installed (so it may be called again),
    and leaves other handlers alone. ``stream`` defaults to standard error.
    """
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.stdlib.ExtraAdder(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
    ]
    renderer: Any
    if format == "json":
        renderer = structlog.processors.JSONRenderer()
        tail: list[Any] = [structlog.processors.format_exc_info]
    else:
        # Plain tracebacks: structlog's default (rich's, when rich is installed) prints each
        # frame's local variables, which hold request headers (API keys) and bodies.
        renderer = structlog.dev.ConsoleRenderer(
            colors=False, exception_formatter=structlog.dev.plain_traceback
        )
        tail = []
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *tail,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    setattr(handler, _MARK, True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _MARK, False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level if isinstance(level, int) else level.upper())
    for name in QUIET_LOGGERS:  # even at DEBUG
        logging.getLogger(name).setLevel(logging.INFO)
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def unconfigure_logging() -> None:
    """Remove the handler :func:`configure_logging` installed and reset ``structlog``."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _MARK, False)]:
        root.removeHandler(old)
    structlog.reset_defaults()


__all__ = [
    "QUIET_LOGGERS",
    "REDACTED_KEYS",
    "LogFormat",
    "configure_logging",
    "unconfigure_logging",
]
