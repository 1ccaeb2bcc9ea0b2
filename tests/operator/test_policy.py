"""Creating a DatabaseMigration is not a back door: what the spec may choose for the Job's pod."""

from __future__ import annotations

from typing import Any

import pytest
from revisor.contract import ExitCode
from revisor_operator.decisions.policy import Policy, violations
from revisor_operator.decisions.spec import parse_spec
from revisor_operator.settings import Settings

from .factories import DEFAULTS, decide_on, migration, raw_spec
from .test_reconcile import OK_REFS

OWN = DEFAULTS.runner_image


def refused(policy: Policy, **spec: Any) -> list[str]:
    return [p.text for p in violations(parse_spec(raw_spec(**spec)), policy, default_image=OWN)]


def test_the_default_allows_only_what_the_operator_would_choose_itself() -> None:
    policy = Policy()
    assert refused(policy) == []
    assert refused(policy, runner={"image": OWN, "serviceAccountName": "revisor-runner"}) == []
    assert refused(policy, runner={"image": "evil.example/miner:1"}) == [
        "spec.runner.image: 'evil.example/miner:1' is not one of the operator's allowed runner "
        f"images ({OWN}). Use an allowed one, or ask the operator's administrator to allow it "
        "in REVISOR_ALLOWED_RUNNER_IMAGES (chart value policy.runnerImages)."
    ]
    [source] = refused(policy, source={"image": {"image": "registry.example/app:1"}})
    assert source.startswith("spec.source.image.image: 'registry.example/app:1' is not one")
    assert "allowed scripts images (none)" in source
    [account] = refused(policy, runner={"serviceAccountName": "cloud-admin"})
    assert "spec.runner.serviceAccountName: 'cloud-admin'" in account
    assert "(revisor-runner)" in account


@pytest.mark.parametrize(
    ("runner", "field", "allowable"),
    [
        ({"nodeSelector": {"kubernetes.io/hostname": "m-1"}}, "nodeSelector[kubernetes.io", True),
        ({"tolerations": [{"operator": "Exists"}]}, "tolerates every taint", False),
        (
            {"tolerations": [{"key": "node-role.kubernetes.io/control-plane"}]},
            "tolerations[0].key",
            True,
        ),
    ],
)
def test_scheduling_fields_are_refused_unless_allowed(
    runner: dict[str, Any], field: str, allowable: bool
) -> None:
    """A toleration of every taint is never allowed: no allowlist entry could scope it."""
    [problem] = refused(Policy(), runner=runner)
    assert field in problem
    allowing = Policy(
        node_selector_keys=("kubernetes.io/*",),
        toleration_keys=("node-role.kubernetes.io/control-plane",),
    )
    assert refused(allowing, runner=runner) == ([] if allowable else [problem])


def test_prefixes_and_globs_widen_the_allowlists() -> None:
    policy = Policy(
        runner_images=("registry.example/revisor:*",),
        source_images=("registry.example/*",),
        service_accounts=("migrator-?",),
    )
    assert refused(policy, runner={"image": "registry.example/revisor:0.2.0"}) == []
    assert refused(policy, source={"image": {"image": "registry.example/shop:1.4.2"}}) == []
    assert refused(policy, runner={"serviceAccountName": "migrator-a"}) == []
    assert len(refused(policy, runner={"image": "registry.example/other:1"})) == 1
    assert len(refused(policy, runner={"serviceAccountName": "migrator-ab"})) == 1


def test_a_refused_spec_reports_invalid_spec_and_makes_no_job() -> None:
    body = migration(spec=raw_spec(runner={"image": "evil.example/miner:1"}))
    decision = decide_on(body, references=OK_REFS)
    assert decision.action == "report" and decision.job is None
    assert decision.verdict is not None and decision.verdict.reason == "InvalidSpec"
    assert "spec.runner.image" in decision.verdict.message


def test_settings_read_the_allowlists_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "REVISOR_ALLOWED_RUNNER_IMAGES": "a/*, b/c:1",
            "REVISOR_ALLOWED_SOURCE_IMAGES": "registry.example/*",
            "REVISOR_ALLOWED_SERVICE_ACCOUNTS": "",
            "REVISOR_ALLOWED_TOLERATION_KEYS": "dedicated",
        }
    )
    assert settings.policy == Policy(
        runner_images=("a/*", "b/c:1"),
        source_images=("registry.example/*",),
        service_accounts=(),
        toleration_keys=("dedicated",),
    )
    assert Settings.from_env({}).policy == Policy()


def test_a_forged_pod_the_job_adopted_is_not_the_jobs_own() -> None:
    """The Job controller adopts an orphan pod with matching labels; only a pod running the
    template's containers counts, so a forged termination message is never read."""
    from revisor_operator.decisions.observe import observe_run, owned_pods

    from .factories import job_for, pod, result

    job = job_for(state="complete")
    job["metadata"]["uid"] = "job-uid"
    template = job["spec"]["template"]["spec"]
    owner: list[Any] = [{"kind": "Job", "uid": "job-uid", "controller": True}]
    genuine = pod(job=job["metadata"]["name"], exit_code=4, message=result(ExitCode(4)))
    genuine["metadata"]["ownerReferences"] = owner
    genuine["spec"] = template
    forged = pod(job=job["metadata"]["name"], exit_code=0, message=result(end=("FORGED",)))
    forged["metadata"]["ownerReferences"] = owner
    forged["metadata"]["creationTimestamp"] = "2099-01-01T00:00:00Z"  # the newest
    forged["spec"] = {"containers": [{"name": "revisor", "image": "revisor:dev",
                                      "command": ["python3", "-c", "..."]}]}  # fmt: skip
    assert owned_pods(job, [genuine, forged]) == [genuine]
    run = observe_run(job=job, pods=[genuine, forged])
    assert run.result is not None and run.result.exit_code == ExitCode(4)
