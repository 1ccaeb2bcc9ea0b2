"""`revisor-operator wait` against a fake API: exit codes, messages, and what it writes.

The judgement itself (when a resource counts as done) is tested in
test_waiting.py; here the command around it: the timeout, a resource that
is not there, ``--apply`` of a manifest naming another resource or
namespace, ``--rollback-to-release`` without a usable record, and
``--record-release``. :class:`.fake_kube.FakeKube` keeps DatabaseMigrations
and ConfigMaps in dicts and plays the operator when a test asks it to.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from revisor_operator import wait_cli
from revisor_operator.decisions.bodies import Migration
from revisor_operator.decisions.helm_releases import RELEASES_ANNOTATION
from revisor_operator.decisions.reconcile import desired_run
from revisor_operator.decisions.references import scripts_fingerprint
from revisor_operator.decisions.spec import parse_spec

from .factories import NAME, NAMESPACE, migration
from .fake_kube import SCRIPTS, FakeKube


def migrates_to(revision: str) -> Callable[[Migration], None]:
    """An operator that at once runs the current spec's Job and reaches ``revision``."""

    def operator(obj: Migration) -> None:
        spec = parse_spec(obj["spec"])
        scripts = scripts_fingerprint(spec, SCRIPTS)  # what the fake answers for the ConfigMap
        assert scripts is not None
        job, _ = desired_run(obj, spec, scripts=scripts)
        generation = obj["metadata"]["generation"]
        obj["status"] = {
            "observedGeneration": generation,
            "phase": "Succeeded",
            "currentRevision": revision,
            "conditions": [{"type": "Ready", "status": "True", "reason": "Migrated",
                            "message": f"Migrated to {revision}"}],
            "lastRun": {"job": job, "generation": generation},
        }  # fmt: skip

    return operator


class Clock:
    """time.monotonic and time.sleep for `run`: sleeping moves the clock, nothing waits."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def wait(kube: FakeKube, **options: Any) -> tuple[int, list[str]]:
    """`run` with a fake clock; its exit code and the lines it said (stdout)."""
    said: list[str] = []
    clock = Clock()
    options.setdefault("timeout", 5.0)
    code = wait_cli.run(
        kube,
        namespace=NAMESPACE,
        name=NAME,
        say=said.append,
        clock=clock,
        sleep=clock.sleep,
        **options,
    )
    return code, said


def with_records(records: dict[str, str], **status: Any) -> Migration:
    obj = migration(status=status or None)
    obj["metadata"]["annotations"] = {RELEASES_ANNOTATION: json.dumps(records)}
    return obj


def manifest(tmp_path: Path, **metadata: Any) -> Path:
    path = tmp_path / "dbm.yaml"
    body = {"kind": "DatabaseMigration", "metadata": metadata, "spec": migration()["spec"]}
    path.write_text(json.dumps(body))
    return path


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeKube:
    """The fake that `wait_cli.main` talks to instead of an API server."""
    kube = FakeKube()
    monkeypatch.setattr(wait_cli, "_kube", lambda args: (kube, False))
    return kube


# -- waiting ---------------------------------------------------------------------------------


def test_timeout_exits_2_saying_what_it_last_saw(capsys: pytest.CaptureFixture[str]) -> None:
    """The operator never observes generation 2: 2 after the timeout, the last state on stderr."""
    stale = migration(
        generation=2,
        status={"observedGeneration": 1, "phase": "Succeeded",
                "conditions": [{"type": "Ready", "status": "True", "reason": "Migrated"}]},
    )  # fmt: skip
    kube = FakeKube(stale)
    code, said = wait(kube, timeout=5.0)
    assert code == wait_cli.EXIT_TIMEOUT == 2
    err = capsys.readouterr().err
    assert "databasemigration/shop: timed out; last seen:" in err
    assert "has not observed generation 2 yet" in err
    # One line per change, not one per poll; a poll a second until the deadline.
    assert len(said) == 1
    assert kube.gets == 6


def test_a_resource_that_does_not_exist_yet_is_waited_for_a_moment(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A create may race the wait: not found is progress for a short grace."""
    code, said = wait(FakeKube(), timeout=3.0)
    assert code == 2
    assert said == ["databasemigration/shop: not found yet"]
    assert "timed out; last seen: not found yet" in capsys.readouterr().err


def test_a_resource_that_never_appears_fails_fast_not_at_the_timeout(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A typo in dbm/NAME: exit 1 after the grace, naming what was looked for, not 10 minutes."""
    kube = FakeKube()
    code, _ = wait(kube, timeout=600.0)
    assert code == wait_cli.EXIT_FAILED
    assert kube.gets == wait_cli.NOT_FOUND_GRACE_SECONDS + 1
    assert (
        "databasemigration/shop not found in namespace shop: check the name and the namespace"
        in capsys.readouterr().err
    )


def test_ready_for_the_current_run_exits_0_and_records_the_release(tmp_path: Path) -> None:
    """--apply then Ready: exit 0, and --record-release writes the revision reached."""
    kube = FakeKube()
    kube.operator = migrates_to("3c9a1f0b2e44")
    code, said = wait(kube, apply=manifest(tmp_path, name=NAME), record=4)
    assert code == 0, said
    assert said[-1] == "databasemigration/shop: recorded 3c9a1f0b2e44 for release 4"
    annotations = kube.migrations[NAMESPACE, NAME]["metadata"]["annotations"]
    assert json.loads(annotations[RELEASES_ANNOTATION]) == {"4": "3c9a1f0b2e44"}
    assert [w[0] for w in kube.writes] == ["apply", "patch"]


def test_a_failed_run_exits_1_with_the_resources_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The run for the current spec failed: 1 at once, the condition's message on stderr."""

    def fails(obj: Migration) -> None:
        migrates_to("9d2e7a11c0f3")(obj)
        obj["status"]["phase"] = "RolledBack"
        obj["status"]["conditions"] = [
            {"type": "Ready", "status": "False", "reason": "RolledBack",
             "message": "boom in 0004; rolled back to 9d2e7a11c0f3"}
        ]  # fmt: skip

    kube = FakeKube()
    kube.operator = fails
    code, _ = wait(kube, apply=manifest(tmp_path, name=NAME), record=4, timeout=600.0)
    assert code == wait_cli.EXIT_FAILED == 1
    assert kube.gets == 1, "failed at the first poll"
    err = capsys.readouterr().err
    assert "databasemigration/shop failed: RolledBack: boom in 0004" in err
    assert [w[0] for w in kube.writes] == ["apply"], "no release record for a failed run"


# -- --apply -----------------------------------------------------------------------------------


def test_apply_of_a_manifest_naming_another_resource_is_refused(
    fake: FakeKube, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """dbm/shop --apply a file describing "billing": exit 2, nothing applied."""
    path = manifest(tmp_path, name="billing")
    code = wait_cli.main(["dbm/shop", "-n", NAMESPACE, "--apply", str(path)])
    assert code == 2
    assert f"{path} describes billing, not shop" in capsys.readouterr().err
    assert fake.writes == []


def test_apply_of_a_manifest_for_another_namespace_is_refused(
    fake: FakeKube, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """-n shop --apply a file for namespace "billing" is refused, as `kubectl apply -n` does."""
    path = manifest(tmp_path, name=NAME, namespace="billing")
    code = wait_cli.main(["dbm/shop", "-n", NAMESPACE, "--apply", str(path), "--timeout", "0s"])
    assert code == 2
    assert f"{path} is for namespace billing, not {NAMESPACE}" in capsys.readouterr().err
    assert fake.writes == []


def test_apply_without_a_namespace_uses_the_manifests(
    fake: FakeKube, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Outside a cluster, no -n: the manifest's namespace, not "default"."""
    path = manifest(tmp_path, name=NAME, namespace=NAMESPACE)
    argv = ["dbm/shop", "--apply", str(path), "--timeout", "0s",
            "--service-account-dir", str(tmp_path / "none")]  # fmt: skip
    assert wait_cli.main(argv) == 2  # nothing plays the operator: it times out
    assert [(w[0], w[1], w[2]) for w in fake.writes] == [("apply", NAMESPACE, NAME)]


def kubeconfig(tmp_path: Path, namespace: str | None) -> Path:
    context: dict[str, Any] = {"cluster": "c", "user": "u"}
    if namespace:
        context["namespace"] = namespace
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "here",
        "contexts": [{"name": "here", "context": context}],
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
    }))  # fmt: skip
    return path


@pytest.mark.parametrize(
    ("context_namespace", "expected"), [("billing", "billing"), (None, "default")]
)
def test_without_n_or_a_manifest_the_kubeconfig_contexts_namespace_is_used(
    fake: FakeKube,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    context_namespace: str | None,
    expected: str,
) -> None:
    """From a laptop or CI, as kubectl does: the current context's namespace, else default."""
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig(tmp_path, context_namespace)))
    asked: list[str] = []
    real_get = fake.get_migration

    def get_migration(*, namespace: str, name: str) -> Migration | None:
        asked.append(namespace)
        return real_get(namespace=namespace, name=name)

    monkeypatch.setattr(fake, "get_migration", get_migration)
    argv = ["dbm/shop", "--timeout", "0s", "--service-account-dir", str(tmp_path / "none")]
    assert wait_cli.main(argv) == 2
    assert asked and set(asked) == {expected}


def test_a_file_that_is_not_a_databasemigration_is_refused(
    fake: FakeKube, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "deploy.yaml"
    path.write_text("kind: Deployment\nmetadata: {name: shop}\n")
    assert wait_cli.main(["dbm/shop", "-n", NAMESPACE, "--apply", str(path)]) == 2
    assert "is not a DatabaseMigration manifest" in capsys.readouterr().err
    assert fake.writes == []


@pytest.mark.parametrize("resource", ["", "dbm/"])
def test_a_missing_name_is_a_usage_error(fake: FakeKube, resource: str) -> None:
    assert wait_cli.main([resource, "-n", NAMESPACE]) == 2
    assert fake.gets == 0


# -- --rollback-to-release ---------------------------------------------------------------------


def test_rollback_to_a_release_with_no_record_fails_and_changes_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Release 3's migration never succeeded: exit 1, say so, leave spec.target alone."""
    kube = FakeKube(with_records({"1": "9d2e7a11c0f3", "2": "3c9a1f0b2e44"}))
    code, _ = wait(kube, rollback_to=3)
    assert code == 1
    err = capsys.readouterr().err
    assert "no database revision was recorded for Helm release 3" in err
    assert "set spec.target by hand" in err
    assert kube.writes == []


def test_rollback_of_a_resource_that_does_not_exist_fails(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _ = wait(FakeKube(), rollback_to=1)
    assert code == 1
    assert "databasemigration/shop not found: nothing to roll back" in capsys.readouterr().err


def test_rollback_to_a_release_that_left_several_heads_fails(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A recorded "a,b" cannot be one target: refused before any write."""
    kube = FakeKube(with_records({"1": "aaaa00000001,bbbb00000002"}))
    code, _ = wait(kube, rollback_to=1)
    assert code == 1
    err = capsys.readouterr().err
    assert "left the database at several heads (aaaa00000001,bbbb00000002)" in err
    assert kube.writes == []


def test_several_heads_are_recorded_as_such_and_refused_on_rollback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--record-release with two heads stores "a,b"; rolling back to that release refuses."""
    kube = FakeKube()
    kube.operator = migrates_to("aaaa00000001,bbbb00000002")
    assert wait(kube, apply=manifest(tmp_path, name=NAME), record=1)[0] == 0
    kube.operator = None
    writes = len(kube.writes)
    assert wait(kube, rollback_to=1)[0] == 1
    assert "several heads" in capsys.readouterr().err
    assert len(kube.writes) == writes


def test_rollback_sets_the_recorded_target_then_waits_for_the_downgrade() -> None:
    """The recorded revision becomes spec.target; Ready for that generation exits 0."""
    kube = FakeKube(with_records({"1": "9d2e7a11c0f3", "2": "3c9a1f0b2e44"}))
    kube.operator = migrates_to("9d2e7a11c0f3")
    code, said = wait(kube, rollback_to=1)
    assert code == 0, said
    assert kube.writes[0][3] == {"spec": {"target": "9d2e7a11c0f3"}}
    assert "target set to 9d2e7a11c0f3, as recorded for release 1" in said[0]
