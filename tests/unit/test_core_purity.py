"""Nothing under core/ does I/O: it imports no async, storage, broker or web library.

And services/ reach storage, brokers and the web only through ports: they import
no adapter, no storage, broker or web library, and not the API. Nor does learning/
(the training job, the learners, the canary): it reads through ports too, and sits
below services.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

import recloop.core
import recloop.learning
import recloop.services

CORE = Path(recloop.core.__file__).parent
SERVICES = Path(recloop.services.__file__).parent
LEARNING = Path(recloop.learning.__file__).parent
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
LAYERS = {
    "core": (CORE, FORBIDDEN),
    "services": (SERVICES, SERVICES_FORBIDDEN),
    "learning": (LEARNING, (*SERVICES_FORBIDDEN, "recloop.services")),
}
"""Each layer's folder and what its modules may not import."""


def layer_files() -> list[Any]:
    return [
        pytest.param(layer, path, id=f"{layer}/{path.relative_to(root)}")
        for layer, (root, _) in LAYERS.items()
        for path in sorted(root.rglob("*.py"))
    ]


def test_layers_have_modules() -> None:
    names = {layer: {p.name for p in root.rglob("*.py")} for layer, (root, _) in LAYERS.items()}
    assert {"events.py", "preferences.py", "hashing.py"} <= names["core"]
    assert {"feedback.py", "worker.py", "guard.py"} <= names["services"]
    assert {"job.py", "training.py"} <= names["learning"]


@pytest.mark.parametrize(("layer", "path"), layer_files())
def test_module_imports_what_its_layer_may(layer: str, path: Path) -> None:
    root, banned = LAYERS[layer]
    package = ".".join(("recloop", layer, *path.relative_to(root).parent.parts))
    assert forbidden(imported_modules(path.read_text(), package), banned) == set()
