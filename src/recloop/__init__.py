"""recloop: the real-time learning loop beside a recommendation engine."""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
