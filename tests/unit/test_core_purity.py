"""Nothing under core/ does I/O: it imports no async, storage, broker or web library.

And services/ reach storage, brokers and the web only through ports: they import
no adapter, no storage, broker or web library, and not the API.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import recloop.core
import recloop.services

CORE = Path(recloop.core.__file__).parent
SERVICES = Path(recloop.services.__file__).parent
FORBIDDEN = (
    "asyncio",
    "sqlalchemy",
    "redis",
    "aiokafka",
    "fastapi",
    "starlette",
    "httpx",
    "recloop.services",
    "recloop.adapters",
    "recloop.api",
)


def imported_modules(source: str, package: str) -> set[str]:
    """Absolute names of every module ``source`` imports, relative imports resolved."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def forbidden(names: set[str], banned: tuple[str, ...] = FORBIDDEN) -> set[str]:
    return {n for n in names for f in banned if n == f or n.startswith(f"{f}.")}


def test_checker_catches_forbidden_imports() -> None:
    source = (
        "import asyncio.tasks\nfrom sqlalchemy import select\nimport numpy\n"
        "from .. import services\nfrom ..adapters.memory import store\n"
        "if True:\n    import redis\n"
    )
    assert forbidden(imported_modules(source, "recloop.core")) == {
        "asyncio.tasks",
        "sqlalchemy",
        "sqlalchemy.select",
        "recloop.services",
        "recloop.adapters.memory",
        "recloop.adapters.memory.store",
        "redis",
    }


def core_files() -> list[Path]:
    return sorted(CORE.rglob("*.py"))


def test_core_has_modules() -> None:
    assert {"events.py", "preferences.py", "hashing.py"} <= {p.name for p in core_files()}


@pytest.mark.parametrize("path", core_files(), ids=lambda p: str(p.relative_to(CORE)))
def test_core_module_is_pure(path: Path) -> None:
    package = ".".join(("recloop", "core", *path.relative_to(CORE).parent.parts))
    assert forbidden(imported_modules(path.read_text(), package)) == set()


SERVICES_FORBIDDEN = (
    "sqlalchemy",
    "redis",
    "aiokafka",
    "fastapi",
    "starlette",
    "httpx",
    "limits",
    "recloop.adapters",
    "recloop.api",
)


def service_files() -> list[Path]:
    return sorted(SERVICES.rglob("*.py"))


def test_services_have_modules() -> None:
    assert {"feedback.py", "worker.py", "guard.py"} <= {p.name for p in service_files()}


@pytest.mark.parametrize("path", service_files(), ids=lambda p: str(p.relative_to(SERVICES)))
def test_service_module_uses_ports_only(path: Path) -> None:
    package = ".".join(("recloop", "services", *path.relative_to(SERVICES).parent.parts))
    assert forbidden(imported_modules(path.read_text(), package), SERVICES_FORBIDDEN) == set()
