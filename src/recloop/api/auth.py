"""API-key authentication and roles for the routes (``core/auth.py`` holds the rules)."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from recloop.core.auth import Principal
from recloop.core.errors import Forbidden, NotAuthenticated

_ANONYMOUS: dict[str, Principal] = {}
"""The anonymous principal of each client address seen lately (principals are immutable)."""
_ANONYMOUS_MAX = 4096

_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer <key>`.")


def authorize(request: Request, role: str) -> Principal:
    """The caller's principal if its key has ``role``; raises 401/403 errors otherwise.

    With no keys configured, every caller is the anonymous principal
    ``client:<address>`` with every role (the server then only binds to loopback).
    """
    ring = request.app.state.container.keys
    if not ring.enabled:
        client = request.scope.get("client")  # request.client, without its Address
        host = client[0] if client else "unknown"
        principal = _ANONYMOUS.get(host)
        if principal is None:
            if len(_ANONYMOUS) >= _ANONYMOUS_MAX:
                _ANONYMOUS.clear()
            principal = _ANONYMOUS[host] = Principal(f"client:{host}", frozenset({"admin"}))
        return principal
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise NotAuthenticated("send an API key: Authorization: Bearer <key>")
    principal: Principal | None = ring.verify(key.strip())
    if principal is None:
        raise NotAuthenticated("invalid API key")
    if not principal.can(role):
        raise Forbidden(f"API key {principal.name!r} lacks the {role!r} role")
    return principal


def require(role: str) -> Any:
    """A route dependency: the caller needs ``role`` (documented as bearer auth in OpenAPI)."""

    async def dependency(
        request: Request, _: HTTPAuthorizationCredentials | None = Depends(_bearer)
    ) -> Principal:
        return authorize(request, role)

    dependency.__name__ = f"require_{role}"
    return Depends(dependency)


Ingest = require("ingest")
Read = require("read")
Admin = require("admin")

__all__: list[str] = ["Admin", "Ingest", "Read", "authorize", "require"]
