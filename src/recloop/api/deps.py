"""Dependency aliases: routes ask for a service by type, the app state provides it."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from recloop.container import Container


async def get_container(request: Request) -> Container:
    container: Container = request.app.state.container
    return container


ContainerDep = Annotated[Container, Depends(get_container)]
