"""The tree's one rule that import-linter cannot check."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_there_is_no_top_level_operator_or_engine_package() -> None:
    """operator/__init__.py would shadow the standard library's operator module."""
    for directory in ("operator", "engine"):
        assert (ROOT / directory).is_dir()
        assert not (ROOT / directory / "__init__.py").exists(), directory
