"""The revision graph read from headers is Alembic's, and only planned modules are imported.

Revisor places revision files in the graph from their headers
(``revisor.revision_headers``) and imports a module only when a plan needs
it. These tests hold that to Alembic: the same graph on every kind of history
(a chain, branches with labels, merges, ``depends_on``, lists and tuples,
annotated headers, multi-line values, headers below the functions, computed
headers that only an import can tell), a header that lies caught when its
module is imported, a broken planned file reported before anything runs, and
a run at head that imports no revision at all. The real-world histories get
the same comparison in tests/realworld/.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st
from revisor.errors import BadInput
from revisor.revision_headers import HEADER_NAMES, read_header
from revisor.scripts import HeaderScript, ScriptLocation, load_scripts, plan_upgrade

from tests.engine.conftest import Run
from tests.support.graphs import both, quick_matches
from tests.support.projects import REPO, Rev, chain, make_project, table

# -- the same graph as Alembic's --------------------------------------------------------------


def branched() -> list[Rev]:
    """A base, two labelled branches, a dependency across them, and a merge."""
    return [
        table("a", None, "aaaa00000001"),
        table("b1", "aaaa00000001", "bbbb00000001", branch_labels=("left",)),
        table("b2", "bbbb00000001", "bbbb00000002"),
        table("c1", "aaaa00000001", "cccc00000001", branch_labels=("right",)),
        table("c2", "cccc00000001", "cccc00000002", depends_on=("bbbb00000001",)),
        Rev(id="dddd00000001", down=("bbbb00000002", "cccc00000002"), message="merge"),
        table("e", "dddd00000001", "eeee00000001"),
        table("other", None, "ffff00000001", branch_labels=("other",)),
    ]


def write(versions: Path, name: str, source: str) -> None:
    (versions / name).write_text(textwrap.dedent(source).lstrip())


def odd_headers(versions: Path) -> None:
    """Headers as people write them, each a case of its own."""
    write(
        versions,
        "a1_annotated.py",
        '''
        """annotated, as alembic revision writes it

        Revision ID: 000000000a01
        """
        from typing import Sequence, Union

        revision: str = "000000000a01"
        down_revision: Union[str, Sequence[str], None] = None
        branch_labels: Union[str, Sequence[str], None] = "annotated"
        depends_on: Union[str, Sequence[str], None] = None


        def upgrade() -> None:
            pass


        def downgrade() -> None:
            pass
    ''',
    )
    write(
        versions,
        "a2_multiline.py",
        '''
        """multi-line tuple, a list of labels, no depends_on at all"""
        revision = '000000000a02'
        down_revision = (
            '000000000a01',
        )
        branch_labels = ['spare']

        def upgrade():
            pass

        def downgrade():
            pass
    ''',
    )
    write(
        versions,
        "a3_below.py",
        """
        def upgrade():
            pass


        def downgrade():
            pass


        revision = "000000000a03"
        down_revision = "000000000a02"
    """,
    )
    write(
        versions,
        "a4_computed.py",
        '''
        """a computed header: only importing it tells"""
        PARENT = "000000000a03"
        revision = "000000000a04"
        down_revision = PARENT

        def upgrade():
            pass

        def downgrade():
            pass
    ''',
    )
    write(
        versions,
        "a5_reassigned.py",
        '''
        """assigned twice: the second one counts"""
        revision = "000000000a05"
        down_revision = "000000000a01"


        def upgrade():
            pass


        def downgrade():
            pass


        down_revision = "000000000a04"
    ''',
    )
    write(
        versions,
        "a6_conditional.py",
        '''
        """set inside an if: only importing it tells"""
        import os

        revision = "000000000a06"
        if os.sep == "/":
            down_revision = "000000000a05"
        else:
            down_revision = "000000000a05"

        def upgrade():
            pass

        def downgrade():
            pass
    ''',
    )
    write(
        versions,
        "a7_star.py",
        """
        from os.path import *  # could define anything
        revision = "000000000a07"
        down_revision = "000000000a06"

        def upgrade():
            pass

        def downgrade():
            pass
    """,
    )
    (versions / "a8_docstring_trap.py").write_text(
        '"""A docstring that looks like a header:\n'
        'revision = "ffffffffffff"\n'
        "down_revision = None\n"
        '"""\n'
        'revision = "000000000a08"\n'
        'down_revision = "000000000a07"\n\n\n'
        "def upgrade():\n    pass\n\n\ndef downgrade():\n    pass\n"
    )
    write(versions, "README.txt", "not a revision\n")
    write(versions, "__init__.py", "")


@pytest.mark.parametrize(
    "history",
    ["shop", "chain", "branched", "odd"],
)
def test_the_graph_read_from_headers_is_alembics(history: str, tmp_path: Path) -> None:
    if history == "shop":
        scripts = REPO / "examples" / "shop" / "migrations"
    else:
        project = make_project(tmp_path)
        if history == "chain":
            project.add(*chain(30))
        elif history == "branched":
            project.add(*branched())
        else:
            odd_headers(project.versions)
        scripts = project.scripts
    graphs = both(scripts)
    assert graphs["revisor"] == graphs["alembic"]
    assert graphs["revisor"]["revisions"]
    assert quick_matches(graphs), graphs["quick"]
    if history == "odd":
        # The computed, the conditional and the star-importing file were imported;
        # the rest were read, the reassigned one and the docstring trap included.
        assert graphs["imported"] == 3, graphs
        assert graphs["header_read"] == 5, graphs
        assert graphs["quick"] is None  # not every header is plain: Alembic is asked
    else:
        assert graphs["imported"] == 0
        assert graphs["quick"] is not None


@pytest.mark.parametrize("layout", ["files", "configmap"])
def test_a_flat_directory_with_env_py_reads_the_revisions_and_leaves_env_py(
    layout: str, tmp_path: Path, revisor: Callable[..., Run]
) -> None:
    """A ConfigMap's flat directory: env.py beside the revisions is not a revision.

    ``configmap`` is how the kubelet mounts one: every key a symlink into a
    hidden ``..data`` directory (itself a symlink to a timestamped one).
    """
    flat = tmp_path / "flat"
    files = flat / "..2026_12_07_01_00_00.000000001" if layout == "configmap" else flat
    files.mkdir(parents=True)
    names = [f"{rev.id}_rev.py" for rev in chain(3)]
    for name, rev in zip(names, chain(3), strict=True):
        (files / name).write_text(rev.source())
    (files / "env.py").write_text("raise SystemExit('env.py must not be imported as a revision')\n")
    if layout == "configmap":
        (flat / "..data").symlink_to(files.name)
        for name in [*names, "env.py"]:
            (flat / name).symlink_to(Path("..data") / name)
    scripts = load_scripts(ScriptLocation(scripts_dir=str(flat)))
    assert scripts.heads() == (chain(3)[-1].id,)
    assert all(isinstance(s, HeaderScript) for s in scripts.loaded())
    url = f"sqlite:///{tmp_path / 'app.db'}"
    for _ in range(2):  # applied, then nothing to do
        done = revisor("--scripts", str(flat), "--database-url", url, "upgrade", "head")
        assert done.code == 0, done.err
        assert f"at {chain(3)[-1].id}" in done.out


# -- imported only when planned ---------------------------------------------------------------


def imports_marker(rev: Rev, marker: Path) -> Rev:
    """``rev``, whose module appends its id to ``marker`` when it is imported."""
    return Rev(
        id=rev.id,
        down=rev.down,
        message=rev.message,
        upgrade=rev.upgrade,
        downgrade=rev.downgrade,
        header=f"with open({str(marker)!r}, 'a') as _marker:\n    _marker.write({rev.id!r} + '\\n')\n",
    )


def imported(marker: Path) -> list[str]:
    return marker.read_text().split() if marker.exists() else []


def test_a_run_imports_only_the_revisions_it_runs(
    tmp_path: Path, revisor: Callable[..., Run]
) -> None:
    marker = tmp_path / "imported.txt"
    revs = [imports_marker(rev, marker) for rev in chain(6)]
    project = make_project(tmp_path, revs)
    url = f"sqlite:///{tmp_path / 'app.db'}"
    done = revisor(*project.args(), "--database-url", url, "upgrade", revs[3].id)
    assert done.code == 0, done.out + done.err
    assert imported(marker) == [rev.id for rev in revs[:4]]

    marker.unlink()
    done = revisor(*project.args(), "--database-url", url, "upgrade", revs[3].id)
    assert done.code == 0, done.out + done.err
    assert imported(marker) == []  # nothing to do: no revision imported

    done = revisor(*project.args(), "--database-url", url, "upgrade", "head")
    assert done.code == 0, done.out + done.err
    assert imported(marker) == [rev.id for rev in revs[4:]]


def test_every_planned_module_is_imported_before_the_first_step_runs(
    tmp_path: Path, revisor: Callable[..., Run]
) -> None:
    """A planned file that cannot be imported is bad input, and nothing is applied."""
    revs = chain(3)
    project = make_project(tmp_path, revs)
    path = project.versions / f"{revs[2].id}_rev.py"
    # Below the header, above the functions: the header is read, the import fails.
    path.write_text(
        path.read_text().replace("\n\ndef upgrade", "\nimport gone_for_good\n\n\ndef upgrade", 1)
    )
    url = f"sqlite:///{tmp_path / 'app.db'}"
    done = revisor(*project.args(), "--database-url", url, "upgrade", "head")
    assert done.code == 2, done.out + done.err
    assert f"{revs[2].id}_rev.py" in done.out + done.err
    assert "gone_for_good" in done.out + done.err
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        assert not sa.inspect(conn).has_table("alembic_version")
        assert not sa.inspect(conn).has_table("t1")
    engine.dispose()


def test_a_header_that_lies_is_caught_when_its_module_is_imported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = make_project(tmp_path, chain(2))
    header = 'revision = "0003t0000000"\ndown_revision = "0002t0000000"\n'
    functions = "\n\ndef upgrade():\n    pass\n\n\ndef downgrade():\n    pass\n"
    # globals() anywhere that runs at import: declined, imported at load as Alembic does.
    (project.versions / "zz_liar.py").write_text(
        header + functions + "\n\nclass _Sneak:\n    globals().update(down_revision=None)\n"
    )
    scripts = load_scripts(ScriptLocation(scripts_dir=str(project.scripts)))
    assert not isinstance(scripts.revision("0003t0000000"), HeaderScript)
    assert scripts.revision("0003t0000000").down_revision is None
    (project.versions / "zz_liar.py").unlink()

    # An imported helper that rewrites the importer's header: nothing in the file shows it.
    helpers = tmp_path / "helpers"
    helpers.mkdir()
    (helpers / "rewrites_its_importer.py").write_text(
        "import inspect\n"
        "for frame in inspect.stack():\n"
        "    if frame.frame.f_globals.get('revision') == '0003t0000000':\n"
        "        frame.frame.f_globals['down_revision'] = '0001t0000000'\n"
    )
    monkeypatch.syspath_prepend(str(helpers))
    (project.versions / "zz_sneaky.py").write_text(
        header + "import rewrites_its_importer  # noqa: F401\n" + functions
    )
    scripts = load_scripts(ScriptLocation(scripts_dir=str(project.scripts)))
    assert isinstance(scripts.revision("0003t0000000"), HeaderScript)
    with pytest.raises(BadInput) as caught:
        plan_upgrade(scripts, "head", ["0002t0000000"])
    assert "zz_sneaky.py" in str(caught.value)
    assert "down_revision='0001t0000000'" in str(caught.value)
    assert "nothing was run" in (caught.value.hint or "")


def test_a_syntax_error_below_the_header_is_reported_when_planned(
    tmp_path: Path, revisor: Callable[..., Run]
) -> None:
    revs = chain(2)
    project = make_project(tmp_path, revs)
    path = project.versions / f"{revs[1].id}_rev.py"
    path.write_text(path.read_text() + "\ndef broken(:\n")
    url = f"sqlite:///{tmp_path / 'app.db'}"
    done = revisor(*project.args(), "--database-url", url, "upgrade", "head")
    assert done.code == 2, done.out + done.err
    assert f"{revs[1].id}_rev.py" in done.out + done.err
    assert "syntax error" in done.out + done.err


# -- the reader against Python itself ---------------------------------------------------------

REVISION_ID = st.text("0123456789abcdef", min_size=4, max_size=12)
REVISION_LIST = st.one_of(
    st.none(),
    REVISION_ID,
    st.lists(REVISION_ID, min_size=1, max_size=3),
    st.lists(REVISION_ID, min_size=1, max_size=3).map(tuple),
)


@st.composite
def revision_sources(draw: st.DrawFn) -> str:
    """A revision file's source: the four names in any order, style and place."""
    values: dict[str, Any] = {
        "revision": draw(REVISION_ID),
        "down_revision": draw(REVISION_LIST),
    }
    for optional in ("branch_labels", "depends_on"):
        if draw(st.booleans()):
            values[optional] = draw(REVISION_LIST)
    lines = []
    names = draw(st.permutations(list(values)))
    for name in names:
        value = values[name]
        style = draw(st.sampled_from(["plain", "annotated", "computed", "twice", "multiline"]))
        if style == "annotated":
            lines.append(f"{name}: object = {value!r}")
        elif style == "computed":
            lines.append(f"{name} = ({value!r}) or {value!r}")
        elif style == "twice":
            lines.append(f"{name} = {draw(REVISION_LIST)!r}")
            lines.append(f"{name} = {value!r}")
        elif style == "multiline" and isinstance(value, (list, tuple)):
            inner = "".join(f"    {v!r},\n" for v in value)
            opening, closing = ("[", "]") if isinstance(value, list) else ("(", ")")
            lines.append(f"{name} = {opening}\n{inner}{closing}")
        else:
            lines.append(f"{name} = {value!r}")
    body = "def upgrade():\n    pass\n\n\ndef downgrade():\n    pass\n"
    split = draw(st.integers(0, len(lines)))
    docstring = draw(st.sampled_from(["", '"""a message\n\nRevision ID: x\n"""\n']))
    return (
        docstring
        + "import sqlalchemy as sa\n"
        + "\n".join(lines[:split])
        + "\n\n\n"
        + body
        + "\n\n"
        + "\n".join(lines[split:])
        + "\n"
    )


@settings(max_examples=300, deadline=None)
@given(revision_sources())
def test_a_header_read_is_what_importing_the_module_gives(source: str) -> None:
    """Either the reader declines, or it says exactly what running the source gives."""
    header = read_header(source)
    if header is None:
        return
    namespace: dict[str, Any] = {}
    exec(compile(source, "revision.py", "exec"), namespace)
    for name in HEADER_NAMES:
        assert getattr(header, name) == namespace.get(name), (name, source)
    assert header.doc == namespace.get("__doc__")


def test_the_usual_header_is_read_not_declined() -> None:
    """What `alembic revision` writes (annotated or not) is always read."""
    source = (REPO / "examples" / "shop" / "migrations" / "versions").glob("*.py")
    for path in source:
        assert read_header(path.read_text()) is not None, path


def test_symlinked_files_and_directories_resolve_to_the_paths_alembic_gives(
    tmp_path: Path,
) -> None:
    """A revision file that is a symlink, and the same directory listed twice (once through
    a symlink): each revision's path is the one Alembic's ``Path.resolve()`` gives, and the
    second listing is ignored with Alembic's warning."""
    project = make_project(tmp_path / "real")
    revs = chain(3)
    project.add(*revs[:2])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "third.py").write_text(revs[2].source())
    (project.versions / f"{revs[2].id}_rev.py").symlink_to(elsewhere / "third.py")
    (tmp_path / "linked").symlink_to(project.versions)
    locations = (str(project.versions), str(tmp_path / "linked"))
    with pytest.warns(UserWarning, match="loaded twice"):
        ours = load_scripts(
            ScriptLocation(scripts_dir=str(project.scripts), version_locations=locations)
        ).directory.revision_map
    with pytest.warns(UserWarning, match="loaded twice"):
        theirs = both(project.scripts, locations)
    assert theirs["revisor"] == theirs["alembic"]
    paths = {rev.id: ours.get_revision(rev.id).path for rev in revs}  # type: ignore[union-attr]
    assert paths[revs[2].id] == str((elsewhere / "third.py").resolve())
    assert paths[revs[0].id] == str(project.versions.resolve() / f"{revs[0].id}_rev.py")
