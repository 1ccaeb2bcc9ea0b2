"""Revisor's engine: Alembic migrations driven as a library, locked and recorded.

The public surface is the ``revisor`` command (:mod:`revisor.cli`), the
Python API behind it (:mod:`revisor.commands`) and the Job contract shared
with the operator (:mod:`revisor.contract`).
"""

from revisor._version import __version__

__all__ = ["__version__"]
