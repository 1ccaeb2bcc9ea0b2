"""What a ``DatabaseMigration`` may ask of the cluster: the operator's allowlists.

Creating a DatabaseMigration makes the operator create a Job, so whatever
the spec can choose for that Job's pod, anyone allowed to create a
DatabaseMigration can choose: the image that runs (and its code), the
ServiceAccount it runs as (and that account's cloud identity), the nodes it
lands on. Admission policies see the operator's identity, not the user's,
so the operator enforces these itself. A spec that asks for more than the
:class:`Policy` allows is refused (``InvalidSpec``, naming the field and
the allowlist) and no Job is made.

Defaults allow only what the operator would choose by itself: its own
engine image, the ``revisor-runner`` ServiceAccount (or none), no scripts
image, no node selectors or tolerations. The chart's values widen them.
Pure.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .spec import ImageSource, MigrationSpec, Problem

#: The ServiceAccount the chart creates for engine Jobs: no permissions, no token.
RUNNER_SERVICE_ACCOUNT = "revisor-runner"


@dataclass(frozen=True)
class Policy:
    """Allowlists; an entry ending in ``*`` is a prefix, others match exactly (globs allowed)."""

    runner_images: tuple[str, ...] = ()
    source_images: tuple[str, ...] = ()
    service_accounts: tuple[str, ...] = (RUNNER_SERVICE_ACCOUNT,)
    #: Node label keys a spec may select on, and taint keys it may tolerate.
    node_selector_keys: tuple[str, ...] = ()
    toleration_keys: tuple[str, ...] = ()


def violations(spec: MigrationSpec, policy: Policy, *, default_image: str) -> list[Problem]:
    """Every field of ``spec`` the policy does not allow, as problems to report."""
    problems: list[Problem] = []
    runner = spec.runner
    image = runner.image
    if image is not None and image != default_image and not _allowed(image, policy.runner_images):
        problems.append(
            _refused(
                "spec.runner.image",
                image,
                (default_image, *policy.runner_images),
                "runner images",
                "REVISOR_ALLOWED_RUNNER_IMAGES (chart value policy.runnerImages)",
            )
        )
    source = spec.source
    if isinstance(source, ImageSource) and not _allowed(source.image, policy.source_images):
        problems.append(
            _refused(
                "spec.source.image.image",
                source.image,
                policy.source_images,
                "scripts images",
                "REVISOR_ALLOWED_SOURCE_IMAGES (chart value policy.sourceImages)",
            )
        )
    account = runner.service_account
    if account is not None and not _allowed(account, policy.service_accounts):
        problems.append(
            _refused(
                "spec.runner.serviceAccountName",
                account,
                policy.service_accounts,
                "ServiceAccounts",
                "REVISOR_ALLOWED_SERVICE_ACCOUNTS (chart value policy.serviceAccounts)",
            )
        )
    for key in runner.node_selector:
        if not _allowed(key, policy.node_selector_keys):
            problems.append(
                _refused(
                    f"spec.runner.nodeSelector[{key}]",
                    key,
                    policy.node_selector_keys,
                    "node label keys",
                    "REVISOR_ALLOWED_NODE_SELECTOR_KEYS (chart value policy.nodeSelectorKeys)",
                )
            )
    for index, toleration in enumerate(runner.tolerations):
        problems += _toleration_problems(index, toleration, policy)
    return problems


def _toleration_problems(
    index: int, toleration: Mapping[str, object], policy: Policy
) -> list[Problem]:
    where = f"spec.runner.tolerations[{index}]"
    key = str(toleration.get("key") or "")
    if not key:
        # An empty key with operator Exists tolerates every taint, NoExecute included.
        return [
            Problem(
                field=where,
                message="tolerates every taint (no key): it could land the Job on any node",
                fix="Name the taint's key; allowed keys are set by the operator's "
                "REVISOR_ALLOWED_TOLERATION_KEYS (chart value policy.tolerationKeys)",
            )
        ]
    if _allowed(key, policy.toleration_keys):
        return []
    return [
        _refused(
            f"{where}.key",
            key,
            policy.toleration_keys,
            "taint keys",
            "REVISOR_ALLOWED_TOLERATION_KEYS (chart value policy.tolerationKeys)",
        )
    ]


def _allowed(value: str, patterns: Sequence[str]) -> bool:
    return any(
        value.startswith(p[:-1]) if p.endswith("*") else fnmatch.fnmatchcase(value, p)
        for p in patterns
    )


def _refused(where: str, value: str, allowed: Sequence[str], what: str, setting: str) -> Problem:
    listed = ", ".join(allowed) if allowed else "none"
    return Problem(
        field=where,
        message=f"{value!r} is not one of the operator's allowed {what} ({listed})",
        fix=f"Use an allowed one, or ask the operator's administrator to allow it in {setting}",
    )
