"""The operator's boundaries: one engine module, one Kubernetes module, pure decisions."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[2] / "operator" / "revisor_operator"
PURE = {
    "spec",
    "naming",
    "jobs",
    "observe",
    "conditions",
    "status",
    "reconcile",
    "redaction",
    "bodies",
}


def imports(module: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_operator_imports_only_the_contract_from_the_engine() -> None:
    engine = {n for m in PACKAGE.glob("*.py") for n in imports(m) if n.split(".")[0] == "revisor"}
    assert engine <= {"revisor.contract"}


def test_pure_modules_touch_no_kubernetes_or_kopf() -> None:
    for name in PURE:
        found = {n.split(".")[0] for n in imports(PACKAGE / f"{name}.py")}
        assert not found & {"kopf", "kubernetes", "urllib3", "socket", "subprocess"}, name


def test_only_kube_module_uses_the_kubernetes_client() -> None:
    users = {
        m.stem
        for m in PACKAGE.glob("*.py")
        if any(n.split(".")[0] == "kubernetes" for n in imports(m))
    }
    assert users == {"kube"}


def test_there_is_no_top_level_operator_package() -> None:
    """operator/__init__.py would shadow the standard library's operator module."""
    assert not (PACKAGE.parent / "__init__.py").exists()
