"""Build real Alembic script directories on disk for tests.

Revision files are ordinary Alembic files, written the way ``alembic
revision`` writes them, so every test runs the engine over the same kind of
input a user has.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Rev:
    """One revision: ids, graph edges, and the bodies of upgrade()/downgrade()."""

    id: str
    down: str | tuple[str, ...] | None = None
    upgrade: str = "pass"
    downgrade: str = "pass"
    message: str = ""
    branch_labels: tuple[str, ...] | None = None
    depends_on: tuple[str, ...] | None = None
    header: str = ""

    def source(self) -> str:
        message = self.message or f"revision {self.id}"
        return (
            f'"""{message}\n\nRevision ID: {self.id}\nRevises: {self.down}\n"""\n\n'
            "import time\n\nimport sqlalchemy as sa\nfrom alembic import op\n\n"
            f"{self.header}\n"
            f"revision = {self.id!r}\n"
            f"down_revision = {self.down!r}\n"
            f"branch_labels = {self.branch_labels!r}\n"
            f"depends_on = {self.depends_on!r}\n\n\n"
            f"def upgrade() -> None:\n{textwrap.indent(textwrap.dedent(self.upgrade).strip(), '    ')}\n\n\n"
            f"def downgrade() -> None:\n{textwrap.indent(textwrap.dedent(self.downgrade).strip(), '    ')}\n"
        )


def table(name: str, down: str | tuple[str, ...] | None, rev: str, **kw: object) -> Rev:
    """A revision that creates table ``name`` and drops it on downgrade."""
    return Rev(
        id=rev,
        down=down,
        message=f"create {name}",
        upgrade=f"op.create_table({name!r}, sa.Column('id', sa.Integer, primary_key=True))",
        downgrade=f"op.drop_table({name!r})",
        **kw,  # type: ignore[arg-type]
    )


def chain(count: int, *, prefix: str = "t") -> list[Rev]:
    """``count`` revisions in a line, each creating one table."""
    revs: list[Rev] = []
    down = None
    for i in range(count):
        rev = f"{i + 1:04d}{prefix}0000000"[:12]
        revs.append(table(f"{prefix}{i + 1}", down, rev))
        down = rev
    return revs


@dataclass
class Project:
    """A script directory (with ``versions/``), optionally with env.py and alembic.ini."""

    root: Path
    revisions: list[Rev] = field(default_factory=list)

    @property
    def scripts(self) -> Path:
        return self.root / "migrations"

    @property
    def versions(self) -> Path:
        return self.scripts / "versions"

    def add(self, *revs: Rev) -> Project:
        self.versions.mkdir(parents=True, exist_ok=True)
        for rev in revs:
            (self.versions / f"{rev.id}_rev.py").write_text(rev.source())
            self.revisions.append(rev)
        return self

    def with_env_py(self, source: str | None = None) -> Project:
        example = REPO / "examples" / "shop" / "migrations" / "env.py"
        (self.scripts / "env.py").write_text(source or example.read_text())
        return self

    def with_ini(self, url: str | None = None, extra: str = "") -> Path:
        ini = self.root / "alembic.ini"
        lines = ["[alembic]", "script_location = %(here)s/migrations", "path_separator = os"]
        if url:
            lines.append(f"sqlalchemy.url = {url}")
        ini.write_text("\n".join(lines) + "\n" + extra)
        return ini

    def args(self) -> list[str]:
        return ["--scripts", str(self.scripts)]


def make_project(root: Path, revs: Sequence[Rev] = ()) -> Project:
    project = Project(root)
    project.versions.mkdir(parents=True, exist_ok=True)
    return project.add(*revs)


def revisor_process(
    *args: str, env: dict[str, str] | None = None, **kw: Any
) -> subprocess.Popen[str]:
    """The real ``revisor`` command in its own process."""
    return subprocess.Popen(
        [sys.executable, "-m", "revisor", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        **kw,
    )
