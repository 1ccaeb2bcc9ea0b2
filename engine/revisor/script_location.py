"""Where a project's Alembic scripts are, as the command line says it.

Apart from :mod:`revisor.scripts` so that naming a location (the CLI does it
for every command) imports neither Alembic nor SQLAlchemy: ``revisor --help``
and a usage error stay as cheap as argparse.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ScriptLocation:
    """Where the scripts are: an ``alembic.ini``, a directory, or both."""

    config_file: str | None = None
    scripts_dir: str | None = None
    version_locations: tuple[str, ...] = ()
    ini_section: str = "alembic"
