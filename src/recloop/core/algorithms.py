"""The rule for algorithm names, wherever a request gives one.

Performance reports, overrides (``/algorithms/{name}/...``), rank candidates and the
attribution of feedback events all name algorithms; each must be one of the configured
``bandit.algorithms``, compared exactly. Anything else is refused, naming the field,
rather than counted nowhere.
"""

from __future__ import annotations

from collections.abc import Collection

from recloop.core.errors import InvalidInput


def unknown_algorithm(name: str, known: Collection[str]) -> str:
    """The message refusing ``name``.

    >>> unknown_algorithm("als", ("popularity", "trending"))
    "unknown algorithm 'als'; known: ['popularity', 'trending']"
    """
    return f"unknown algorithm {name!r}; known: {list(known)}"


def check_algorithm(field: str, name: str | None, known: Collection[str]) -> None:
    """Refuse ``name`` in ``field`` unless it is one of ``known`` (None: no algorithm named).

    Raises
    ------
    InvalidInput
        naming ``field``.

    >>> check_algorithm("algorithm", "popularity", ("popularity",))
    >>> check_algorithm("algorithm", "als", ("popularity",))
    Traceback (most recent call last):
    ...
    recloop.core.errors.InvalidInput: algorithm: unknown algorithm 'als'; known: ['popularity']
    """
    if name is not None and name not in known:
        raise InvalidInput(field, unknown_algorithm(name, known))
