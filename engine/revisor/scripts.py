"""The user's Alembic script directory: loading it, checking it, planning over it.

Everything here works without a database, so bad scripts (syntax errors,
cycles, unknown targets, missing downgrades) are reported before a
connection is opened and the database stays untouched.

Alembic's own error messages for targets and revision graphs are good
("Multiple head revisions are present...", "Can't locate revision...") and
are passed through verbatim; only their type changes to :class:`BadInput`.

Revision files are placed in the graph from their headers
(:mod:`revisor.revision_headers`), not by importing them as Alembic does: a
module is imported only when a plan includes it, before its first step runs,
so a run at head imports none of them. A file whose header is not plain
literals is imported at load, as Alembic would, so the graph is Alembic's
either way.

This is the one module that uses Alembic's private API (``_upgrade_revs``,
``_downgrade_revs``, ``_stamp_revs``, ``_format_down_revision``,
``_version_locations``, ``Script._list_py_dir``, ``Script._from_path``,
``_only_source_rev_file``, ``HeadMaintainer``, stable for years): an Alembic
release that changes them changes this file only.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import os
import traceback
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import sqlalchemy as sa
from alembic.config import Config
from alembic.runtime import migration
from alembic.runtime.migration import HeadMaintainer, MigrationContext, RevisionStep
from alembic.script import Script, ScriptDirectory
from alembic.script.base import _only_source_rev_file
from alembic.script.revision import Revision, RevisionError, RevisionMap
from alembic.util import CommandError, load_python_file, to_tuple
from alembic.util import warn as alembic_warn

from revisor import contract
from revisor.contract import Reason
from revisor.errors import BadInput
from revisor.header_graph import header_of_file
from revisor.ini_file import default_config_file
from revisor.records import plan_hash
from revisor.revision_headers import Header
from revisor.script_location import ScriptLocation

__all__ = ["ScriptLocation"]  # re-exported: where the scripts are, named before loading

Direction = Literal["upgrade", "downgrade", "none"]


@contextlib.contextmanager
def script_errors(
    dirs: Sequence[str] = (),
    *,
    reason: str = Reason.INVALID_SCRIPTS,
    what: str = "a revision script",
) -> Iterator[None]:
    """Turn errors raised by loading or walking scripts into :class:`BadInput`.

    ``reason`` is ``InvalidTarget`` where the user's target is being resolved;
    ``what`` names the code that was running (``env.py`` for the project's own).
    """
    try:
        yield
    except BadInput:
        raise
    except SyntaxError as exc:
        raise BadInput(
            f"{exc.filename}:{exc.lineno}: syntax error in {what}: {exc.msg}",
            hint="fix the script; nothing was run",
            reason=Reason.INVALID_SCRIPTS,
        ) from None
    except (CommandError, RevisionError) as exc:
        # Alembic rewraps some precise errors ("Multiple revisions start with
        # 'abc1'...") into a vaguer one and chains the original: keep both.
        message, cause = str(exc), exc.__cause__
        if isinstance(cause, RevisionError) and str(cause) not in message:
            message = f"{message}: {cause}"
        raise BadInput(message, reason=reason) from None
    except AttributeError as exc:
        module = getattr(exc, "obj", None)
        where = getattr(module, "__file__", None)
        if where and exc.name in ("upgrade", "downgrade"):
            raise BadInput(
                f"{where}: the revision script has no {exc.name}() function",
                hint=f"add def {exc.name}() -> None to it; nothing was run",
                reason=Reason.NOT_REVERSIBLE if exc.name == "downgrade" else "InvalidScripts",
            ) from None
        raise BadInput(
            f"{_script_frame(exc, dirs)}AttributeError while loading {what}: {exc}",
            hint="fix the script; nothing was run",
            reason=Reason.INVALID_SCRIPTS,
        ) from None
    except Exception as exc:
        raise BadInput(
            f"{_script_frame(exc, dirs)}{type(exc).__name__} while loading {what}: {exc}",
            hint="fix the script; nothing was run",
            reason=Reason.INVALID_SCRIPTS,
        ) from None


def _script_frame(exc: BaseException, dirs: Sequence[str]) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    resolved = [str(Path(d).resolve()) for d in dirs]
    for frame in reversed(frames):
        path = str(Path(frame.filename).resolve())
        if not resolved or any(path.startswith(d) for d in resolved):
            return f"{frame.filename}:{frame.lineno}: "
    return ""


class MissingRevisions(BadInput):
    """Revision files name a down revision whose file is not there.

    Alembic cannot build its graph then (it warns, then fails with a bare
    ``KeyError``). The error keeps the files that did load, so ``verify`` can
    still say which *applied* revisions lost their file.
    """

    def __init__(
        self, scripts: Scripts, *, found: Mapping[str, Script], missing: Mapping[str, list[str]]
    ) -> None:
        described = "; ".join(
            ", ".join(f"{r} ({Path(found[r].path).name})" for r in sorted(by))
            + f" revise{'s' if len(by) == 1 else ''} {rev}, which has no script file"
            for rev, by in sorted(missing.items())
        )
        super().__init__(
            described,
            hint="restore the missing file(s), or name every version directory "
            "(--version-locations); nothing was run",
            reason=Reason.INVALID_SCRIPTS,
        )
        self.scripts = scripts
        self.found = dict(found)
        self.missing = {rev: list(by) for rev, by in missing.items()}


@contextlib.contextmanager
def _missing_revisions_reported(scripts: Scripts) -> Iterator[None]:
    """Turn Alembic's warning + ``KeyError`` for a missing down revision into one error."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Revision .+ referenced from .+ is not present")
        try:
            yield
        except KeyError:
            found = {script.revision: script for script in scripts.loaded()}
            missing: dict[str, list[str]] = {}
            for script in found.values():
                for down in to_tuple(script.down_revision, default=()):
                    if down not in found:
                        missing.setdefault(down, []).append(script.revision)
            if not missing:
                raise
            raise MissingRevisions(scripts, found=found, missing=missing) from None


class Scripts:
    """A loaded script directory with the few questions Revisor asks of it."""

    def __init__(
        self, config: Config, directory: ScriptDirectory, *, skip: Path | None = None
    ) -> None:
        self.config = config
        self.directory = directory
        self._skip = skip
        self._checksums: dict[str, str] = {}

    def loaded(self) -> Iterator[Script]:
        """Every revision file, as :class:`HeaderScript` where its header can be read."""
        return _load_revisions(self.directory, skip=self._skip)

    @property
    def dirs(self) -> list[str]:
        return [self.directory.dir, *self.directory.version_locations]

    @property
    def env_py(self) -> Path:
        return Path(self.directory.dir, "env.py")

    @property
    def has_env_py(self) -> bool:
        return self.env_py.is_file()

    def revision(self, rev: str) -> Script:
        with script_errors(self.dirs):
            script = self.directory.get_revision(rev)
        if script is None:
            raise BadInput(f"Can't locate revision identified by '{rev}'")
        return script

    def heads(self) -> tuple[str, ...]:
        with script_errors(self.dirs):
            return tuple(self.directory.get_heads())

    def upgrade_steps(self, target: str, heads: Sequence[str]) -> tuple[RevisionStep, ...]:
        """Alembic's steps from ``heads`` up to ``target`` (what ``alembic upgrade`` runs)."""
        with script_errors(self.dirs, reason=Reason.INVALID_TARGET):
            return tuple(self.directory._upgrade_revs(target, tuple(heads)))  # type: ignore[arg-type]

    def downgrade_steps(self, target: str, heads: Sequence[str]) -> tuple[RevisionStep, ...]:
        """Alembic's steps from ``heads`` down to ``target`` (what ``alembic downgrade`` runs)."""
        with script_errors(self.dirs, reason=Reason.INVALID_TARGET):
            return tuple(self.directory._downgrade_revs(target, tuple(heads)))  # type: ignore[arg-type]

    def stamp_steps(self, target: str, heads: Sequence[str]) -> tuple[Any, ...]:
        """Alembic's version-table changes that set ``heads`` to ``target`` (``alembic stamp``)."""
        with script_errors(self.dirs):
            return tuple(self.directory._stamp_revs(target, tuple(heads)))

    def checksum(self, rev: str) -> str:
        """sha256 of the revision's file as it is now."""
        if rev not in self._checksums:
            self._checksums[rev] = file_checksum(self.revision(rev).path)
        return self._checksums[rev]


def file_checksum(path: str | Path) -> str:
    """sha256 of a revision file, as ``revisor_history`` records it."""
    # open() rather than Path.read_bytes(): every planned file is hashed
    # before the first step, and pathlib's extra work shows on long chains.
    with open(path, "rb") as script:  # noqa: PTH123
        return hashlib.sha256(script.read()).hexdigest()


class HeaderScript(Script):
    """A revision placed in the graph from its file's header; its module is imported on use.

    Everything Alembic asks of a :class:`Script` while planning (its ids, its
    docstring) comes from the header; ``module`` imports the file the first
    time a step needs it (:func:`import_planned`), and checks that the module
    says what its header said.
    """

    def __init__(self, path: Path, header: Header) -> None:
        self.path = str(path)
        self.header = header
        self._module: ModuleType | None = None
        Revision.__init__(
            self,
            header.revision,
            header.down_revision,  # type: ignore[arg-type]  # a list, as a module may give
            branch_labels=to_tuple(header.branch_labels, default=()),
            dependencies=to_tuple(header.depends_on, default=()),
        )

    @property
    def module(self) -> ModuleType:
        if self._module is None:
            path = Path(self.path)
            module = load_python_file(str(path.parent), path.name)
            stated = {name: getattr(module, name, None) for name in _IDENTITY}
            read = {name: getattr(self.header, name) for name in _IDENTITY}
            if stated != read:
                raise BadInput(
                    f"{self.path}: importing the revision gives {_identity_text(stated)}, "
                    f"but its source reads {_identity_text(read)}",
                    hint="assign revision, down_revision, branch_labels and depends_on as "
                    "plain literals, and let nothing else change them at import; nothing was run",
                    reason=Reason.INVALID_SCRIPTS,
                )
            self._module = module
        return self._module

    @module.setter
    def module(self, value: ModuleType) -> None:
        self._module = value

    @property
    def longdoc(self) -> str:
        doc = self.header.doc
        return doc.strip() if doc else ""


#: What a revision's module must agree with its header on.
_IDENTITY = ("revision", "down_revision", "branch_labels", "depends_on")


def _identity_text(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{name}={values[name]!r}" for name in _IDENTITY)


def _load_revisions(directory: ScriptDirectory, *, skip: Path | None) -> Iterator[Script]:
    """Alembic's ``ScriptDirectory._load_revisions``, reading headers instead of importing.

    Same files, same order, same duplicate warning; ``skip`` is a flat
    directory's env.py, which is the environment, not a revision (importing
    it as one would run it outside any migration).
    """
    seen: set[Path] = set()
    real_dirs: dict[Path, str] = {}
    for location in directory._version_locations:
        if not location.exists():
            continue
        for file_path in Script._list_py_dir(directory, location):
            in_real_dir = _in_real_dir(file_path, real_dirs)
            if in_real_dir == skip:
                # By the name it is listed under: in a mounted ConfigMap every file
                # is a symlink into a hidden ..data directory, env.py included.
                continue
            real_path = Path(os.path.realpath(file_path)) if file_path.is_symlink() else in_real_dir
            if real_path in seen:
                alembic_warn(
                    f"File {real_path} loaded twice! ignoring. "
                    "Please ensure version_locations is unique."
                )
                continue
            seen.add(real_path)
            script = _script_at(directory, real_path)
            if script is not None:
                yield script


def _in_real_dir(file_path: Path, real_dirs: dict[Path, str]) -> Path:
    """``file_path`` in its directory's real path: with the file's own symlink, what
    ``file_path.resolve()`` gives Alembic, at a fraction of its cost.

    ``os.path.realpath`` checks every component of every path; a directory holds
    thousands of revisions, so each directory is resolved once.
    """
    parent = file_path.parent
    real_dir = real_dirs.get(parent)
    if real_dir is None:
        real_dir = real_dirs[parent] = os.path.realpath(parent)
    return Path(real_dir, file_path.name)


def _script_at(directory: ScriptDirectory, path: Path) -> Script | None:
    """The revision in ``path``: from its header when it can be read, else as Alembic imports it."""
    if not directory.sourceless:
        if not _only_source_rev_file.match(path.name):
            return None
        header = header_of_file(path)
        if header is not None:
            return HeaderScript(path, header)
    return Script._from_path(directory, path)


class _VersionWrites(HeadMaintainer):
    """Alembic's version table bookkeeping, with one compiled statement per kind of write.

    Alembic writes each revision id into its statement as a literal, so
    SQLAlchemy compiles a new INSERT/UPDATE/DELETE for every step: on a
    thousand-revision run that is a third of a second of CPU
    (``bench/upgrade_vs_alembic.py``). The same statements with bound
    parameters compile once. Everything else is Alembic's: the same rows,
    the same checks of how many rows a write matched, and its own literal
    statements when it writes SQL instead of running it (offline mode).
    """

    def __init__(self, context: MigrationContext, heads: Any) -> None:
        super().__init__(context, heads)
        table = context._version
        version = table.c.version_num
        self._insert = table.insert().values(version_num=sa.bindparam("to_"))
        self._delete = table.delete().where(version == sa.bindparam("from_"))
        self._update = (
            table.update()
            .values(version_num=sa.bindparam("to_"))
            .where(version == sa.bindparam("from_"))
        )

    def _insert_version(self, version: str) -> None:
        if self.context.as_sql:
            super()._insert_version(version)
            return
        assert version not in self.heads
        self.heads.add(version)
        self.context.impl._exec(self._insert, params={"to_": version})

    def _delete_version(self, version: str) -> None:
        if self.context.as_sql:
            super()._delete_version(version)
            return
        self.heads.remove(version)
        found = self.context.impl._exec(self._delete, params={"from_": version})
        self._one_row(found, f"deleting '{version}'")

    def _update_version(self, from_: str, to_: str) -> None:
        if self.context.as_sql:
            super()._update_version(from_, to_)
            return
        assert to_ not in self.heads
        self.heads.remove(from_)
        self.heads.add(to_)
        found = self.context.impl._exec(self._update, params={"from_": from_, "to_": to_})
        self._one_row(found, f"updating '{from_}' to '{to_}'")

    def _one_row(self, found: Any, what: str) -> None:
        """Alembic's check, in Alembic's words: a write must match exactly one row."""
        if (
            self.context.dialect.supports_sane_rowcount
            and found is not None
            and found.rowcount != 1
        ):
            raise CommandError(
                f"Online migration expected to match one row when {what} in "
                f"'{self.context.version_table}'; {found.rowcount} found"
            )


@contextlib.contextmanager
def compiled_version_writes() -> Iterator[None]:
    """Alembic's migration loop, within, writes the version table with :class:`_VersionWrites`."""
    original = migration.HeadMaintainer
    migration.HeadMaintainer = _VersionWrites  # type: ignore[misc]
    try:
        yield
    finally:
        migration.HeadMaintainer = original  # type: ignore[misc]


class HeadsInMemory(HeadMaintainer):
    """Alembic's own bookkeeping of the version table, step by step, kept in memory."""

    def __init__(self, heads: Sequence[str]) -> None:
        self.heads = set(heads)

    def _insert_version(self, version: str) -> None:
        self.heads.add(version)

    def _delete_version(self, version: str) -> None:
        self.heads.discard(version)

    def _update_version(self, from_: str, to_: str) -> None:
        self.heads.discard(from_)
        self.heads.add(to_)


def import_planned(scripts: Scripts, steps: Sequence[RevisionStep]) -> None:
    """Import the modules of ``steps`` now, before the first runs.

    A syntax error or a failing import in a planned file is then bad input
    reported before anything is written, as when Alembic imports every file
    at load, and not a failure halfway through a run.
    """
    with script_errors(scripts.dirs):
        for step in steps:
            step.revision.module  # noqa: B018


def down_revisions_text(script: Script) -> str:
    """The revisions ``script`` revises, comma-separated, as Alembic's history shows them."""
    return ",".join(script._format_down_revision().split(", "))


def load_scripts(options: ScriptLocation) -> Scripts:
    """Build the Alembic ``Config`` and load every revision, or raise :class:`BadInput`.

    With neither ``--config`` nor ``--scripts``, the ini file Alembic itself
    would read is used (:func:`default_config_file`).
    """
    config_file = options.config_file
    if config_file is None and options.scripts_dir is None:
        config_file = default_config_file()
    if config_file is not None and not Path(config_file).is_file():
        raise BadInput(
            f"--config {config_file}: no such file",
            hint="point --config at your alembic.ini, or use --scripts DIR",
        )
    config = Config(config_file, ini_section=options.ini_section)
    if options.scripts_dir is not None:
        scripts_dir = Path(options.scripts_dir)
        if not scripts_dir.is_dir():
            raise BadInput(
                f"--scripts {options.scripts_dir}: no such directory",
                hint="point --scripts at your Alembic script directory (the one with versions/)",
            )
        config.set_main_option("script_location", str(scripts_dir))
        if not (scripts_dir / "versions").is_dir() and not options.version_locations:
            # A flat directory of revision files, as a mounted ConfigMap gives.
            config.set_main_option("version_locations", str(scripts_dir))
            config.set_main_option("path_separator", "os")
    if options.version_locations:
        config.set_main_option("version_locations", " ".join(options.version_locations))
        config.set_main_option("path_separator", "space")
    if not config.get_main_option("script_location"):
        where = f"{config_file} has no script_location" if config_file else "no alembic.ini here"
        raise BadInput(
            f"no script directory given ({where})",
            hint="pass --scripts DIR, or --config alembic.ini with script_location set",
        )
    with script_errors():
        directory = ScriptDirectory.from_config(config)
    home = Path(directory.dir).resolve()
    flat = home in {Path(d).resolve() for d in directory.version_locations}
    scripts = Scripts(config, directory, skip=home / "env.py" if flat else None)
    directory.revision_map = RevisionMap(scripts.loaded)
    with script_errors(scripts.dirs), _missing_revisions_reported(scripts):
        # Reads every header (imports the files it cannot read); surfaces cycles,
        # missing revisions and unreadable headers now.
        directory.revision_map.heads  # noqa: B018
        for _ in directory.walk_revisions():
            pass
    return scripts


@dataclass(frozen=True)
class Plan:
    """The steps that move the database from ``from_heads`` to ``target``."""

    direction: Direction
    target: str
    from_heads: tuple[str, ...]
    steps: tuple[RevisionStep, ...]

    @property
    def revisions(self) -> list[str]:
        return [step.revision.revision for step in self.steps]

    def contract_steps(self) -> tuple[contract.Step, ...]:
        return tuple(contract_step(step) for step in self.steps)

    def hash(self, scripts: Scripts) -> str:
        """Changes when the start, the target, the steps or any step's file changes."""
        return plan_hash(
            self.target,
            self.from_heads,
            [
                (
                    "upgrade" if s.is_upgrade else "downgrade",
                    s.revision.revision,
                    scripts.checksum(s.revision.revision),
                )
                for s in self.steps
            ],
        )


def describe(script: Script) -> str:
    """The first line of a revision's docstring (its message)."""
    doc = script.doc  # a property that re-splits the docstring: read it once
    return doc.strip().splitlines()[0] if doc else ""


def contract_step(step: RevisionStep) -> contract.Step:
    """One of Alembic's steps as the contract (result, progress lines) describes it.

    A downgrade whose ``downgrade()`` is only ``pass`` is marked ``noop``
    (upgrades are not read: a long upgrade plan parses no source for it).
    """
    return contract.Step(
        revision=step.revision.revision,
        direction="upgrade" if step.is_upgrade else "downgrade",
        description=describe(step.revision),
        noop=not step.is_upgrade and downgrade_problem(step.revision) == "noop",
    )


def reversed_step(step: RevisionStep) -> RevisionStep:
    """The step that undoes ``step`` (a downgrade for an upgrade, and back)."""
    return RevisionStep(step.revision_map, step.revision, not step.is_upgrade)


def plan_upgrade(scripts: Scripts, target: str, heads: Sequence[str]) -> Plan:
    steps = scripts.upgrade_steps(target, heads)
    import_planned(scripts, steps)
    return Plan("upgrade" if steps else "none", target, tuple(heads), steps)


def plan_downgrade(scripts: Scripts, target: str, heads: Sequence[str]) -> Plan:
    steps = scripts.downgrade_steps(target, heads)
    import_planned(scripts, steps)
    return Plan("downgrade" if steps else "none", target, tuple(heads), steps)


def plan_apply(scripts: Scripts, target: str, heads: Sequence[str]) -> Plan:
    """Upgrade or downgrade, whichever reaches ``target`` from ``heads``."""
    if is_downgrade_target(scripts, target, heads):
        return plan_downgrade(scripts, target, heads)
    return plan_upgrade(scripts, target, heads)


def is_downgrade_target(scripts: Scripts, target: str, heads: Sequence[str]) -> bool:
    """True when ``target`` lies below the current heads (or is ``base`` / ``-N``)."""
    spec = target.split("@", 1)[-1]
    if target == "base" or spec.startswith("-"):
        return bool(heads)
    if spec in ("head", "heads") or spec.startswith("+") or not heads:
        return False
    with script_errors(scripts.dirs, reason=Reason.INVALID_TARGET):
        wanted = scripts.directory.revision_map.get_revisions(target)
        below = {
            s.revision
            for s in scripts.directory.revision_map.iterate_revisions(
                tuple(heads), "base", inclusive=True, assert_relative_length=False
            )
        }
    current = set(heads)
    ids = {w.revision for w in wanted if w is not None and not isinstance(w, str)}
    return bool(ids) and ids <= below and not ids <= current


#: Why a revision's ``downgrade()`` does not undo its ``upgrade()``: it has none,
#: it raises, or it is only ``pass`` (a no-op Alembic runs: the version moves,
#: the changes stay — data backfills, enum values PostgreSQL cannot drop).
DowngradeProblem = Literal["missing", "noop", "raises"]
#: The problems that stop a downgrade from running at all.
IRREVERSIBLE: frozenset[DowngradeProblem] = frozenset({"missing", "raises"})


def _function_body(tree: ast.Module, name: str) -> list[ast.stmt] | None:
    """The statements of module-level ``def name()``, docstring left out; None if absent."""
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return [
                stmt
                for stmt in node.body
                if not (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant))
            ]
    return None


def _is_empty(body: list[ast.stmt] | None) -> bool:
    return body is not None and all(isinstance(stmt, ast.Pass) for stmt in body)


def downgrade_problem(script: Script) -> DowngradeProblem | None:
    """Why ``script``'s downgrade does not undo it, read from its source; None if it does.

    A merge revision, empty both ways, is reversible: there is nothing to undo.
    """
    try:
        tree = ast.parse(Path(script.path).read_text())
    except (OSError, SyntaxError):
        return None
    down = _function_body(tree, "downgrade")
    if down is None:
        return None if callable(getattr(script.module, "downgrade", None)) else "missing"
    if _is_empty(down):
        return None if _is_empty(_function_body(tree, "upgrade")) else "noop"
    if isinstance(down[0], ast.Raise):
        return "raises"
    return None


def uses_autocommit(script: Script) -> bool:
    """Does the script open an ``autocommit_block()`` (which no transaction can undo)?"""
    try:
        tree = ast.parse(Path(script.path).read_text())
    except (OSError, SyntaxError):
        return False
    return any(
        isinstance(node, ast.Attribute) and node.attr == "autocommit_block"
        for node in ast.walk(tree)
    )


_WORDING: dict[DowngradeProblem, str] = {
    "missing": "has no downgrade()",
    "noop": "has an empty downgrade() (only pass)",
    "raises": "has a downgrade() that raises",
}


def reversal_problems(
    scripts: Scripts, revisions: Sequence[str], *, of: frozenset[DowngradeProblem]
) -> list[str]:
    """Human lines, one per revision in ``revisions`` whose downgrade problem is in ``of``."""
    out = []
    for rev in revisions:
        script = scripts.revision(rev)
        problem = downgrade_problem(script)
        if problem in of:
            out.append(f"{rev} ({describe(script) or Path(script.path).name}) {_WORDING[problem]}")
    return out


def problem_text(scripts: Scripts, rev: str, problem: DowngradeProblem) -> str:
    """``rev (its message) has no downgrade()``, as :func:`reversal_problems` words it."""
    script = scripts.revision(rev)
    return f"{rev} ({describe(script) or Path(script.path).name}) {_WORDING[problem]}"


#: ``context.configure()`` options that change what the revisions do to the
#: database (the rest concern autogenerate, output or the connection).
_SHAPING_OPTIONS = frozenset(
    {"version_table", "version_table_schema", "version_table_pk", "include_schemas",
     "render_as_batch", "transactional_ddl", "transaction_per_migration"}
)  # fmt: skip


def env_py_findings(path: Path) -> list[str]:
    """What an env.py does that a hermetic run (which does not run it) would not do.

    Read from its source: a ``target_metadata`` other than None (whose naming
    convention names constraints), ``configure()`` options that shape DDL,
    and SQL run on the connection (``SET search_path``, ``SET ROLE``).
    Alembic's stock env.py does none of these. Not findings, since a hermetic
    run does the same: ``transaction_per_migration`` (Revisor's own choice
    either way), ``render_as_batch`` (it changes how ``batch_alter_table``
    is carried out, not what the revisions build), and a ``version_table``
    that is Alembic's default, written out or held in a module constant.
    """
    from revisor.contract import DEFAULT_VERSION_TABLE

    try:
        tree = ast.parse(path.read_text())
    except (OSError, SyntaxError):
        return []
    constants = {
        target.id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
        for target in node.targets
        if isinstance(target, ast.Name)
    }

    def shapes(keyword: ast.keyword) -> bool:
        if keyword.arg in ("transaction_per_migration", "render_as_batch"):
            return False
        if keyword.arg == "version_table":
            value = keyword.value
            given = (
                value.value
                if isinstance(value, ast.Constant)
                else constants.get(value.id)
                if isinstance(value, ast.Name)
                else None
            )
            return given != DEFAULT_VERSION_TABLE
        return keyword.arg in _SHAPING_OPTIONS

    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "target_metadata" for t in node.targets
        ):
            if not (isinstance(node.value, ast.Constant) and node.value.value is None):
                found.append("sets target_metadata (its naming convention names constraints)")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr == "configure":
                options = sorted(str(k.arg) for k in node.keywords if shapes(k))
                found += [f"passes {option} to configure()" for option in options]
            elif node.func.attr in ("execute", "exec_driver_sql"):
                found.append("runs SQL on the connection (e.g. SET search_path or SET ROLE)")
    return list(dict.fromkeys(found))
