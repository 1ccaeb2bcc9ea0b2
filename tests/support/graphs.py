"""A script directory's revision graph, as Alembic builds it and as Revisor does.

Alembic imports every revision file; Revisor reads their headers and imports
only what it must (``revisor.scripts``). :func:`both` builds the two graphs of
one directory in a form that compares with ``==``: every revision's ids,
links (down revisions, next revisions, dependencies, branch labels), its
docstring, its file, and the graph's heads and bases. Beside them, the
quick graph a run with nothing to do answers from without Alembic
(``revisor.header_graph``): its revisions and heads, or None where it
declines.

Also a command, so that a history installed in a virtualenv of its own (whose
revision files import packages ours lacks) is compared there::

    python -m tests.support.graphs SCRIPTS_DIR [VERSION_LOCATION ...]

prints ``{"alembic": ..., "revisor": ..., "header_read": N, "imported": M}``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from alembic.config import Config
from alembic.script import Script, ScriptDirectory
from alembic.script.revision import RevisionMap
from revisor.header_graph import HeaderGraph, graph_of, read_graph
from revisor.scripts import HeaderScript, ScriptLocation, load_scripts


def describe_map(revision_map: RevisionMap) -> dict[str, Any]:
    """Everything Alembic's graph says, as plain data."""
    revisions: dict[str, Any] = {}
    for rev in revision_map.iterate_revisions("heads", "base", assert_relative_length=False):
        assert isinstance(rev, Script)
        revisions[rev.revision] = {
            "down_revision": rev.down_revision,
            "versioned_down": sorted(rev._versioned_down_revisions),
            "dependencies": rev.dependencies,
            "branch_labels": sorted(rev.branch_labels),
            "nextrev": sorted(rev.nextrev),
            "doc": rev.doc,
            "longdoc": rev.longdoc,
            "path": str(Path(rev.path).resolve()),
        }
    return {
        "revisions": revisions,
        "heads": sorted(revision_map.heads),
        "bases": sorted(revision_map.bases),
    }


def alembic_graph(scripts_dir: Path, version_locations: Sequence[str] = ()) -> dict[str, Any]:
    config = Config()
    config.set_main_option("script_location", str(scripts_dir))
    if version_locations:
        config.set_main_option("version_locations", " ".join(version_locations))
        config.set_main_option("path_separator", "space")
    return describe_map(ScriptDirectory.from_config(config).revision_map)


def both(scripts_dir: Path, version_locations: Sequence[str] = ()) -> dict[str, Any]:
    """Both graphs of ``scripts_dir``, and how many of Revisor's came from headers."""
    scripts = load_scripts(
        ScriptLocation(scripts_dir=str(scripts_dir), version_locations=tuple(version_locations))
    )
    revision_map = scripts.directory.revision_map
    ours = describe_map(revision_map)
    loaded = [revision_map.get_revision(rev) for rev in ours["revisions"]]
    read = [s for s in loaded if isinstance(s, HeaderScript)]
    quick: HeaderGraph | None
    if version_locations:
        # read_graph answers for --scripts alone; the graph of the same headers still must match.
        every = len(read) == len(loaded)
        quick = graph_of({s.revision: s.header for s in read}) if every else None
    else:
        quick = read_graph(ScriptLocation(scripts_dir=str(scripts_dir)))
    return {
        "revisor": ours,
        "alembic": alembic_graph(scripts_dir, version_locations),
        "quick": None
        if quick is None
        else {"revisions": sorted(quick.revisions), "heads": list(quick.heads)},
        "header_read": len(read),
        "imported": len(loaded) - len(read),
    }


def quick_matches(graphs: dict[str, Any]) -> bool:
    """Whether the quick graph, where it answered, has Alembic's revisions and heads."""
    quick, alembic = graphs["quick"], graphs["alembic"]
    return quick is None or (
        quick["revisions"] == sorted(alembic["revisions"]) and quick["heads"] == alembic["heads"]
    )


if __name__ == "__main__":
    print(json.dumps(both(Path(sys.argv[1]), sys.argv[2:]), sort_keys=True))
