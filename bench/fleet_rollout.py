"""A fleet: one ``DatabaseMigrationSet`` over 500 SQLite databases, rolled out for real.

On a local control plane (``localkube``, its API server's audit log on, as in
``operator_burst.py``), with the CRDs installed, the example shop's revisions
in a ConfigMap and ``--targets`` Secrets labelled ``tenant=yes`` (each a SQLite
file's URL), the operator runs as its own process (``revisor-operator -n NS``)
and the bench creates one set with ``maxParallel`` N (one wave), then waits for
``Succeeded``. Every child's Job runs the real engine (a process each, on the
process-kubelet) against its own database. Each ``--parallel`` value is a run
of its own: a fresh namespace, fresh databases, a fresh operator process.

Measured, per run:

- wall time from the set's creation to Succeeded, and targets per minute;
- the most Jobs of the set alive at once (a watch of its Jobs: alive from
  creation until Complete, Failed or deleted) against maxParallel;
- the operator's memory: VmRSS before the set, VmHWM (peak) at the end, and
  what that is per target; its CPU time;
- the operator's API requests from the set's creation to Succeeded (the audit
  log, by its own user), per target, by sender and kind;
- that every database is at the head afterwards, with one run recorded.

Results go to ``bench/results/fleet_rollout.json``.

    PYTHONPATH=tools python bench/fleet_rollout.py [--targets 500] [--parallel 10 25]
        [--resync-seconds 30] [--timeout 1800]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import benchlib
from benchlib import BIN, REPO
from operator_burst import (
    CLIENT_USER,
    OPERATOR_USER,
    Audit,
    Clients,
    Operator,
    free_port,
    request_breakdown,
    sampled_once_live,
    start_cluster,
    user_kubeconfig,
)

sys.path.insert(0, str(REPO / "tools"))

from kubernetes import client, watch

GROUP, VERSION = "revisor.dev", "v1alpha1"
CRDS = sorted((REPO / "manifests" / "crd").glob("*.yaml"))
SHOP_VERSIONS = REPO / "examples" / "shop" / "migrations" / "versions"
HEAD = "3c9a1f0b2e44"


def install_crds(kubectl: Path, kubeconfig: Path, clients: Clients) -> None:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    for crd in CRDS:
        done = subprocess.run(
            [str(kubectl), "apply", "-f", str(crd)],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode:
            raise SystemExit(f"kubectl apply -f {crd} failed: {done.stderr}")
    extensions = client.ApiextensionsV1Api(clients.api)
    for name in ("databasemigrations", "databasemigrationsets"):
        deadline = time.monotonic() + 60
        while True:
            crd = extensions.read_custom_resource_definition(f"{name}.{GROUP}")
            conditions = (crd.status.conditions if crd.status else None) or []
            if any(c.type == "Established" and c.status == "True" for c in conditions):
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"CRD {name} was not Established within 60 s")
            time.sleep(0.2)


def prepare(clients: Clients, namespace: str, dbs: Path, targets: int, threads: int) -> list[str]:
    """The namespace, the revisions' ConfigMap and one labelled Secret per tenant."""
    clients.core.create_namespace({"metadata": {"name": namespace}})
    data = {p.name: p.read_text() for p in sorted(SHOP_VERSIONS.glob("*.py"))}
    clients.core.create_namespaced_config_map(
        namespace,
        {
            "metadata": {"name": "shop-migrations", "labels": {"revisor.dev/scripts": "true"}},
            "data": data,
        },
    )
    names = [f"t{i:04d}" for i in range(1, targets + 1)]

    def secret(name: str) -> None:
        clients.core.create_namespaced_secret(
            namespace,
            {
                "metadata": {"name": name, "labels": {"tenant": "yes"}},
                "stringData": {"url": f"sqlite:///{dbs / name}.db"},
            },
        )

    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(secret, names))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(client.ApiException):
            clients.core.read_namespaced_service_account("default", namespace)
            return names
        time.sleep(0.2)
    raise SystemExit(f"no default ServiceAccount in {namespace}")


def the_set(parallel: int) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "DatabaseMigrationSet",
        "metadata": {"name": "fleet"},
        "spec": {
            "template": {"source": {"configMap": {"name": "shop-migrations"}}, "target": "head"},
            "targets": {"secretSelector": {"matchLabels": {"tenant": "yes"}}},
            "maxParallel": parallel,
        },
    }


@dataclass
class JobWatch:
    """The set's Jobs through a watch: how many are alive at once, at most."""

    api: client.ApiClient
    namespace: str
    alive: set[str] = field(default_factory=set)
    seen: set[str] = field(default_factory=set)
    most: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _watch: watch.Watch = field(default_factory=watch.Watch)

    def start(self) -> None:
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        batch = client.BatchV1Api(self.api)
        version = None
        while not self._stop.is_set():
            try:
                for event in self._watch.stream(
                    batch.list_namespaced_job,
                    self.namespace,
                    label_selector="revisor.dev/set=fleet",
                    resource_version=version,
                    timeout_seconds=300,
                ):
                    job = event["object"]
                    version = job.metadata.resource_version
                    conditions = (job.status.conditions if job.status else None) or []
                    done = any(
                        c.type in ("Complete", "Failed") and c.status == "True" for c in conditions
                    )
                    self.seen.add(job.metadata.name)
                    if event["type"] == "DELETED" or done:
                        self.alive.discard(job.metadata.name)
                    else:
                        self.alive.add(job.metadata.name)
                    self.most = max(self.most, len(self.alive))
            except Exception:
                time.sleep(0.2)

    def stop(self) -> None:
        self._stop.set()
        self._watch.stop()


def start_operator(kubeconfig: Path, work: Path, namespace: str, resync: float) -> Operator:
    metrics_port, liveness_port = free_port(), free_port()
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "REVISOR_RUNNER_IMAGE": "revisor:bench",
        "REVISOR_RESYNC_SECONDS": str(resync),
        "REVISOR_LOG_FORMAT": "json",
    }
    liveness = f"http://127.0.0.1:{liveness_port}/healthz"
    log = work / f"operator-{namespace}.log"
    argv = [
        str(BIN / "revisor-operator"),
        "-n",
        namespace,
        "--metrics-port",
        str(metrics_port),
        "--liveness",
        liveness,
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    return sampled_once_live(Operator(process=process, log=log, liveness=liveness))


def read_set(clients: Clients, namespace: str) -> dict[str, Any]:
    response = clients.custom.get_namespaced_custom_object(
        GROUP, VERSION, namespace, "databasemigrationsets", "fleet", _preload_content=False
    )
    found: dict[str, Any] = json.loads(response.data)
    return found


def one_run(  # noqa: PLR0915 - one run, measured start to end
    opts: argparse.Namespace,
    work: Path,
    clients: Clients,
    operator_config: Path,
    audit: Audit,
    *,
    parallel: int,
) -> dict[str, Any]:
    namespace = f"fleet-p{parallel}"
    dbs = work / f"dbs-{namespace}"
    dbs.mkdir(mode=0o777)
    dbs.chmod(0o777)
    print(f"[maxParallel {parallel}] {opts.targets} tenants in {namespace} ...")
    names = prepare(clients, namespace, dbs, opts.targets, opts.threads)
    operator = start_operator(operator_config, work, namespace, opts.resync_seconds)
    jobs = JobWatch(clients.api, namespace)
    progress: list[tuple[float, int]] = []
    try:
        time.sleep(2.0)
        rss_before, _, cpu_before = operator.read()
        jobs.start()
        started = time.time()
        clients.custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, "databasemigrationsets", the_set(parallel)
        )
        while True:
            operator.check_alive()
            body = read_set(clients, namespace)
            status = body.get("status") or {}
            ready = int((status.get("counts") or {}).get("ready") or 0)
            if not progress or progress[-1][1] != ready:
                progress.append((round(time.time() - started, 2), ready))
                if ready % 50 == 0 or ready == opts.targets:
                    print(
                        f"  {ready}/{opts.targets} Ready after {time.time() - started:.0f}s, "
                        f"{len(jobs.alive)} Jobs alive (most {jobs.most})"
                    )
            if status.get("phase") in ("Succeeded", "Halted", "Failed"):
                break
            if time.time() - started > opts.timeout:
                raise SystemExit(f"the rollout took more than {opts.timeout}s: {status}")
            time.sleep(0.5)
        finished = time.time()
        rss_after, hwm, cpu_after = operator.read()
        if status["phase"] != "Succeeded":
            raise SystemExit(f"the rollout ended {status['phase']}: {status.get('conditions')}")
        time.sleep(1.0)
        audit.refresh()
        requests = request_breakdown(audit, started, finished)
    finally:
        jobs.stop()
        operator.stop()
    wall = finished - started
    at_head = 0
    runs = 0
    for name in names:
        with contextlib.closing(sqlite3.connect(dbs / f"{name}.db")) as db:
            (version,) = db.execute("SELECT version_num FROM alembic_version").fetchone()
            at_head += version == HEAD
            (count,) = db.execute(
                "SELECT count(*) FROM revisor_history WHERE kind = 'run'"
            ).fetchone()
            runs += count
    samples = operator.between(started, finished)
    peak = max((s[1] for s in samples), default=rss_after)
    result = {
        "targets": opts.targets,
        "max_parallel": parallel,
        "wall_seconds": round(wall, 1),
        "targets_per_minute": round(opts.targets / wall * 60, 1),
        "max_jobs_alive": jobs.most,
        "jobs_created": len(jobs.seen),
        "operator_rss_mib_before": round(rss_before / 1024, 1),
        "operator_rss_mib_peak_during": round(peak / 1024, 1),
        "operator_hwm_mib": round(hwm / 1024, 1),
        "operator_rss_mib_after": round(rss_after / 1024, 1),
        "operator_kib_per_target": round((peak - rss_before) / opts.targets, 1),
        "operator_cpu_seconds": round(cpu_after - cpu_before, 1),
        "api_requests": requests["total"],
        "api_requests_per_target": round(requests["total"] / opts.targets, 1),
        "requests": requests,
        "databases_at_head": at_head,
        "runs_recorded": runs,
        "ready_over_time_seconds_count": progress,
        "kubectl_get_dbmset": kubectl_get(opts, namespace),
    }
    print(
        f"  maxParallel {parallel}: {wall:.0f}s, {result['targets_per_minute']} targets/min, "
        f"at most {jobs.most} Jobs alive, operator RSS {result['operator_rss_mib_before']} -> "
        f"peak {result['operator_rss_mib_peak_during']} MiB "
        f"({result['operator_kib_per_target']} KiB/target), "
        f"{result['api_requests_per_target']} API requests/target; "
        f"{at_head}/{opts.targets} at head, {runs} runs recorded"
    )
    return result


def kubectl_get(opts: argparse.Namespace, namespace: str) -> str:
    done = subprocess.run(
        [opts.kubectl, "--kubeconfig", opts.client_config, "-n", namespace, "get", "dbmset"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout + done.stderr


def run(opts: argparse.Namespace, work: Path, report: dict[str, Any]) -> None:
    audit_log = work / "audit.log"
    print("starting the local control plane (audit log on) ...")
    cluster = start_cluster(work / "cluster", audit_log)
    try:
        report["cluster_startup_seconds"] = round(cluster.startup_seconds, 1)
        client_config = user_kubeconfig(cluster, CLIENT_USER, work / "client.kubeconfig")
        operator_config = user_kubeconfig(cluster, OPERATOR_USER, work / "operator.kubeconfig")
        opts.kubectl = str(cluster.control_plane.binaries.kubectl)
        opts.client_config = str(client_config)
        clients = Clients(client_config)
        install_crds(cluster.control_plane.binaries.kubectl, client_config, clients)
        audit = Audit(audit_log)
        report["runs"] = [
            one_run(opts, work, clients, operator_config, audit, parallel=parallel)
            for parallel in opts.parallel
        ]
    finally:
        cluster.stop()


def summarise(report: dict[str, Any]) -> None:
    print(
        f"\n{report['runs'][0]['targets']} SQLite targets, one wave; load {report['loadavg_before']}"
    )
    print(
        "| maxParallel | wall | targets/min | most Jobs alive | operator RSS before → peak "
        "(per target) | API requests/target |"
    )
    print("|---|---|---|---|---|---|")
    for r in report["runs"]:
        print(
            f"| {r['max_parallel']} | {r['wall_seconds']} s | {r['targets_per_minute']} | "
            f"{r['max_jobs_alive']} | {r['operator_rss_mib_before']} → "
            f"{r['operator_rss_mib_peak_during']} MiB ({r['operator_kib_per_target']} KiB) | "
            f"{r['api_requests_per_target']} |"
        )
    for r in report["runs"]:
        print(
            f"\n$ kubectl get dbmset   # maxParallel {r['max_parallel']}\n{r['kubectl_get_dbmset']}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=500)
    parser.add_argument("--parallel", type=int, nargs="+", default=[10, 25])
    parser.add_argument("--resync-seconds", type=float, default=30.0)
    parser.add_argument("--threads", type=int, default=8, help="threads creating Secrets")
    parser.add_argument("--timeout", type=float, default=1800.0, help="per run, in seconds")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    parser.add_argument("--out", help="results file (default bench/results/fleet_rollout.json)")
    opts = parser.parse_args()
    report = benchlib.header(sys.argv)
    report.update(targets=opts.targets, parallel=opts.parallel, resync_seconds=opts.resync_seconds)
    work = Path(tempfile.mkdtemp(prefix="revisor-bench-fleet-"))
    work.chmod(0o755)
    try:
        run(opts, work, report)
    finally:
        if opts.keep:
            print(f"work directory kept: {work}")
        else:
            subprocess.run(["rm", "-rf", str(work)], check=False)
    path = benchlib.write("fleet_rollout", report, opts.out)
    summarise(report)
    print(f"\n{path}")


if __name__ == "__main__":
    main()
