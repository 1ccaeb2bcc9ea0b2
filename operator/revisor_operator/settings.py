"""Operator-wide settings: command-line flags over environment variables over defaults.

Environment variables exist so that a Deployment (or Helm values) can set
everything without templating the command line:

==============================  =============================================
``REVISOR_RUNNER_IMAGE``        engine image for Jobs without spec.runner.image
``REVISOR_RUNNER_PULL_POLICY``  its imagePullPolicy (IfNotPresent)
``REVISOR_NAMESPACES``          comma-separated namespaces to watch
``REVISOR_JOB_TTL_SECONDS``     ttlSecondsAfterFinished of Jobs (86400)
``REVISOR_RESYNC_SECONDS``      how often each resource is re-checked (30)
``REVISOR_ROLLOUT_POLL_SECONDS`` how often a watched rollout is read (5)
``REVISOR_PROGRESS_POLL_SECONDS`` how often a running Job's log is read for its
                                progress (5; only while a Job runs)
``REVISOR_DELETE_WAIT_SECONDS`` how long a deletion waits for a running Job (600)
``REVISOR_FLEET_CHILD_RESYNC_SECONDS`` how often a DatabaseMigrationSet's child is
                                re-checked on its own (300; its Jobs and its set
                                wake it at once)
``REVISOR_FLEET_PASS_SECONDS``  least time between two passes of one set (0.5)
``REVISOR_METRICS_PORT``        Prometheus port, 0 to disable (9090)
``REVISOR_METRICS_ADDRESS``     address /metrics binds to (0.0.0.0; 127.0.0.1, ::)
``REVISOR_LIVENESS``            kopf liveness endpoint URL
``REVISOR_LOG_FORMAT``          json (default) or console
``REVISOR_ALLOWED_*``           the allowlists of :mod:`.decisions.policy`:
                                ``RUNNER_IMAGES``, ``SOURCE_IMAGES``,
                                ``SERVICE_ACCOUNTS`` (revisor-runner),
                                ``NODE_SELECTOR_KEYS``, ``TOLERATION_KEYS``;
                                comma-separated, ``prefix*`` or globs
==============================  =============================================
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from .decisions.jobs import JobDefaults
from .decisions.policy import RUNNER_SERVICE_ACCOUNT, Policy

DEFAULT_RUNNER_IMAGE = "ghcr.io/revisor-dev/revisor:0.1.0"
DEFAULT_LIVENESS = "http://0.0.0.0:8080/healthz"
#: Every interface: Prometheus scrapes the pod's IP (the chart's NetworkPolicy says who may).
DEFAULT_METRICS_ADDRESS = "0.0.0.0"  # noqa: S104


@dataclass(frozen=True)
class Settings:
    runner_image: str = DEFAULT_RUNNER_IMAGE
    runner_pull_policy: str = "IfNotPresent"
    job_ttl_seconds: int = 24 * 3600
    resync_seconds: float = 30.0
    rollout_poll_seconds: float = 5.0
    #: How often the log of a running Job's pod is read for its progress (a few KiB each).
    progress_poll_seconds: float = 5.0
    #: How long deleting a resource waits for its running Job before letting go.
    delete_wait_seconds: float = 600.0
    #: A set's children are woken by their Jobs and by their set; their own timer is a
    #: slow safety net, so that a fleet's children do not keep the operator busy.
    fleet_child_resync_seconds: float = 300.0
    #: Events of a set's children within this interval make one pass of the set.
    fleet_pass_seconds: float = 0.5
    namespaces: tuple[str, ...] = ()
    metrics_port: int = 9090
    metrics_address: str = DEFAULT_METRICS_ADDRESS
    liveness: str | None = DEFAULT_LIVENESS
    log_format: str = "json"
    policy: Policy = field(default_factory=Policy)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        namespaces = tuple(
            n.strip() for n in env.get("REVISOR_NAMESPACES", "").split(",") if n.strip()
        )
        return cls(
            runner_image=env.get("REVISOR_RUNNER_IMAGE") or DEFAULT_RUNNER_IMAGE,
            runner_pull_policy=env.get("REVISOR_RUNNER_PULL_POLICY") or "IfNotPresent",
            job_ttl_seconds=int(env.get("REVISOR_JOB_TTL_SECONDS") or 24 * 3600),
            resync_seconds=float(env.get("REVISOR_RESYNC_SECONDS") or 30.0),
            rollout_poll_seconds=float(env.get("REVISOR_ROLLOUT_POLL_SECONDS") or 5.0),
            progress_poll_seconds=float(env.get("REVISOR_PROGRESS_POLL_SECONDS") or 5.0),
            delete_wait_seconds=float(env.get("REVISOR_DELETE_WAIT_SECONDS") or 600.0),
            fleet_child_resync_seconds=float(
                env.get("REVISOR_FLEET_CHILD_RESYNC_SECONDS") or 300.0
            ),
            fleet_pass_seconds=float(env.get("REVISOR_FLEET_PASS_SECONDS") or 0.5),
            namespaces=namespaces,
            metrics_port=int(env.get("REVISOR_METRICS_PORT") or 9090),
            metrics_address=env.get("REVISOR_METRICS_ADDRESS") or DEFAULT_METRICS_ADDRESS,
            liveness=env.get("REVISOR_LIVENESS", DEFAULT_LIVENESS) or None,
            log_format=env.get("REVISOR_LOG_FORMAT") or "json",
            policy=Policy(
                runner_images=_items(env, "REVISOR_ALLOWED_RUNNER_IMAGES"),
                source_images=_items(env, "REVISOR_ALLOWED_SOURCE_IMAGES"),
                service_accounts=_items(
                    env, "REVISOR_ALLOWED_SERVICE_ACCOUNTS", default=(RUNNER_SERVICE_ACCOUNT,)
                ),
                node_selector_keys=_items(env, "REVISOR_ALLOWED_NODE_SELECTOR_KEYS"),
                toleration_keys=_items(env, "REVISOR_ALLOWED_TOLERATION_KEYS"),
            ),
        )

    @property
    def job_defaults(self) -> JobDefaults:
        return JobDefaults(
            runner_image=self.runner_image,
            runner_pull_policy=self.runner_pull_policy,
            ttl_seconds_after_finished=self.job_ttl_seconds,
        )


def _items(env: Mapping[str, str], name: str, *, default: tuple[str, ...] = ()) -> tuple[str, ...]:
    """A comma-separated list from the environment; unset means ``default``, empty means none."""
    if name not in env:
        return default
    return tuple(item.strip() for item in env[name].split(",") if item.strip())
