"""``revisor-operator``: run the DatabaseMigration operator.

High availability, deliberately simple
--------------------------------------
Run **one replica** with the Deployment strategy ``Recreate``. kopf's peering
is not leader election: two operators of equal priority both *pause*, and
two of different priority leave the lower one idle; neither buys
availability, while a rolling update would briefly run two operators
side by side. Peering is therefore disabled by default (``--standalone``).

Nothing is lost while the single replica is down or restarting:

* a Job that is running keeps running — it does not depend on the operator;
* the Job's name is deterministic, so the restarted operator (``resume``
  handlers) finds it, adopts it and records its result; a second create
  answers 409 AlreadyExists, never a duplicate migration;
* the database's advisory lock, taken by the engine, is the last guard
  against two runs on one database, whoever started them.

If you do run several replicas (e.g. across failure domains), pass
``--peering NAME`` and distinct ``--priority`` values so exactly one is
active; create the ``ClusterKopfPeering``/``KopfPeering`` object first.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Sequence

import kopf

from .adapters import logs, metrics
from .settings import Settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="revisor-operator",
        description="Run Alembic migrations declared as DatabaseMigration resources as Jobs. "
        "`revisor-operator wait dbm/NAME` waits for one to be Ready (see wait --help).",
        epilog="Environment: REVISOR_RUNNER_IMAGE, REVISOR_NAMESPACES, REVISOR_JOB_TTL_SECONDS, "
        "REVISOR_RESYNC_SECONDS, REVISOR_METRICS_PORT, REVISOR_METRICS_ADDRESS, REVISOR_LIVENESS, "
        "REVISOR_LOG_FORMAT, REVISOR_ALLOWED_*.",
    )
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "-A",
        "--all-namespaces",
        action="store_true",
        help="watch every namespace (the default when no namespace is given)",
    )
    scope.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        metavar="NS",
        help="watch this namespace (repeatable; globs allowed); default from REVISOR_NAMESPACES",
    )
    parser.add_argument("--runner-image", help="engine image for Jobs (REVISOR_RUNNER_IMAGE)")
    parser.add_argument(
        "--kubeconfig",
        metavar="PATH",
        help="use this kubeconfig (default: in-cluster credentials, else $KUBECONFIG, "
        "else ~/.kube/config)",
    )
    parser.add_argument(
        "--liveness",
        metavar="URL",
        help="liveness endpoint, e.g. http://0.0.0.0:8080/healthz; '' disables",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="Prometheus /metrics port; 0 disables (default 9090)",
    )
    parser.add_argument(
        "--peering",
        metavar="NAME",
        help="enable kopf peering under this name (default: standalone)",
    )
    parser.add_argument("--priority", type=int, default=0, help="peering priority")
    parser.add_argument("--log-format", choices=("json", "console"))
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    return parser


def settings_from(args: argparse.Namespace, env: Settings) -> Settings:
    """Flags override the environment."""
    return dataclasses.replace(
        env,
        runner_image=args.runner_image or env.runner_image,
        namespaces=tuple(args.namespace) or (() if args.all_namespaces else env.namespaces),
        metrics_port=env.metrics_port if args.metrics_port is None else args.metrics_port,
        liveness=env.liveness if args.liveness is None else (args.liveness or None),
        log_format=args.log_format or env.log_format,
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["wait"]:
        # A subcommand for deploy pipelines (Helm hooks): no kopf, no metrics server.
        from . import wait_cli

        return wait_cli.main(argv[1:])
    args = build_parser().parse_args(argv)
    settings = settings_from(args, Settings.from_env())
    logs.configure(
        json_format=settings.log_format == "json",
        level=logging.DEBUG if args.verbose else logging.INFO,
    )
    from . import handlers
    from .adapters.kube import Kube, KubeError, use_kubeconfig

    if args.kubeconfig:
        use_kubeconfig(args.kubeconfig)
    try:
        kube = Kube.from_environment(kubeconfig=args.kubeconfig)
    except KubeError as exc:
        print(f"revisor-operator: {exc}", file=sys.stderr)
        return 1
    metrics.serve(settings.metrics_port, settings.metrics_address)
    registry = kopf.OperatorRegistry()
    handlers.register(registry, settings)
    kopf.run(
        registry=registry,
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        liveness_endpoint=settings.liveness,
        standalone=args.peering is None,
        peering_name=args.peering,
        priority=args.priority,
        memo=kopf.Memo(runtime=handlers.Runtime(settings=settings, kube=kube)),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
