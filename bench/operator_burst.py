"""The operator under a burst: 200 ``DatabaseMigration``s at once, then 1,000 in all.

On a local control plane (``localkube``: etcd, kube-apiserver,
controller-manager, scheduler, process-kubelet), with the CRD installed, a
ConfigMap of revisions (the example shop's) and a Secret, the operator runs
as its own process (``revisor-operator -n NS``, a black box) and the bench:

1. creates one resource and waits for its Job (warm-up; it stays, so the
   levels below are 201 and 1,000 resources);
2. creates ``--burst`` (200) resources as fast as it can from ``--threads``
   threads, and waits until each has its Job;
3. waits one resync interval, then watches the operator idle for
   ``--idle-intervals`` resync intervals;
4. creates resources up to ``--total`` (1,000), waits for their Jobs, and
   idles again;
5. with ``--soak-minutes N``, keeps sampling RSS every 30 s for N minutes.

Every resource sets ``spec.runner.nodeSelector: {bench: nowhere}``, so its
Job's pod never schedules: no engine runs, and what is measured is the
operator's own work.

Measured, per phase:

- latency, resource created -> its Job created, p50/p95/max. Exactly, from
  the API server's audit log (enabled for this cluster only): the
  ``stageTimestamp`` of the bench's create of the resource to that of the
  operator's create of the Job (microseconds). Also from the objects'
  ``creationTimestamp`` (whole seconds, so +-1 s);
- the operator's memory: VmRSS and VmHWM from ``/proc/PID/status``, sampled
  every 0.5 s, and its CPU time (``/proc/PID/stat``);
- the operator's API requests: it authenticates with its own client
  certificate (user ``revisor-bench-operator``, in ``system:masters``), and
  the audit log records every request of that user with verb, resource and
  user agent (``kopf/...`` for kopf's own watches and patches, the Kubernetes
  client for Revisor's reconcile): requests per resource in a burst, and per
  resource per resync interval when idle. The operator's reconcile passes come
  from its ``revisor_reconcile_passes_total{trigger}`` counter (read every
  0.5 s from its metrics port), by what started them;
- where the machine's two cores went: the CPU seconds of each control-plane
  process, the operator and the bench itself (``cores_busy`` near 2: the
  machine, not the operator alone, set the pace).

``--profile`` runs the operator under cProfile in every thread (CPU time of
each thread) and writes, per phase, its busiest functions to
``bench/results/operator_burst_profile.json``; ``--tracemalloc`` writes the
Python allocations each resource adds to ``operator_burst_tracemalloc.json``.
Both slow the operator: use them for shares, not totals.

Results go to ``bench/results/operator_burst.json``.

    PYTHONPATH=tools python bench/operator_burst.py [--burst 200] [--total 1000]
        [--resync-seconds 10] [--threads 8] [--idle-intervals 2] [--soak-minutes 0]
        [--profile | --tracemalloc]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import json
import marshal
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import benchlib
from benchlib import BIN, REPO

sys.path.insert(0, str(REPO / "tools"))

from kubernetes import client, config
from localkube import LocalCluster

GROUP, VERSION, PLURAL = "revisor.dev", "v1alpha1", "databasemigrations"
MIGRATION_LABEL = "revisor.dev/migration"
NAMESPACE = "bench"
OPERATOR_USER = "revisor-bench-operator"
CLIENT_USER = "revisor-bench-client"
CRD = REPO / "manifests" / "crd" / "revisor.dev_databasemigrations.yaml"
SHOP_VERSIONS = REPO / "examples" / "shop" / "migrations" / "versions"

AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        # Creates with their bodies: the Job's labels name its resource.
        {"level": "Request", "users": [OPERATOR_USER], "verbs": ["create"],
         "resources": [{"group": "batch", "resources": ["jobs"]}]},
        {"level": "Request", "users": [CLIENT_USER], "verbs": ["create"],
         "resources": [{"group": GROUP, "resources": [PLURAL]}]},
        {"level": "Metadata", "users": [OPERATOR_USER]},
        {"level": "None"},
    ],
}  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pct(values: list[float], p: float) -> float:
    """The ``p``-th percentile (nearest rank)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.4999)))
    return ordered[rank - 1]


def distribution(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"count": 0}
    return {
        "count": len(values),
        "p50": round(pct(values, 50), 3),
        "p95": round(pct(values, 95), 3),
        "max": round(max(values), 3),
        "min": round(min(values), 3),
        "mean": round(statistics.fmean(values), 3),
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (0 once it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    utime, stime = (int(x) for x in stat[stat.rfind(")") + 2 :].split()[11:13])
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def parse_time(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# -- the cluster ------------------------------------------------------------------------


def start_cluster(state: Path, audit_log: Path) -> LocalCluster:
    """localkube's cluster, its API server with an audit log (a flag localkube does not set)."""
    policy = state / "audit-policy.json"
    state.mkdir(parents=True, exist_ok=True)
    policy.write_text(json.dumps(AUDIT_POLICY))
    cluster = LocalCluster(state)
    plane = cluster.control_plane
    spawn = plane._spawn

    def spawn_audited(name: str, argv: list[str]) -> None:
        if name == "kube-apiserver":
            argv = [*argv, f"--audit-policy-file={policy}", f"--audit-log-path={audit_log}",
                    "--audit-log-format=json", "--audit-log-maxsize=0"]  # fmt: skip
        spawn(name, argv)

    plane._spawn = spawn_audited  # type: ignore[method-assign]
    cluster.start()
    return cluster


def user_kubeconfig(cluster: LocalCluster, user: str, path: Path) -> Path:
    """A kubeconfig for ``user`` (in system:masters), signed by the cluster's CA."""
    pki = cluster.control_plane.pki_dir
    key, csr, crt, ext = (path.with_suffix(s) for s in (".key", ".csr", ".crt", ".ext"))
    ext.write_text("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                   "extendedKeyUsage=clientAuth\n")  # fmt: skip

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(key))
    openssl(
        "req", "-new", "-key", str(key), "-subj", f"/O=system:masters/CN={user}", "-out", str(csr)
    )
    openssl("x509", "-req", "-in", str(csr), "-CA", str(pki / "ca.crt"), "-CAkey", str(pki / "ca.key"),
            "-CAcreateserial", "-days", "2", "-sha256", "-extfile", str(ext), "-out", str(crt))  # fmt: skip

    def b64(file: Path) -> str:
        return base64.b64encode(file.read_bytes()).decode()

    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "bench", "cluster": {
            "server": cluster.server, "certificate-authority-data": b64(pki / "ca.crt")}}],
        "users": [{"name": user, "user": {
            "client-certificate-data": b64(crt), "client-key-data": b64(key)}}],
        "contexts": [{"name": "bench", "context": {
            "cluster": "bench", "user": user, "namespace": NAMESPACE}}],
        "current-context": "bench",
    }  # fmt: skip
    path.write_text(json.dumps(kubeconfig))
    path.chmod(0o600)
    return path


class Clients(threading.local):
    """One API client per thread (the creating threads do not share a connection pool)."""

    def __init__(self, kubeconfig: Path) -> None:
        self.api = config.new_client_from_config(config_file=str(kubeconfig))
        self.api.user_agent = "revisor-bench"
        self.custom = client.CustomObjectsApi(self.api)
        self.batch = client.BatchV1Api(self.api)
        self.core = client.CoreV1Api(self.api)


def install(kubectl: Path, kubeconfig: Path, clients: Clients) -> None:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    applied = subprocess.run(
        [str(kubectl), "apply", "-f", str(CRD)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if applied.returncode:
        raise SystemExit(f"kubectl apply -f {CRD} failed: {applied.stderr}")
    extensions = client.ApiextensionsV1Api(clients.api)
    deadline = time.monotonic() + 60
    while True:
        crd = extensions.read_custom_resource_definition(f"{PLURAL}.{GROUP}")
        conditions = (crd.status.conditions if crd.status else None) or []
        if any(c.type == "Established" and c.status == "True" for c in conditions):
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"the CRD was not Established within 60 s: {conditions}")
        time.sleep(0.2)
    clients.core.create_namespace({"metadata": {"name": NAMESPACE}})
    data = {p.name: p.read_text() for p in sorted(SHOP_VERSIONS.glob("*.py"))}
    clients.core.create_namespaced_config_map(
        NAMESPACE, {"metadata": {"name": "app-migrations"}, "data": data}
    )
    clients.core.create_namespaced_secret(
        NAMESPACE,
        {"metadata": {"name": "app-db"}, "stringData": {"url": "sqlite:////tmp/bench-nowhere.db"}},
    )
    # The default ServiceAccount the Jobs' pods name; the token controller makes it.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(client.ApiException):
            clients.core.read_namespaced_service_account("default", NAMESPACE)
            return
        time.sleep(0.2)


def migration(name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "DatabaseMigration",
        "metadata": {"name": name},
        "spec": {
            "database": {"urlSecretRef": {"name": "app-db", "key": "url"}},
            "source": {"configMap": {"name": "app-migrations"}},
            "target": "head",
            # No node has this label: the Job's pod stays Pending, no engine runs.
            "runner": {"nodeSelector": {"bench": "nowhere"}},
        },
    }


def create_all(clients: Clients, names: list[str], threads: int) -> dict[str, float]:
    """Create the resources from ``threads`` threads; client-side time each create returned."""

    def create(name: str) -> tuple[str, float]:
        clients.custom.create_namespaced_custom_object(
            GROUP, VERSION, NAMESPACE, PLURAL, migration(name)
        )
        return name, time.time()

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return dict(pool.map(create, names))


def list_raw(clients: Clients, what: str) -> list[dict[str, Any]]:
    """Jobs (with the migration label) or DatabaseMigrations, as plain JSON (fast to parse)."""
    if what == "jobs":
        response = clients.batch.list_namespaced_job(
            NAMESPACE, label_selector=MIGRATION_LABEL, _preload_content=False
        )
    else:
        response = clients.custom.list_namespaced_custom_object(
            GROUP, VERSION, NAMESPACE, PLURAL, _preload_content=False
        )
    items: list[dict[str, Any]] = json.loads(response.data)["items"]
    return items


def wait_for_jobs(clients: Clients, names: set[str], timeout: float) -> dict[str, dict[str, Any]]:
    """Until every resource in ``names`` has a Job (or timeout): migration name -> its Job."""
    started = time.monotonic()
    checked = started
    while True:
        jobs = {j["metadata"]["labels"][MIGRATION_LABEL]: j for j in list_raw(clients, "jobs")}
        if names <= jobs.keys() or time.monotonic() > started + timeout:
            return jobs
        if time.monotonic() - checked > 5:
            # A resource the operator refused never gets a Job: say why instead of waiting.
            checked = time.monotonic()
            for dbm in list_raw(clients, "dbm"):
                status = dbm.get("status") or {}
                if dbm["metadata"]["name"] in names and status.get("phase") == "Failed":
                    ready = [c for c in status.get("conditions") or [] if c.get("type") == "Ready"]
                    raise SystemExit(
                        f"the operator failed dbm/{dbm['metadata']['name']} instead of creating "
                        f"its Job: {ready[0].get('message') if ready else status}"
                    )
        time.sleep(1.0)


def package_of(filename: str) -> str:
    """``.../site-packages/kopf/x.py`` -> ``kopf``; the standard library's -> ``stdlib json``."""
    parts = Path(filename).parts
    if "site-packages" in parts:
        return parts[parts.index("site-packages") + 1].removesuffix(".py")
    if "revisor_operator" in parts:
        return "revisor_operator"
    if "revisor" in parts:
        return "revisor"
    name = parts[-1] if parts else filename
    if (
        len(parts) >= 2
        and parts[-2] not in {"lib", "python3.11"}
        and not parts[-2].startswith("python")
    ):
        name = parts[-2]
    return f"stdlib {name.removesuffix('.py')}"


# -- the operator -------------------------------------------------------------------------


@dataclass
class Operator:
    process: subprocess.Popen[bytes]
    log: Path
    liveness: str
    metrics: str = ""
    samples: list[tuple[float, int, int, float]] = field(default_factory=list)
    #: (time, reconcile passes so far by trigger), from the operator's /metrics.
    pass_samples: list[tuple[float, dict[str, float]]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    @property
    def pid(self) -> int:
        return self.process.pid

    def read(self) -> tuple[int, int, float]:
        """VmRSS KiB, VmHWM KiB, CPU seconds (user + system)."""
        status = Path(f"/proc/{self.pid}/status").read_text()
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        rss, hwm = (int(fields[k].split()[0]) for k in ("VmRSS", "VmHWM"))
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        utime, stime = (int(x) for x in stat[stat.rfind(")") + 2 :].split()[11:13])
        return rss, hwm, (utime + stime) / os.sysconf("SC_CLK_TCK")

    def read_passes(self) -> dict[str, float]:
        """``revisor_reconcile_passes_total`` by trigger, from the operator's /metrics."""
        with urllib.request.urlopen(self.metrics, timeout=5) as response:
            text = response.read().decode()
        passes: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith('revisor_reconcile_passes_total{trigger="'):
                labels, value = line.rsplit(" ", 1)
                passes[labels.split('"')[1]] = float(value)
        return passes

    def sample_forever(self, every: float = 0.5) -> None:
        while not self._stop.is_set() and self.process.poll() is None:
            with contextlib.suppress(OSError, ValueError, KeyError):
                self.samples.append((time.time(), *self.read()))
            if self.metrics:
                with contextlib.suppress(OSError, ValueError):
                    self.pass_samples.append((time.time(), self.read_passes()))
            self._stop.wait(every)

    def passes_between(self, start: float, end: float) -> dict[str, float] | None:
        """Reconcile passes in [start, end] by trigger (None: the operator has no counter)."""
        before = [p for t, p in self.pass_samples if t <= start] or self.pass_samples[:1]
        after = [p for t, p in self.pass_samples if t <= end]
        if not before or not after or not after[-1]:
            return None
        first, last = before[-1], after[-1]
        return {k: round(v - first.get(k, 0.0)) for k, v in last.items() if v > first.get(k, 0.0)}

    def between(self, start: float, end: float) -> list[tuple[float, int, int, float]]:
        return [s for s in self.samples if start <= s[0] <= end]

    def allocations(self, work: Path, number: int) -> dict[str, Any]:
        """Ask the ``--tracemalloc`` wrapper for snapshot ``number``; bytes by package."""
        self.process.send_signal(signal.SIGUSR1)
        path = work / f"tracemalloc.{number}"
        deadline = time.monotonic() + 300
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        data = json.loads(path.read_text())
        by_package: Counter[str] = Counter()
        for filename, size in data["by_file"]:
            by_package[f"allocated in {package_of(filename)}"] += size
        for site, size in data["by_owner"]:
            by_package[f"owned by {package_of(site.rsplit(':', 1)[0])}"] += size
        return {
            "traced_bytes": data["traced"][0],
            "by_package": dict(by_package),
            "by_file": dict(data["by_file"][:40]),
            "by_owner": dict(data["by_owner"][:60]),
        }

    def profile(self, work: Path, number: int) -> dict[str, dict[Any, Any]]:
        """Ask the ``--profile`` wrapper for dump ``number``: thread -> its cumulative stats."""
        self.process.send_signal(signal.SIGUSR2)
        done = work / f"profile.{number}.done"
        deadline = time.monotonic() + 120
        while not done.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        prefix = f"profile.{number}."
        return {
            path.name.removeprefix(prefix): marshal.loads(path.read_bytes())
            for path in work.glob(f"{prefix}*")
            if not path.name.endswith((".done", ".tmp"))
        }

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            tail = self.log.read_text(errors="replace").splitlines()[-30:]
            raise SystemExit(
                f"the operator exited ({self.process.returncode}):\n" + "\n".join(tail)
            )

    def stop(self) -> None:
        self._stop.set()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# ``--tracemalloc``: the operator's own command, run by this wrapper, which traces allocations
# ($REVISOR_BENCH_TRACEMALLOC_FRAMES deep, 6 by default) from the first import and, on SIGUSR1, writes them to
# $REVISOR_BENCH_TRACEMALLOC.N: live bytes by allocation site, and by the innermost frame
# in the operator's code or a library it calls (json.loads is nobody's owner: who called it is).
TRACEMALLOC_WRAPPER = """
import json, os, runpy, signal, sys, sysconfig, tracemalloc
tracemalloc.start(int(os.environ.get("REVISOR_BENCH_TRACEMALLOC_FRAMES") or 6))
STDLIB = sysconfig.get_paths()["stdlib"]
dumps = 0
def owner(traceback):
    for frame in reversed(traceback):  # innermost first
        if not frame.filename.startswith(STDLIB) and not frame.filename.startswith("<"):
            return f"{frame.filename}:{frame.lineno}"
    return f"{traceback[-1].filename}:{traceback[-1].lineno}"
def dump(signum, frame):
    global dumps
    dumps += 1
    out = f"{os.environ['REVISOR_BENCH_TRACEMALLOC']}.{dumps}"
    snapshot = tracemalloc.take_snapshot()
    by_file = [[s.traceback[0].filename, s.size] for s in snapshot.statistics("filename")]
    owners = {}
    for s in snapshot.statistics("traceback"):
        key = owner(s.traceback)
        owners[key] = owners.get(key, 0) + s.size
    with open(out + ".tmp", "w") as f:
        json.dump({"traced": tracemalloc.get_traced_memory(), "by_file": by_file,
                   "by_owner": sorted(owners.items(), key=lambda kv: -kv[1])}, f)
    os.replace(out + ".tmp", out)
signal.signal(signal.SIGUSR1, dump)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


# ``--profile``: the operator's own command, run under cProfile in every thread (the event
# loop's and each executor thread's, each its own profiler, counting the thread's CPU time:
# waits for the API server count for nothing, what competes for the cores does). On SIGUSR2 it
# writes each thread's cumulative statistics (``pstats`` form, marshalled) to
# $REVISOR_BENCH_PROFILE.N.THREAD; the bench subtracts consecutive dumps to get each phase's.
PROFILE_WRAPPER = """
import cProfile, marshal, os, runpy, signal, sys, threading, time
profilers = {}
def start(*_):
    name = threading.current_thread().name
    profiler = cProfile.Profile(time.thread_time)
    profilers[f"{name}:{threading.get_ident()}"] = profiler
    profiler.enable()
threading.setprofile(start)
start()
dumps = 0
def dump(signum, frame):
    global dumps
    dumps += 1
    base = f"{os.environ['REVISOR_BENCH_PROFILE']}.{dumps}"
    for key, profiler in list(profilers.items()):
        profiler.snapshot_stats()
        with open(f"{base}.{key}.tmp", "wb") as f:
            marshal.dump(profiler.stats, f)
        os.replace(f"{base}.{key}.tmp", f"{base}.{key}")
    open(f"{base}.done", "w").close()
signal.signal(signal.SIGUSR2, dump)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def start_operator(
    kubeconfig: Path, work: Path, resync: float, *, tracemalloc: bool = False, profile: bool = False
) -> Operator:
    metrics_port, liveness_port = free_port(), free_port()
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "REVISOR_RUNNER_IMAGE": "revisor:bench",
        "REVISOR_RESYNC_SECONDS": str(resync),
        "REVISOR_LOG_FORMAT": "json",
        # The operator's policy allows no scheduling fields unless told: allow the one used here.
        "REVISOR_ALLOWED_NODE_SELECTOR_KEYS": "bench",
    }
    liveness = f"http://127.0.0.1:{liveness_port}/healthz"
    log = work / "operator.log"
    argv = [str(BIN / "revisor-operator"), "-n", NAMESPACE,
            "--metrics-port", str(metrics_port), "--liveness", liveness]  # fmt: skip
    if tracemalloc:
        argv = [sys.executable, "-c", TRACEMALLOC_WRAPPER, *argv]
        env["REVISOR_BENCH_TRACEMALLOC"] = str(work / "tracemalloc")
    elif profile:
        argv = [sys.executable, "-c", PROFILE_WRAPPER, *argv]
        env["REVISOR_BENCH_PROFILE"] = str(work / "profile")
    with log.open("wb") as out:
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    operator = Operator(
        process=process,
        log=log,
        liveness=liveness,
        metrics=f"http://127.0.0.1:{metrics_port}/metrics",
    )
    return sampled_once_live(operator)


def sampled_once_live(operator: Operator) -> Operator:
    """``operator``, sampled from now on, once its liveness endpoint answers (a minute at most)."""
    threading.Thread(target=operator.sample_forever, daemon=True).start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        operator.check_alive()
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(operator.liveness, timeout=2) as response,
        ):
            if response.status == 200:
                return operator
        time.sleep(0.2)
    raise SystemExit(f"the operator's liveness endpoint never answered; log: {operator.log}")


# -- the audit log ------------------------------------------------------------------------


@dataclass
class Audit:
    path: Path
    events: list[dict[str, Any]] = field(default_factory=list)
    _offset: int = 0

    def refresh(self) -> None:
        with self.path.open("rb") as f:
            f.seek(self._offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self._offset += end
        for line in data[:end].splitlines():
            if line.strip():
                self.events.append(json.loads(line))

    def requests(self, user: str, start: float, end: float) -> Iterator[dict[str, Any]]:
        """One event per request of ``user`` received in [start, end)."""
        for e in self.events:
            if e["user"]["username"] != user:
                continue
            # A watch is counted when it starts streaming, anything else when it completes.
            wanted = "ResponseStarted" if e["verb"] == "watch" else "ResponseComplete"
            if e["stage"] != wanted:
                continue
            if start <= parse_time(e["requestReceivedTimestamp"]) < end:
                yield e


def request_breakdown(
    audit: Audit, start: float, end: float, passes: dict[str, float] | None = None
) -> dict[str, Any]:
    """The operator's requests in a window, by who sent them and what they were.

    ``passes``: the operator's reconcile passes in the window, by trigger (else they
    are counted as its GETs of the resource, which each pass of an older operator
    began with).
    """
    by_kind: Counter[str] = Counter()
    by_agent: Counter[str] = Counter()
    codes: Counter[str] = Counter()
    server_ms: dict[str, list[float]] = {}
    gets = 0
    for e in audit.requests(OPERATOR_USER, start, end):
        ref = e.get("objectRef") or {}
        resource = ref.get("resource", e.get("requestURI", "?"))
        if ref.get("subresource"):
            resource += "/" + ref["subresource"]
        agent = "kopf" if e.get("userAgent", "").startswith("kopf/") else "revisor"
        kind = f"{agent} {e['verb']} {resource}"
        by_kind[kind] += 1
        if e["verb"] != "watch":
            took = parse_time(e["stageTimestamp"]) - parse_time(e["requestReceivedTimestamp"])
            server_ms.setdefault(kind, []).append(took * 1000)
        by_agent[agent] += 1
        codes[str((e.get("responseStatus") or {}).get("code", "?"))] += 1
        if agent == "revisor" and e["verb"] == "get" and resource == PLURAL:
            gets += 1
    total = sum(by_agent.values())
    count = round(sum(passes.values())) if passes is not None else gets
    return {
        "seconds": round(end - start, 1),
        "total": total,
        "by_sender": dict(by_agent),
        "reconcile_passes": count,
        "reconcile_passes_by_trigger": passes,
        "requests_per_pass": round(total / count, 2) if count else None,
        "revisor_requests_per_pass": round(by_agent["revisor"] / count, 2) if count else None,
        "response_codes": dict(codes),
        "by_request": dict(by_kind.most_common()),
        # How long the API server took to answer (received -> response sent), per request kind;
        # their sum over the window is the operator's average number of requests in flight.
        "server_ms_p50_p95": {
            kind: [round(pct(ms, 50), 1), round(pct(ms, 95), 1)] for kind, ms in server_ms.items()
        },
        "server_seconds_per_second": round(
            sum(sum(ms) for ms in server_ms.values()) / 1000 / max(end - start, 1e-9), 2
        ),
    }


def creations(audit: Audit, names: set[str]) -> dict[str, tuple[float, float]]:
    """Migration -> when it was created (by the bench) and its Job (by the operator)."""
    created: dict[str, float] = {}
    job_created: dict[str, float] = {}
    for e in audit.events:
        if e["stage"] != "ResponseComplete" or e["verb"] != "create":
            continue
        if (e.get("responseStatus") or {}).get("code") != 201:
            continue
        body = e.get("requestObject") or {}
        meta = body.get("metadata") or {}
        at = parse_time(e["stageTimestamp"])
        if e["user"]["username"] == CLIENT_USER and meta.get("name") in names:
            created[meta["name"]] = at
        elif e["user"]["username"] == OPERATOR_USER and body.get("kind") == "Job":
            owner = (meta.get("labels") or {}).get(MIGRATION_LABEL)
            if owner in names:
                job_created.setdefault(owner, at)
    return {n: (created[n], job_created[n]) for n in names if n in created and n in job_created}


# -- the phases ---------------------------------------------------------------------------


@dataclass
class Bench:
    opts: argparse.Namespace
    clients: Clients
    operator: Operator
    audit: Audit
    phases: dict[str, Any] = field(default_factory=dict)
    existing: list[str] = field(default_factory=list)
    work: Path | None = None
    #: The cluster's processes (name, pid): where the machine's CPU goes in each phase.
    cluster: list[tuple[str, int]] = field(default_factory=list)
    #: ``--profile``: (phase, the wrapper's dump at its end).
    profiles: list[tuple[str, dict[str, dict[Any, Any]]]] = field(default_factory=list)

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far: each cluster process, the operator, this bench."""
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            **{name: cpu_seconds(pid) for name, pid in self.cluster},
            "operator": self.operator.read()[2],
            "bench": usage.ru_utime + usage.ru_stime,
        }

    def cpu_between(self, before: dict[str, float], seconds: float) -> dict[str, Any]:
        """CPU seconds per process since ``before``, and the machine's cores kept busy."""
        after = self.cpu()
        used = {k: round(after[k] - before.get(k, 0.0), 2) for k in after}
        return {
            "by_process": dict(sorted(used.items(), key=lambda kv: -kv[1])),
            "cores_busy": round(sum(used.values()) / max(seconds, 1e-9), 2),
        }

    def mark(self, label: str) -> None:
        """With ``--profile``, the operator's profile at the end of phase ``label``."""
        if self.opts.profile and self.work is not None:
            self.profiles.append((label, self.operator.profile(self.work, len(self.profiles) + 1)))

    def create_phase(self, label: str, names: list[str]) -> dict[str, Any]:
        self.operator.check_alive()
        start = time.time()
        cpu0 = self.operator.read()[2]
        machine0 = self.cpu()
        returned = create_all(self.clients, names, self.opts.threads)
        created_in = time.time() - start
        jobs = wait_for_jobs(self.clients, set(names), self.opts.timeout)
        self.audit.refresh()
        times = creations(self.audit, set(names))
        waits = [job - created for created, job in times.values()]
        # The window ends just after the last Job's create (the wait above polls once a second).
        last_job = max((job for _, job in times.values()), default=time.time())
        end = last_job + 0.5
        cpu = self.operator.read()[2] - cpu0
        machine = self.cpu_between(machine0, time.time() - start)
        self.existing += names
        objects = {o["metadata"]["name"]: o for o in list_raw(self.clients, "dbm")}
        coarse = [
            parse_time(jobs[n]["metadata"]["creationTimestamp"])
            - parse_time(objects[n]["metadata"]["creationTimestamp"])
            for n in names
            if n in jobs and n in objects
        ]
        burst = request_breakdown(self.audit, start, end, self.operator.passes_between(start, end))
        mem = self.operator.between(start, time.time())
        result = {
            "resources_created": len(names),
            "resources_in_namespace": len(self.existing),
            "created_in_seconds": round(created_in, 2),
            "creates_returned_within_seconds": round(
                max(returned.values()) - min(returned.values()), 2
            ),
            "jobs_found": sum(1 for n in names if n in jobs),
            "last_job_after_seconds": round(last_job - start, 2),
            "created_to_job_seconds": distribution(waits),
            "created_to_job_seconds_from_creationTimestamps": distribution(coarse),
            "operator_cpu_seconds": round(cpu, 2),
            "operator_cpu_ms_per_resource": round(cpu / len(names) * 1000, 1),
            "requests": burst,
            "requests_per_resource": round(burst["total"] / len(names), 2),
            "rss_mib_peak_during": round(max((s[1] for s in mem), default=0) / 1024, 1),
            "cpu_seconds": machine,
        }
        self.phases[label] = result
        self.mark(label)
        print(
            f"  {label}: {len(names)} created in {created_in:.1f}s; Jobs for "
            f"{result['jobs_found']}/{len(names)}; created -> Job p50 "
            f"{result['created_to_job_seconds'].get('p50')}s p95 "
            f"{result['created_to_job_seconds'].get('p95')}s max "
            f"{result['created_to_job_seconds'].get('max')}s; "
            f"{result['requests_per_resource']} requests/resource"
        )
        return result

    def idle_phase(self, label: str) -> dict[str, Any]:
        """One resync interval to settle, then ``--idle-intervals`` intervals observed."""
        resync = self.opts.resync_seconds
        self.operator.check_alive()
        time.sleep(resync)
        start = time.time()
        cpu0 = self.operator.read()[2]
        machine0 = self.cpu()
        time.sleep(resync * self.opts.idle_intervals)
        end = time.time()
        cpu = self.operator.read()[2] - cpu0
        machine = self.cpu_between(machine0, end - start)
        self.audit.refresh()
        reqs = request_breakdown(self.audit, start, end, self.operator.passes_between(start, end))
        mem = self.operator.between(start, end)
        n = len(self.existing)
        intervals = (end - start) / resync
        rss = [s[1] for s in mem]
        result = {
            "resources": n,
            "resync_seconds": resync,
            "intervals": round(intervals, 2),
            "rss_mib_median": round(statistics.median(rss) / 1024, 1) if rss else None,
            "rss_mib_max": round(max(rss) / 1024, 1) if rss else None,
            "hwm_mib": round(mem[-1][2] / 1024, 1) if mem else None,
            "operator_cpu_seconds": round(cpu, 2),
            "operator_cpu_share_of_one_core": round(cpu / (end - start), 3),
            "requests": reqs,
            "requests_per_resource_per_resync": round(reqs["total"] / n / intervals, 2),
            "passes_per_resource_per_resync": round(reqs["reconcile_passes"] / n / intervals, 2),
            "cpu_seconds": machine,
        }
        self.phases[label] = result
        self.mark(label)
        print(
            f"  {label}: {n} resources, RSS {result['rss_mib_median']} MiB (HWM "
            f"{result['hwm_mib']}), {result['requests_per_resource_per_resync']} requests and "
            f"{result['passes_per_resource_per_resync']} passes per resource per resync, CPU "
            f"{result['operator_cpu_share_of_one_core']:.0%} of a core"
        )
        return result

    def soak(self, minutes: float) -> dict[str, Any]:
        series = []
        end = time.time() + minutes * 60
        while time.time() < end:
            self.operator.check_alive()
            rss, hwm, cpu = self.operator.read()
            series.append([round(time.time(), 1), rss, hwm, round(cpu, 2)])
            time.sleep(min(30.0, max(0.0, end - time.time())))
        first, last = series[0], series[-1]
        # Least squares over every sample: one noisy sample at either end cannot tilt it.
        fitted = (
            statistics.linear_regression(
                [(s[0] - first[0]) / 60 for s in series], [s[1] for s in series]
            )
            if len(series) > 2
            else None
        )
        slope = (
            fitted.slope
            if fitted is not None
            else (last[1] - first[1]) / max((last[0] - first[0]) / 60, 1e-9)
        )
        result = {
            "minutes": minutes,
            "rss_kib_start": first[1],
            "rss_kib_end": last[1],
            "rss_kib_min": min(s[1] for s in series),
            "rss_kib_max": max(s[1] for s in series),
            "rss_kib_per_minute": round(slope, 1),
            "series_time_rss_kib_hwm_kib_cpu_s": series,
        }
        self.phases["soak"] = result
        print(f"  soak: RSS {first[1] / 1024:.1f} -> {last[1] / 1024:.1f} MiB over {minutes} min")
        return result


def run(opts: argparse.Namespace, work: Path, report: dict[str, Any]) -> None:
    audit_log = work / "audit.log"
    print("starting the local control plane (audit log on) ...")
    cluster = start_cluster(work / "cluster", audit_log)
    operator: Operator | None = None
    try:
        report["cluster_startup_seconds"] = round(cluster.startup_seconds, 1)
        client_config = user_kubeconfig(cluster, CLIENT_USER, work / "client.kubeconfig")
        operator_config = user_kubeconfig(cluster, OPERATOR_USER, work / "operator.kubeconfig")
        clients = Clients(client_config)
        install(cluster.control_plane.binaries.kubectl, client_config, clients)
        operator = start_operator(
            operator_config,
            work,
            opts.resync_seconds,
            tracemalloc=opts.tracemalloc,
            profile=opts.profile,
        )
        time.sleep(1.0)
        rss0, _, cpu0 = operator.read()
        report["operator_started"] = {"rss_mib": round(rss0 / 1024, 1), "cpu_seconds": cpu0}
        print(f"operator running (pid {operator.pid}, RSS {rss0 / 1024:.1f} MiB); warm-up ...")
        bench = Bench(
            opts=opts,
            clients=clients,
            operator=operator,
            audit=Audit(audit_log),
            work=work,
            cluster=[(name, p.pid) for name, p in cluster.control_plane.started],
        )
        bench.create_phase("warmup", ["warmup"])
        time.sleep(2.0)
        report["operator_after_warmup"] = {"rss_mib": round(operator.read()[0] / 1024, 1)}
        burst = [f"m{i:04d}" for i in range(opts.burst)]
        print(f"burst of {opts.burst} ...")
        bench.create_phase("burst", burst)
        bench.idle_phase("idle_at_burst")
        snapshots = [operator.allocations(work, 1)] if opts.tracemalloc else []
        more = [f"m{i:04d}" for i in range(opts.burst, opts.total - 1)]
        if more:
            print(f"{len(more)} more, to {opts.total} ...")
            bench.create_phase("to_total", more)
            bench.idle_phase("idle_at_total")
            if opts.tracemalloc:
                snapshots.append(operator.allocations(work, 2))
        if snapshots:
            report["tracemalloc"] = allocation_report(snapshots, [opts.burst + 1, opts.total])
            if any(
                p.get("jobs_found", 0) < p.get("resources_created", 0)
                for p in bench.phases.values()
            ):
                report["tracemalloc"]["warning"] = (
                    "some resources had no Job yet: the operator had not caught up, "
                    "so the bytes per resource understate its steady state"
                )
        if opts.soak_minutes:
            print(f"soak, {opts.soak_minutes} min ...")
            bench.soak(opts.soak_minutes)
        rss, hwm, cpu = operator.read()
        report["operator_end"] = {
            "rss_mib": round(rss / 1024, 1),
            "hwm_mib": round(hwm / 1024, 1),
            "cpu_seconds": round(cpu, 1),
            "log_lines": sum(1 for _ in operator.log.open("rb")),
        }
        report["phases"] = bench.phases
        report["rss_samples_time_rss_kib_hwm_kib_cpu_s"] = [
            [round(t, 1), r, h, round(c, 2)] for t, r, h, c in operator.samples[::4]
        ]
        report["audit_events"] = len(bench.audit.events)
        if bench.profiles:
            report["profile"] = profile_report(bench.profiles)
    finally:
        if operator is not None:
            operator.stop()
        cluster.stop()


def thread_group(key: str) -> str:
    """``ThreadPoolExecutor-0_3:1234`` -> ``executor``; the event loop's thread -> ``main``."""
    name = key.rsplit(":", 1)[0]
    if name == "MainThread":
        return "main (kopf's event loop)"
    if name.startswith(("ThreadPoolExecutor", "asyncio_")):
        return "executor (sync handlers)"
    if name.endswith("(process_request_thread)"):
        return "metrics server (a thread per request)"
    return name.rstrip("0123456789-_") or name


def profile_report(
    dumps: list[tuple[str, dict[str, dict[Any, Any]]]], top: int = 25
) -> dict[str, Any]:
    """Per phase and thread group: CPU seconds by function (own and cumulative), the top ones.

    A phase's figures are the difference of the dumps at its two ends.
    """
    out: dict[str, Any] = {
        "note": "cProfile in every thread, CPU time of each thread; it slows the operator: "
        "use for shares"
    }
    previous: dict[str, dict[Any, Any]] = {}
    for label, stats in dumps:
        groups: dict[str, dict[str, list[float]]] = {}
        for key, funcs in stats.items():
            before = previous.get(key, {})
            group = groups.setdefault(thread_group(key), {})
            for func, (_cc, nc, tt, ct, _callers) in funcs.items():
                old = before.get(func, (0, 0, 0.0, 0.0, {}))
                name = f"{Path(func[0]).name}:{func[1]}({func[2]})"
                row = group.setdefault(name, [0, 0.0, 0.0])
                row[0] += nc - old[1]
                row[1] += tt - old[2]
                row[2] += ct - old[3]
        previous = stats
        phase: dict[str, Any] = {}
        for group, funcs in groups.items():
            by_own = sorted(funcs.items(), key=lambda kv: -kv[1][1])[:top]
            by_cum = sorted(funcs.items(), key=lambda kv: -kv[1][2])[:top]
            phase[group] = {
                "threads": sum(1 for k in stats if thread_group(k) == group),
                "cpu_seconds": round(sum(v[1] for v in funcs.values()), 2),
                "own_seconds": {k: [v[0], round(v[1], 3)] for k, v in by_own},
                "cumulative_seconds": {k: [v[0], round(v[2], 3)] for k, v in by_cum},
            }
        out[label] = phase
    return out


def allocation_report(snapshots: list[dict[str, Any]], resources: list[int]) -> dict[str, Any]:
    """Python allocations live at each level, by package, and what each resource adds."""
    out: dict[str, Any] = {
        "note": "tracemalloc slows the operator and adds its own memory: use for shares only",
        "levels": dict(zip(map(str, resources), snapshots, strict=False)),
    }
    if len(snapshots) == 2:
        first, last = snapshots[0]["by_package"], snapshots[1]["by_package"]
        added = resources[1] - resources[0]
        growth = {k: (last.get(k, 0) - first.get(k, 0)) / added for k in {*first, *last}}
        out["bytes_per_resource_by_package"] = {
            k: round(v) for k, v in sorted(growth.items(), key=lambda kv: -kv[1]) if abs(v) >= 100
        }
        owners_first, owners_last = snapshots[0]["by_owner"], snapshots[1]["by_owner"]
        sites = {k: (owners_last[k] - owners_first.get(k, 0)) / added for k in owners_last}
        out["bytes_per_resource_by_owner_site"] = {
            k: round(v) for k, v in sorted(sites.items(), key=lambda kv: -kv[1])[:25]
        }
        out["traced_bytes_per_resource"] = round(
            (snapshots[1]["traced_bytes"] - snapshots[0]["traced_bytes"]) / added
        )
    return out


def summarise(report: dict[str, Any]) -> None:
    phases = report["phases"]
    burst, idle200 = phases["burst"], phases["idle_at_burst"]
    print(f"\noperator, {report['resync_seconds']:g}s resync; load {report['loadavg_before']}")
    print("| row | figure | target |")
    print("|---|---|---|")
    lat = burst["created_to_job_seconds"]
    print(f"| {burst['resources_created']} at once: created -> Job, p50 / p95 / max "
          f"| {lat.get('p50')} / **{lat.get('p95')}** / {lat.get('max')} s | p95 ≤ 2 s |")  # fmt: skip
    print(f"| RSS with {idle200['resources']} resources (HWM) "
          f"| {idle200['rss_mib_median']} MiB ({idle200['hwm_mib']}) | |")  # fmt: skip
    if "idle_at_total" in phases:
        idle = phases["idle_at_total"]
        more = phases["to_total"]["created_to_job_seconds"]
        per = (
            (idle["rss_mib_median"] - idle200["rss_mib_median"])
            * 1024
            / (idle["resources"] - idle200["resources"])
        )
        print(f"| RSS with {idle['resources']} resources (HWM) "
              f"| **{idle['rss_mib_median']} MiB** ({idle['hwm_mib']}); "
              f"{per:.1f} KiB per resource | ≤ 150 MiB |")  # fmt: skip
        print(f"| {phases['to_total']['resources_created']} more: created -> Job, p50 / p95 / max "
              f"| {more.get('p50')} / {more.get('p95')} / {more.get('max')} s | |")  # fmt: skip
    print(f"| requests per resource, burst | {burst['requests_per_resource']} "
          f"({burst['requests']['requests_per_pass']} per reconcile pass) | |")  # fmt: skip
    for key in ("idle_at_burst", "idle_at_total"):
        if key in phases:
            p = phases[key]
            print(f"| requests per resource per resync, idle, {p['resources']} resources "
                  f"| {p['requests_per_resource_per_resync']} "
                  f"({p['passes_per_resource_per_resync']} passes) | |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--burst", type=int, default=200)
    parser.add_argument(
        "--total", type=int, default=1000, help="resources in the end (<= burst+1: skip)"
    )
    parser.add_argument("--resync-seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=8, help="threads creating resources")
    parser.add_argument(
        "--idle-intervals", type=int, default=2, help="resync intervals observed idle"
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="per phase, for the Jobs")
    parser.add_argument("--soak-minutes", type=float, default=0.0)
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    parser.add_argument(
        "--tracemalloc",
        action="store_true",
        help="trace the operator's allocations (slow; writes operator_burst_tracemalloc.json)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="run the operator under cProfile, every thread (slower; writes "
        "operator_burst_profile.json: per phase, where each thread's time goes)",
    )
    parser.add_argument("--out", help="results file (default bench/results/operator_burst.json)")
    opts = parser.parse_args()

    report = benchlib.header(sys.argv)
    report.update(
        burst=opts.burst,
        total=opts.total,
        resync_seconds=opts.resync_seconds,
        threads=opts.threads,
        targets={"burst_p95_seconds": 2.0, "rss_mib_at_1000": 150},
    )
    work = Path(tempfile.mkdtemp(prefix="revisor-bench-operator-"))
    try:
        run(opts, work, report)
    finally:
        if opts.keep:
            print(f"work directory kept: {work}")
        else:
            subprocess.run(["rm", "-rf", str(work)], check=False)
    name = "operator_burst"
    if opts.tracemalloc:
        name = "operator_burst_tracemalloc"
    elif opts.profile:
        name = "operator_burst_profile"
    path = benchlib.write(name, report, opts.out)
    summarise(report)
    if "tracemalloc" in report and "bytes_per_resource_by_package" in report["tracemalloc"]:
        tm = report["tracemalloc"]
        print(f"\ntracemalloc: {tm['traced_bytes_per_resource']} bytes of Python objects per "
              "resource; by package:")  # fmt: skip
        for package, size in tm["bytes_per_resource_by_package"].items():
            if size >= 1000:
                print(f"  {size:8d}  {package}")
        print("by the innermost frame outside the standard library:")
        for site, size in list(tm["bytes_per_resource_by_owner_site"].items())[:10]:
            print(f"  {size:8d}  {site.replace(str(REPO) + '/', '')}")
    print(f"\n{path}")


if __name__ == "__main__":
    main()
