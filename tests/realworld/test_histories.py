"""Revisor on Alembic histories that open-source projects ship in their PyPI packages.

For each history in :data:`tests.realworld.histories.HISTORIES`, on each backend
its project supports:

1. Revisor's ``upgrade head`` on an empty database builds the same schema as
   the project's own migration command (hermetic; with ``--metadata`` where
   env.py gives a naming convention; with ``--env-py`` where env.py can run on
   Revisor's connection);
2. ``downgrade base`` then ``upgrade head`` again ends at the same schema, and
   ``pass`` downgrades run as no-ops;
3. six runners started together on an empty database: one migrates, the others
   find nothing to do, one run is recorded, same schema (Prefect on PostgreSQL, with
   ``CREATE INDEX CONCURRENTLY``, and Optuna on SQLite: see README.md).

A difference that is known is a strict xfail whose reason is its exact cause
(``History.known``), so the test turns red the day the cause goes away.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.realworld.conftest import PROCESS_TIMEOUT_SECONDS, Bench, References, Run
from tests.realworld.histories import HISTORIES, History
from tests.realworld.schema import difference, schema_of
from tests.support.graphs import quick_matches
from tests.support.projects import REPO

pytestmark = [pytest.mark.realworld, pytest.mark.slow]

RUNNERS = 6


def _case(history: History, backend: str, test: str, *extra: str) -> object:
    marks: list[pytest.MarkDecorator] = []
    if backend == "postgresql":
        marks.append(pytest.mark.postgres)
    if backend == "mariadb":
        marks.append(pytest.mark.mariadb)
    reason = history.known.get((test, backend))
    if reason:
        marks.append(pytest.mark.xfail(strict=True, reason=reason))
    ident = "-".join((history.name, backend, *extra))
    return pytest.param(history, backend, *extra, marks=marks, id=ident)


def _cases(test: str) -> list[object]:
    return [_case(h, b, test) for h in HISTORIES for b in h.drivers]


MODE_CASES = [_case(h, b, mode, mode) for h in HISTORIES for b in h.drivers for mode in h.modes()]


def _explain(expected: list[str], got: list[str], what: str, reference: str) -> str:
    return f"{what} differs from {reference}:\n" + difference(
        expected, got, names=(reference, what)
    )


@pytest.mark.parametrize(("history", "backend", "mode"), MODE_CASES)
def test_upgrade_head_builds_the_schema_the_projects_own_tool_builds(
    history: History, backend: str, mode: str, bench: Bench, references: References
) -> None:
    own = references.own_schema(bench, history, backend)
    upgraded = references.upgrade(bench, history, backend, mode)
    assert upgraded.run.code == 0, upgraded.run.explain()
    result = upgraded.run.result
    assert result["from"] == [] and result["direction"] == "upgrade"
    applied = result.get("appliedTotal", len(result["applied"]))
    assert applied == len(_up_to(history, backend)), "every revision ran once"
    assert upgraded.schema == own, _explain(
        own, upgraded.schema, f"revisor ({mode})", "the project's own tool"
    )


@pytest.mark.parametrize(
    ("history", "backend"),
    [_case(h, b, "warns") for h in HISTORIES if h.metadata for b in h.drivers],
)
def test_a_hermetic_run_says_that_env_py_would_shape_the_schema(
    history: History, backend: str, bench: Bench, references: References
) -> None:
    """Where env.py names constraints, a run without it says so, and what to pass."""
    upgraded = references.upgrade(bench, history, backend, "hermetic")
    warnings = " ".join(upgraded.run.result.get("warnings", []))
    assert "was not run (a hermetic run)" in warnings, upgraded.run.explain()
    assert "naming convention" in warnings and "--metadata" in warnings


@pytest.mark.parametrize(("history", "backend"), _cases("down-and-back"))
def test_down_and_back_up_ends_at_the_same_schema(
    history: History, backend: str, bench: Bench, references: References
) -> None:
    """On the database the single-runner upgrade built (the reference keeps its schema)."""
    mode = history.user_mode
    first = references.upgrade(bench, history, backend, mode)
    assert first.run.code == 0, first.run.explain()
    url = first.url

    down = bench.revisor(history, backend, mode, url, "downgrade", history.bottom(backend))
    assert down.code == 0, down.explain()
    undone, heads = _undone_by_downgrade(history, backend, history.bottom(backend))
    assert set(down.result["to"]) == heads and _versions(url) == heads
    assert down.result.get("appliedTotal", len(down.result["applied"])) == len(undone)
    for revision in sorted(undone & set(_pass_downgrades(history, backend))):
        line = next((x for x in down.err.splitlines() if f"(down) {revision} " in x), "")
        assert "(no-op)" in line, f"{revision}'s downgrade() is only pass: {line!r}"

    up = bench.revisor(history, backend, mode, url, "upgrade", history.top(backend))
    assert up.code == 0, up.explain()
    again = schema_of(url)
    assert again == first.schema, _explain(
        first.schema, again, "down and back up", f"the first upgrade ({mode})"
    )


@pytest.mark.parametrize(
    ("history", "backend"),
    [_case(h, b, "concurrency") for h in HISTORIES for b in h.drivers if b in h.concurrency],
)
def test_six_runners_on_an_empty_database_one_migrates_the_others_find_it_done(
    history: History, backend: str, bench: Bench, references: References, tmp_path: Path
) -> None:
    mode = history.user_mode
    single = references.upgrade(bench, history, backend, mode)
    assert single.run.code == 0, single.run.explain()
    url = bench.database(history, backend)
    installed = history.installed()
    home = bench.home()
    args = history.revisor_args(installed, backend, mode, home)
    argv = [*installed.revisor(), *args.argv, "--database-url", url, "--output", "json"]
    argv += ["upgrade", history.top(backend), "--lock-timeout", str(PROCESS_TIMEOUT_SECONDS)]
    env = installed.revisor_env(bench.environment(history, url, home))
    logs = [tmp_path / f"runner-{i}.err" for i in range(RUNNERS)]
    procs = []
    started = time.monotonic()
    for log in logs:
        with log.open("w") as stderr:
            procs.append(
                subprocess.Popen(
                    argv,
                    stdout=subprocess.PIPE,
                    stderr=stderr,
                    text=True,
                    env=env,
                    cwd=args.cwd or home,
                )
            )
    runs: list[Run] = []
    try:
        for proc, log in zip(procs, logs, strict=True):
            out, _ = proc.communicate(timeout=PROCESS_TIMEOUT_SECONDS)
            runs.append(Run(argv, proc.returncode, out, log.read_text(), 0.0))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    elapsed = time.monotonic() - started

    assert [r.code for r in runs] == [0] * RUNNERS, "\n\n".join(r.explain() for r in runs)
    applied = [r.result.get("appliedTotal", len(r.result["applied"])) for r in runs]
    assert sorted(applied) == [0] * (RUNNERS - 1) + [len(_up_to(history, backend))], applied
    for r in runs:
        if not r.result["applied"]:
            assert "nothing to do" in r.err, r.explain()
    assert _runs_with_steps(url) == 1
    schema = schema_of(url)
    assert schema == single.schema, _explain(
        single.schema, schema, f"{RUNNERS} runners", f"one runner ({mode})"
    )
    assert elapsed < PROCESS_TIMEOUT_SECONDS


# --- helpers ----------------------------------------------------------------------------------


def _revision_files(history: History, backend: str) -> list[Path]:
    return sorted(history.revisions_dir(history.installed(), backend).rglob("*.py"))


def _constants(tree: ast.Module) -> dict[str, Any]:
    """A revision file's module-level ``revision``, ``down_revision`` and ``depends_on``."""
    found: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        for target in targets:
            if isinstance(target, ast.Name) and target.id in GRAPH_NAMES:
                found[target.id] = ast.literal_eval(value)
    return found


GRAPH_NAMES = ("revision", "down_revision", "depends_on")


def _revisions(history: History, backend: str) -> dict[str, ast.Module]:
    out: dict[str, ast.Module] = {}
    for path in _revision_files(history, backend):
        tree = ast.parse(path.read_text())
        revision = _constants(tree).get("revision")
        if isinstance(revision, str):
            out[revision] = tree
    return out


def _parents(history: History, backend: str) -> dict[str, list[str]]:
    """Each revision's down_revision(s) and depends_on, from the files."""
    parents: dict[str, list[str]] = {}
    for revision, tree in _revisions(history, backend).items():
        found: list[str] = []
        constants = _constants(tree)
        for name in ("down_revision", "depends_on"):
            value = constants.get(name)
            found += [value] if isinstance(value, str) else list(value or ())
        parents[revision] = found
    return parents


def _up_to(history: History, backend: str) -> set[str]:
    """The revisions an upgrade to ``history.top(backend)`` applies (all of them for head)."""
    parents = _parents(history, backend)
    top = history.top(backend)
    if top == "head":
        return set(parents)
    found: set[str] = set()
    todo = [top]
    while todo:
        revision = todo.pop()
        if revision not in found:
            found.add(revision)
            todo += parents[revision]
    return found


def _undone_by_downgrade(history: History, backend: str, target: str) -> tuple[set[str], set[str]]:
    """What ``downgrade target`` undoes (target's descendants), and the heads it leaves,
    from the database at ``history.top(backend)``."""
    applied = _up_to(history, backend)
    parents = {r: ups for r, ups in _parents(history, backend).items() if r in applied}
    children: dict[str, set[str]] = {r: set() for r in parents}
    for revision, ups in parents.items():
        for parent in ups:
            children[parent].add(revision)
    if target == "base":
        return set(parents), set()
    undone: set[str] = set()
    todo = [target]
    while todo:
        for child in children[todo.pop()] - undone:
            undone.add(child)
            todo.append(child)
    left = set(parents) - undone
    return undone, {r for r in left if not children[r] & left}


def _revision_count(history: History, backend: str) -> int:
    return len(_revisions(history, backend))


def _only_pass(body: list[ast.stmt]) -> bool:
    """A function body of nothing but a docstring and ``pass`` (what Alembic runs as a no-op)."""
    rest = [
        s
        for s in body
        if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))
        and not isinstance(s, ast.Pass)
    ]
    return not rest


def _pass_downgrades(history: History, backend: str) -> list[str]:
    """Revisions whose downgrade() is only ``pass`` while their upgrade() does something."""
    found = []
    for revision, tree in _revisions(history, backend).items():
        bodies = {
            n.name: n.body
            for n in tree.body
            if isinstance(n, ast.FunctionDef) and n.name in ("upgrade", "downgrade")
        }
        down, up = bodies.get("downgrade"), bodies.get("upgrade", [])
        if down is not None and _only_pass(down) and not _only_pass(up):
            found.append(revision)
    return found


def _engine(url: str) -> sa.Engine:
    sync = sa.engine.make_url(url)
    driver = {"sqlite": "sqlite", "postgresql": "postgresql+psycopg", "mysql": "mysql+pymysql"}[
        sync.get_backend_name()
    ]
    return sa.create_engine(sync.set(drivername=driver), poolclass=sa.pool.NullPool)


def _versions(url: str) -> set[str]:
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table("alembic_version"):
                return set()
            return {r[0] for r in conn.execute(sa.text("SELECT version_num FROM alembic_version"))}
    finally:
        engine.dispose()


def _runs_with_steps(url: str) -> int:
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT COUNT(DISTINCT run_id) FROM revisor_history WHERE kind = 'step' "
                    "AND run_id IN (SELECT run_id FROM revisor_history WHERE kind = 'run')"
                )
            )
            return int(rows.scalar_one())
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("history", "backend"), [_case(h, b, "graph") for h in HISTORIES for b in h.drivers]
)
def test_the_graph_read_from_headers_is_alembics(
    history: History, backend: str, bench: Bench
) -> None:
    """Revisor's header-read revision graph equals the one Alembic builds by importing.

    Run in the history's own interpreter (its revision files import its
    package): ``python -m tests.support.graphs`` builds both.
    """
    installed = history.installed()
    home = bench.home()
    url = f"sqlite:///{home / 'unused.db'}"
    scripts = history.scripts_dir(installed, backend)
    versions = (
        [str(history.revisions_dir(installed, backend))] if backend in history.versions else []
    )
    env = bench.environment(history, url, home)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "engine")])
    done = subprocess.run(
        [installed.python, "-m", "tests.support.graphs", str(scripts), *versions],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=PROCESS_TIMEOUT_SECONDS,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    graphs = json.loads(done.stdout.strip().splitlines()[-1])
    assert graphs["revisor"] == graphs["alembic"]
    # The quick graph (a run with nothing to do, without Alembic) answers for these
    # histories, and with Alembic's revisions and heads.
    assert graphs["quick"] is not None
    assert quick_matches(graphs), graphs["quick"]
    assert len(graphs["revisor"]["revisions"]) == _revision_count(history, backend)
    # Read, not imported: a history's files say who they are in plain literals.
    assert graphs["imported"] == 0, graphs["imported"]
