"""The revision graph's heads from the files' headers alone: no Alembic, no import.

A run whose database is already at its target needs only two facts from the
scripts: which revisions exist and which of them are heads. Loading Alembic
to learn them costs more than the rest of such a run (its runtime and
SQLAlchemy are most of a second of CPU), so :func:`read_graph` answers from
:func:`~revisor.revision_headers.read_header` with the standard library
only, for the layouts ``--scripts DIR`` gives (``DIR/versions``, or a flat
``DIR`` of revision files, a mounted ConfigMap) and an ini file's
``script_location``.

It is exact or it declines: None whenever Alembic could see something else
or fail (extra version locations, or an ini file setting them, a header
that is not plain literals, a file that is not a revision, the same
revision twice, a down revision or dependency that is not a revision id, a
branch label used twice or named like a revision, a cycle). The caller then loads the scripts with
Alembic. Alembic's rules followed here: files are listed as
``Script._list_py_dir`` lists them (one directory, not recursive, no
``__pycache__``, names matching ``_only_source_rev_file``), and a head is a
revision that no other revision names as its ``down_revision``
(``depends_on`` does not make a revision stop being a head;
``RevisionMap.heads``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from revisor.ini_file import config_file_of, read_ini
from revisor.revision_headers import Header, RevisionList, read_header
from revisor.script_location import ScriptLocation

#: Alembic's ``alembic.script.base._only_source_rev_file``: the files that may be revisions.
_REVISION_FILE = re.compile(r"(?!\.\#|__init__)(.*\.py)$")
#: Alembic's ``_revision_illegal_chars``: a revision id with one of these is an error.
_ILLEGAL = frozenset("@-+:")


@dataclass(frozen=True)
class HeaderGraph:
    """Every revision of a script directory, by id, and the graph's heads (sorted)."""

    revisions: Mapping[str, Header]
    heads: tuple[str, ...]


def revision_files(location: ScriptLocation) -> list[Path] | None:
    """The files Alembic would load as revisions, in its order; None if it must be asked.

    ``--scripts DIR``: ``DIR/versions`` when it is a directory, else ``DIR``
    itself less its ``env.py`` (the flat layout). An ini file (``--config``,
    or Alembic's default one): its ``script_location``'s ``versions``
    (:func:`~revisor.ini_file.read_ini`). Not both, and no
    ``--version-locations``.
    """
    if location.version_locations:
        return None
    config_file = config_file_of(location)
    if config_file is not None:
        if location.scripts_dir is not None:
            return None
        ini = read_ini(config_file, location.ini_section)
        if ini is None:
            return None
        where, flat = ini.script_location / "versions", False
    elif location.scripts_dir is not None:
        home = Path(location.scripts_dir)
        flat = not (home / "versions").is_dir()
        where = home if flat else home / "versions"
    else:
        return None
    try:
        with os.scandir(where) as entries:
            names = sorted(e.name for e in entries if not e.is_dir())
    except OSError:
        return None
    return [
        where / name
        for name in names
        if _REVISION_FILE.match(name) and not (flat and name == "env.py")
    ]


def read_graph(location: ScriptLocation) -> HeaderGraph | None:
    """The graph of the revisions at ``location`` from their headers, or None (see above)."""
    files = revision_files(location)
    if not files:
        return None
    revisions: dict[str, Header] = {}
    for path in files:
        header = header_of_file(path)
        if header is None or header.revision in revisions:
            return None
        revisions[header.revision] = header
    return graph_of(revisions)


#: Headers read in this process, by the file's identity and version (see header_of_file).
_READ: dict[tuple[int, int, int, int, int], Header | None] = {}


def header_of_file(path: Path) -> Header | None:
    """The header of the revision file at ``path`` (None: unreadable, or only importing tells).

    Read once per process: a run that finds something to do reads every header
    here first (:mod:`revisor.at_target`), then again as it loads the scripts
    with Alembic (:mod:`revisor.scripts`), by another path when the file is a
    symlink. Keyed by what identifies the file's content on disk (device,
    inode, size, modification and change times), so an edited file is read again.
    """
    try:
        found = path.stat()
        key = (found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns, found.st_ctime_ns)
        if key in _READ:
            return _READ[key]
        header = read_header(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError):
        return None
    _READ[key] = header
    return header


def graph_of(revisions: Mapping[str, Header]) -> HeaderGraph | None:
    """The heads of ``revisions``, or None where Alembic's graph could differ or fail. Pure."""
    labels: set[str] = set()
    down_of: dict[str, tuple[str, ...]] = {}
    needs: dict[str, tuple[str, ...]] = {}
    for rev, header in revisions.items():
        if not rev or _ILLEGAL.intersection(rev):
            return None
        down = _ids(header.down_revision)
        depends = _ids(header.depends_on)
        if any(r not in revisions for r in (*down, *depends)) or len(set(down)) != len(down):
            return None  # a partial id, a branch label, a missing file: Alembic resolves it
        for label in _ids(header.branch_labels):
            if label in labels or label in revisions:
                return None
            labels.add(label)
        down_of[rev], needs[rev] = down, (*down, *depends)
    if _has_cycle(needs):
        return None
    revised = {r for downs in down_of.values() for r in downs}
    return HeaderGraph(dict(revisions), tuple(sorted(set(revisions) - revised)))


def _ids(value: RevisionList) -> tuple[str, ...]:
    """Alembic's ``util.to_tuple`` of a header value (None is no revision)."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(value)


def _has_cycle(needs: Mapping[str, tuple[str, ...]]) -> bool:
    """Whether following down revisions and dependencies ever comes back (Kahn's algorithm)."""
    waiting = {rev: len(set(before)) for rev, before in needs.items()}
    after: dict[str, list[str]] = {}
    for rev, before in needs.items():
        for prior in set(before):
            after.setdefault(prior, []).append(rev)
    ready = [rev for rev, count in waiting.items() if count == 0]
    done = 0
    while ready:
        rev = ready.pop()
        done += 1
        for later in after.get(rev, ()):
            waiting[later] -= 1
            if waiting[later] == 0:
                ready.append(later)
    return done != len(needs)
