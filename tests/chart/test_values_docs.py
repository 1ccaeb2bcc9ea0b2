"""values.yaml reads as documentation: every key of both charts has a comment right above it.

The check is line by line, as a reader meets the file: a key's line must
follow a comment line (its own, or the heading of a block it opens).
Keys inside flow mappings (``{}``) are not lines and need none. The same
keys are then read with a YAML parser, so that a key the line reader
cannot see (a syntax it does not know) fails the test instead of passing
unchecked.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.render import REPO

VALUES = [
    REPO / "charts" / "revisor" / "values.yaml",
    REPO / "charts" / "revisor-migration" / "values.yaml",
]
KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.\-]+):(?: |$)")


def key_lines(text: str) -> list[tuple[str, bool]]:
    """(dotted path, commented?) of every key line, in order."""
    lines = text.splitlines()
    parents: list[tuple[int, str]] = []  # (indent, key) of the blocks we are in
    found = []
    for number, line in enumerate(lines):
        match = KEY.match(line)
        if match is None:
            continue
        indent = len(match["indent"])
        while parents and parents[-1][0] >= indent:
            parents.pop()
        path = ".".join([*(key for _, key in parents), match["key"]])
        above = lines[number - 1].lstrip() if number else ""
        found.append((path, above.startswith("#")))
        parents.append((indent, match["key"]))
    return found


def parsed_keys(node: Any, prefix: str = "") -> set[str]:
    """Every key path of the loaded YAML (mappings only; lists and scalars are values)."""
    if not isinstance(node, dict):
        return set()
    keys = set()
    for key, value in node.items():
        path = f"{prefix}{key}"
        keys.add(path)
        keys |= parsed_keys(value, f"{path}.")
    return keys


def test_the_reader_finds_a_key_without_a_comment() -> None:
    """The rule itself: a blank line or another key between comment and key does not count."""
    text = "# -- a\na: 1\nb: 2\n\n# -- c\nc:\n  d: 3\n  # -- e\n  e: {}\n"
    assert [path for path, ok in key_lines(text) if not ok] == ["b", "c.d"]


@pytest.mark.parametrize("values", VALUES, ids=lambda p: p.parent.name)
def test_every_value_has_a_comment_directly_above_it(values: Path) -> None:
    text = values.read_text()
    lines = key_lines(text)
    undocumented = [path for path, commented in lines if not commented]
    assert undocumented == [], f"{values.relative_to(REPO)}: add a comment above each"
    # The line reader saw every key there is (nested flow mappings such as {} have none).
    assert {path for path, _ in lines} == parsed_keys(yaml.safe_load(text))
