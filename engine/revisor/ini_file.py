"""The alembic.ini a run reads, and the two settings of it a run with nothing to do needs.

Alembic reads the file with :class:`configparser.ConfigParser`, ``here``
(the file's directory) as a default for ``%(here)s``, and the ``[alembic]``
section unless ``-n`` names another. :func:`read_ini` reads it the same way
for :mod:`revisor.at_target`, which runs without Alembic, and declines
(None) whenever Alembic could find something it does not look at: extra
version locations, recursive or sourceless ones, a package resource as the
script location, an interpolation it cannot resolve. Stdlib only.
"""

from __future__ import annotations

import configparser
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from revisor.script_location import ScriptLocation

#: Settings that change which files Alembic loads as revisions: not answered here.
_LOADING = ("version_locations", "recursive_version_locations", "sourceless")


def default_config_file(environ: Mapping[str, str] | None = None) -> str | None:
    """The ini file Alembic's own CLI would read: ``$ALEMBIC_CONFIG``, else ``./alembic.ini``."""
    env = os.environ if environ is None else environ
    if env.get("ALEMBIC_CONFIG"):
        return env["ALEMBIC_CONFIG"]
    return "alembic.ini" if Path("alembic.ini").is_file() else None


@dataclass(frozen=True)
class IniSettings:
    #: The script directory, as Alembic resolves it (relative to the working directory).
    script_location: Path
    #: ``sqlalchemy.url``, interpolated, or None.
    url: str | None


def config_file_of(location: ScriptLocation) -> str | None:
    """The ini file a run at ``location`` reads: ``--config``, or Alembic's default without
    ``--scripts`` (:func:`default_config_file`); None when none is read."""
    if location.config_file is not None:
        return location.config_file
    return default_config_file() if location.scripts_dir is None else None


def read_ini(path: str, section: str) -> IniSettings | None:
    """``path``'s script location and URL as Alembic reads them, or None (see above)."""
    ini = Path(path)
    parser = configparser.ConfigParser({"here": ini.absolute().parent.as_posix()})
    try:
        if not parser.read([ini], encoding="locale"):
            return None
        if not parser.has_section(section) or any(parser.has_option(section, o) for o in _LOADING):
            return None
        script_location = parser.get(section, "script_location", fallback=None)
        url = parser.get(section, "sqlalchemy.url", fallback=None)
    except (configparser.Error, OSError, UnicodeDecodeError):
        return None
    if not script_location or (":" in script_location and not Path(script_location).is_absolute()):
        return None  # none (the full run says so), or a package resource
    return IniSettings(Path(script_location), url)
