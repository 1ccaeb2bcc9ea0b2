"""Where a command works: the scripts, the database, the version table.

:class:`Project` is Revisor's counterpart of Alembic's ``Config``: every
command takes one. It is built from the global options without touching
anything; the scripts are loaded and the database URL resolved the first
time a command asks for them, so ``revisor heads`` never needs a database
and a bad URL is reported only by commands that connect.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from revisor.connection import Database, resolve_database
from revisor.contract import VersionTable
from revisor.errors import BadInput
from revisor.scripts import ScriptLocation, Scripts, load_scripts


@dataclass(frozen=True)
class Project:
    """The scripts, the database and the version table one command works on."""

    location: ScriptLocation = field(default_factory=ScriptLocation)
    database_url: str | None = None
    database_url_file: str | None = None
    version_table: VersionTable = field(default_factory=VersionTable)
    #: Run the project's own env.py (with Revisor's connection) instead of hermetically.
    env_py: bool = False

    @cached_property
    def scripts(self) -> Scripts:
        """The loaded script directory (loaded once, on first use)."""
        scripts = load_scripts(self.location)
        if self.env_py and not scripts.has_env_py:
            raise BadInput(
                f"--env-py: {scripts.directory.dir} has no env.py",
                hint="drop --env-py to run hermetically, or point --scripts/--config at the "
                "directory that holds env.py",
            )
        return scripts

    @cached_property
    def db(self) -> Database:
        """The database, from the documented sources (first one wins)."""
        return resolve_database(
            url=self.database_url,
            url_file=self.database_url_file,
            ini_url=self.scripts.config.get_main_option("sqlalchemy.url") or None,
        )

    def with_scripts(self, scripts: Scripts) -> Project:
        """This project over ``scripts`` already loaded (``verify`` loads them its own way)."""
        other = Project(
            location=self.location,
            database_url=self.database_url,
            database_url_file=self.database_url_file,
            version_table=self.version_table,
            env_py=self.env_py,
        )
        other.__dict__["scripts"] = scripts
        return other
