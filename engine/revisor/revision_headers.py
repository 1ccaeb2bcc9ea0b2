"""A revision file's identity read from its source, without running it.

Alembic learns a revision's place in the graph by importing its module and
reading four module attributes: ``revision``, ``down_revision``,
``branch_labels`` and ``depends_on``. Importing means compiling and running
the whole file (and whatever it imports), for every file, on every run, even
when the database is already at head and no revision will run. Nearly every
revision file states those four as plain literals near its top, as
``alembic revision`` writes them::

    revision: str = "3c9a1f0b2e44"
    down_revision: Union[str, Sequence[str], None] = "9d2e7a11c0f3"
    branch_labels: Union[str, Sequence[str], None] = None
    depends_on: Union[str, Sequence[str], None] = None

so they can be read from the source's syntax tree instead (the part before
the first ``def``/``class``, and the whole file only when that is not enough).

The reading is exact or it declines: :func:`read_header` returns None unless
every assignment to those names is a plain one, at module level, of a
literal (the last one wins, as at import), and nothing else in the file
could change them at import (a star import, an assignment inside an ``if``,
``globals()``, ``setattr``, ``exec``). A None sends the file to
Alembic's own import, so a computed header (``down_revision = PREVIOUS``)
gives the graph Alembic gives. Pure: source text in, header out.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from typing import Any

#: The module attributes Alembic reads to place a revision in its graph.
HEADER_NAMES = ("revision", "down_revision", "branch_labels", "depends_on")
_NAMES = frozenset(HEADER_NAMES)

#: Where a revision file's header ends: its first top-level function, class or decorator.
_FIRST_DEFINITION = re.compile(r"^(?:async\s+def|def|class|@)\b|^@", re.MULTILINE)

#: Anything after the header that could set a header name at import; seen: read it all.
_LATER_WRITE = re.compile(
    r"\b(?:revision|down_revision|branch_labels|depends_on)\s*(?::[^=\n]*)?=(?!=)"
    r"|\bglobals\s*\(|\bsetattr\s*\(|\bexec\s*\(|\bimport\s+\*|\b__dict__\b"
)

_NOTHING = object()

#: What a header name may hold.
RevisionList = str | list[str] | tuple[str, ...] | None


@dataclass(frozen=True)
class Header:
    """A revision's identity as its file states it (Alembic's module attributes)."""

    revision: str
    #: As the file writes them (a list stays a list): Alembic takes the module's values as is.
    down_revision: RevisionList
    branch_labels: RevisionList
    depends_on: RevisionList
    #: The module's docstring as written (``module.__doc__``), or None.
    doc: str | None


def read_header(source: str) -> Header | None:
    """The header of a revision file's ``source``, or None if only importing it can tell."""
    cut = _FIRST_DEFINITION.search(source)
    if cut is not None and _LATER_WRITE.search(source, cut.start()) is None:
        try:
            found = _header_of(ast.parse(source[: cut.start()]))
        except SyntaxError:
            found = None  # cut inside a string or a bracket: read the whole file
        if found is not None:
            return found
    try:
        return _header_of(ast.parse(source))
    except SyntaxError:
        return None  # Alembic's import reports it, with its file and line


def _header_of(tree: ast.Module) -> Header | None:
    values: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # the docstring
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                if alias.name == "*" or (alias.asname or alias.name).split(".")[0] in _NAMES:
                    return None
            continue
        name, value = _assignment(node)
        if name is None:
            if _writes_a_header_name(node):
                return None
            continue
        if value is _NOTHING:
            return None
        values[name] = value  # assigned again: the last one is what the module holds
    revision = values.get("revision")
    if not isinstance(revision, str) or "down_revision" not in values:
        return None
    down = values["down_revision"]
    labels = values.get("branch_labels")
    depends = values.get("depends_on")
    if not all(_is_revision_list(v) for v in (down, labels, depends)):
        return None
    return Header(
        revision=revision,
        down_revision=down,
        branch_labels=labels,
        depends_on=depends,
        doc=ast.get_docstring(tree, clean=False),
    )


def _assignment(node: ast.stmt) -> tuple[str | None, Any]:
    """``(name, literal)`` for ``name = literal`` / ``name: T = literal`` of a header name.

    ``(name, _NOTHING)`` when a header name is assigned something else (a
    call, a name, a tuple target): the file must be imported to know it.
    """
    if isinstance(node, ast.Assign):
        targets: list[ast.expr] = node.targets
        value: ast.expr | None = node.value
    elif isinstance(node, ast.AnnAssign):
        if node.value is None:
            return None, None  # ``revision: str`` alone binds nothing
        targets, value = [node.target], node.value
    elif isinstance(node, ast.AugAssign):
        targets, value = [node.target], None
    else:
        return None, None
    if len(targets) != 1 or not isinstance(targets[0], ast.Name):
        ours = {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)} & _NAMES
        return (next(iter(ours)), _NOTHING) if ours else (None, None)
    name = targets[0].id  # the usual case, decided without walking the target
    if name not in _NAMES:
        return None, None
    return name, _literal(value)


def _literal(value: ast.expr | None) -> Any:
    """The literal ``value`` holds, or ``_NOTHING``."""
    if value is None:
        return _NOTHING
    if isinstance(value, ast.Constant):
        return value.value
    try:
        return ast.literal_eval(value)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return _NOTHING


def _writes_a_header_name(node: ast.stmt) -> bool:
    """Could this module-level statement set a header name when the module is imported?

    Whatever runs at import counts: the statement itself, a class body, a
    function's decorators and defaults; not a function's body, which runs
    only if called. A name stored at module level, ``global``/``nonlocal``,
    ``:=``, and calls that reach the module's namespace (``globals()``,
    ``setattr``, ``exec``, ``vars``, ``__import__``) are all a yes.
    """
    return any(_reaches_module_names(*item) for item in _runs_at_import(node))


def _runs_at_import(node: ast.AST) -> list[tuple[ast.AST, bool]]:
    """The nodes of ``node`` that run at import, each with whether it is module-level code."""
    found: list[tuple[ast.AST, bool]] = []

    def visit(current: ast.AST, module_level: bool) -> None:
        if isinstance(current, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            head: list[ast.AST] = [*current.args.defaults]
            head += [d for d in current.args.kw_defaults if d is not None]
            if not isinstance(current, ast.Lambda):
                head += current.decorator_list
            for part in head:
                visit(part, module_level)
            return
        if isinstance(current, ast.ClassDef):
            for part in [*current.decorator_list, *current.bases, *current.keywords]:
                visit(part, module_level)
            for statement in current.body:
                visit(statement, False)  # the class's own namespace
            return
        found.append((current, module_level))
        for child in ast.iter_child_nodes(current):
            visit(child, module_level)

    visit(node, True)
    return found


def _reaches_module_names(inner: ast.AST, at_module_level: bool) -> bool:
    if isinstance(inner, ast.Name) and inner.id in HEADER_NAMES:
        return at_module_level and not isinstance(inner.ctx, ast.Load)
    if isinstance(inner, (ast.Global, ast.Nonlocal, ast.NamedExpr)):
        return True
    return (
        isinstance(inner, ast.Call)
        and isinstance(inner.func, ast.Name)
        and inner.func.id in ("globals", "setattr", "exec", "vars", "__import__", "eval")
    )


def _is_revision_list(value: Any) -> bool:
    """None, a string, or a list or tuple of strings: what Alembic accepts there.

    A set is declined (its order, which Alembic keeps, is the import's own).
    """
    if value is None or isinstance(value, str):
        return True
    return isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
