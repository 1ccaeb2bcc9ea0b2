"""Where a command works: the scripts, the database, the version table.

:class:`Project` is Revisor's counterpart of Alembic's ``Config``: every
command takes one. It is built from the global options without touching
anything; the scripts are loaded and the database URL resolved the first
time a command asks for them, so ``revisor heads`` never needs a database
and a bad URL is reported only by commands that connect.

``schema`` (``--schema``) is a PostgreSQL tenant's schema, as in Alembic's
multi-tenancy recipe. It is not a parallel path through the engine: it
becomes the version table's schema (so ``revisor_history``, the schema
snapshots and the lock's key follow it, as they follow
``--version-table-schema``) and the database's (so every session's
search_path is that schema, :mod:`revisor.connection`).
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from revisor.connection import Database, resolve_database
from revisor.contract import VersionTable
from revisor.errors import BadInput
from revisor.scripts import ScriptLocation, Scripts, load_scripts

#: PostgreSQL's longest name (NAMEDATALEN - 1); it cuts longer ones silently.
MAX_SCHEMA_BYTES = 63


@dataclass(frozen=True)
class Project:
    """The scripts, the database and the version table one command works on."""

    location: ScriptLocation = field(default_factory=ScriptLocation)
    database_url: str | None = None
    database_url_file: str | None = None
    version_table: VersionTable = field(default_factory=VersionTable)
    #: Run the project's own env.py (with Revisor's connection) instead of hermetically.
    env_py: bool = False
    #: ``MODULE:ATTR`` of a SQLAlchemy MetaData whose naming convention a
    #: hermetic run gives Alembic, as the project's env.py would (its
    #: ``target_metadata``): constraints then get the names the project expects.
    metadata: str | None = None
    #: The PostgreSQL schema (a tenant's) everything happens in (``--schema``).
    schema: str | None = None

    def __post_init__(self) -> None:
        if self.schema is None:
            return
        if not self.schema or len(self.schema.encode()) > MAX_SCHEMA_BYTES or "\0" in self.schema:
            raise BadInput(
                f"--schema {self.schema[:80]!r} is not a PostgreSQL schema name",
                hint=f"at most {MAX_SCHEMA_BYTES} bytes, without NUL characters (PostgreSQL "
                "would cut a longer name, and migrate another schema)",
            )
        given = self.version_table.schema
        if given is not None and given != self.schema:
            raise BadInput(
                f"--version-table-schema {given} contradicts --schema {self.schema}: with "
                "--schema, the version table is in that schema",
                hint="drop --version-table-schema",
            )
        # Frozen: set once, here, as the dataclass would have.
        object.__setattr__(self, "version_table", replace(self.version_table, schema=self.schema))

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
        """The database, from the documented sources (first one wins), in :attr:`schema`."""
        db = resolve_database(
            url=self.database_url,
            url_file=self.database_url_file,
            ini_url=lambda: self.scripts.config.get_main_option("sqlalchemy.url") or None,
        )
        if self.schema is None:
            return db
        if db.backend != "postgresql":
            raise BadInput(
                f"--schema is for PostgreSQL (a schema per tenant, in its search_path); "
                f"{db.display} is {db.backend}",
                hint="drop --schema; on MySQL/MariaDB a schema is a database: name it in the URL",
            )
        return replace(db, schema=self.schema)

    @cached_property
    def target_metadata(self) -> sa.MetaData | None:
        """The MetaData named by :attr:`metadata`, imported once (None when none is named)."""
        if self.metadata is None:
            return None
        return load_metadata(self.metadata, search=self.scripts.dirs)

    def with_scripts(self, scripts: Scripts) -> Project:
        """This project over ``scripts`` already loaded (``verify`` loads them its own way)."""
        other = Project(
            location=self.location,
            database_url=self.database_url,
            database_url_file=self.database_url_file,
            version_table=self.version_table,
            env_py=self.env_py,
            metadata=self.metadata,
            schema=self.schema,
        )
        other.__dict__["scripts"] = scripts
        return other


def load_metadata(ref: str, *, search: list[str] | None = None) -> sa.MetaData:
    """Import ``MODULE:ATTR`` (dotted attributes allowed) and check it is a MetaData.

    The module is looked up on ``sys.path`` with the current directory and
    ``search`` (the script directories) in front, as Alembic's
    ``prepend_sys_path`` does for env.py.
    """
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise BadInput(
            f"--metadata {ref!r}: expected MODULE:ATTRIBUTE, e.g. myapp.models:Base.metadata"
        )
    for path in [str(Path.cwd()), *(search or [])]:
        if path not in sys.path:
            sys.path.insert(0, path)
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:
        raise BadInput(
            f"--metadata {ref}: cannot import {module_name}: {type(exc).__name__}: {exc}",
            hint="the module must be importable where the engine runs (in a Job: the "
            "runner image, see the image docs)",
        ) from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise BadInput(f"--metadata {ref}: {module_name} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not isinstance(obj, sa.MetaData):
        raise BadInput(
            f"--metadata {ref}: {attr} is a {type(obj).__name__}, not a sqlalchemy MetaData"
        )
    return obj
