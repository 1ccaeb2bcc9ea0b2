"""The Argo CD health check in docs/flows.md, run as Lua (through lupa) on resource bodies."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

lupa = pytest.importorskip("lupa", reason="lupa (Lua for Python) runs the health check")

DOC = Path(__file__).resolve().parents[2] / "docs" / "flows.md"


def health_script() -> str:
    blocks = re.findall(r"```lua\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    assert len(blocks) == 1, "docs/flows.md must hold exactly one Lua block: the health check"
    return str(blocks[0])


def health(obj: dict[str, Any]) -> tuple[str, str]:
    """What Argo CD would show: (status, message)."""
    lua = lupa.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(health_script())
    return str(result["status"]), str(result["message"])


def dbm(generation: int = 2, **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "shop", "generation": generation}, "status": status}


def ready(value: str, reason: str, generation: int = 2) -> list[dict[str, Any]]:
    return [
        {
            "type": "Ready",
            "status": value,
            "reason": reason,
            "message": f"{reason} message",
            "observedGeneration": generation,
        }
    ]


def test_new_resource_is_progressing() -> None:
    """No status yet: the operator has not seen it."""
    assert health({"metadata": {"generation": 1}})[0] == "Progressing"


def test_ready_for_the_current_generation_is_healthy() -> None:
    """Ready=True computed for metadata.generation."""
    obj = dbm(observedGeneration=2, phase="Succeeded", conditions=ready("True", "Migrated"))
    assert health(obj) == ("Healthy", "Migrated message")


def test_ready_for_an_older_generation_is_still_progressing() -> None:
    """A spec just changed: the old Ready says nothing about it."""
    obj = dbm(observedGeneration=1, phase="Succeeded", conditions=ready("True", "Migrated", 1))
    assert health(obj)[0] == "Progressing"


@pytest.mark.parametrize(
    ("phase", "reason"),
    [("Failed", "MigrationFailed"), ("RolledBack", "RolledBack"),
     ("RolledBack", "DeployFailedRolledBack"), ("Failed", "RollbackFailed")],
)  # fmt: skip
def test_failed_or_rolled_back_is_degraded_with_the_message(phase: str, reason: str) -> None:
    """The resource's message is what the Argo CD UI shows."""
    obj = dbm(observedGeneration=2, phase=phase, conditions=ready("False", reason))
    assert health(obj) == ("Degraded", f"{reason} message")


def test_running_is_progressing() -> None:
    obj = dbm(observedGeneration=2, phase="Running", conditions=ready("False", "Running"))
    assert health(obj)[0] == "Progressing"


def test_plan_awaiting_approval_is_suspended() -> None:
    obj = dbm(
        observedGeneration=2,
        phase="AwaitingApproval",
        conditions=ready("False", "AwaitingApproval"),
    )
    assert health(obj)[0] == "Suspended"
