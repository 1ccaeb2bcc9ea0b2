"""Revisor's engine: Alembic migrations driven as a library, locked and recorded.

The public surface is the ``revisor`` command (:mod:`revisor.cli`), the
Python API behind it (:mod:`revisor.commands`) and the Job contract shared
with the operator (:mod:`revisor.contract`).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("revisor")
except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
