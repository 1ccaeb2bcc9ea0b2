"""The lifecycle of one pod on the process-kubelet, and the status it reports.

One thread per pod runs a small reconcile loop: prepare volumes, run init
containers in order, start the containers, restart them per
``restartPolicy`` with a short backoff, probe readiness, enforce
``activeDeadlineSeconds`` and graceful deletion, and patch ``/status``
whenever what it would report changes. It wakes on process exits, pod
updates and its own timers, never on a fixed tick.

This thread returns only once all its processes are gone: containers run
under their shim (which watches the kubelet's lifeline, not this thread), but
probes have a death signal, which fires when the thread that started them ends.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from localkube.api import Api, ApiError
from localkube.containers import ContainerRun, Exit
from localkube.environment import POD_IP, container_argv, container_env
from localkube.images import ImagePullError, ImageRegistry
from localkube.node import now
from localkube.privatemounts import private_mounts
from localkube.probes import ReadinessProbe, run_exec
from localkube.shim import PrivateMounts
from localkube.sources import MissingSourceError, Pod, Sources
from localkube.volumes import MountMap, container_mounts, materialise

BACKOFF_INITIAL = 1.0
BACKOFF_MAX = 10.0
PREPARE_RETRY = 1.0
REPORT_RETRY = 1.0
#: The pod conditions a kubelet owns; it keeps the others as it finds them.
KUBELET_CONDITIONS = frozenset(
    {"PodScheduled", "PodReadyToStartContainers", "Initialized", "ContainersReady", "Ready"}
)

log = logging.getLogger("localkube.pod")


@dataclass(frozen=True)
class Host:
    """What every pod worker of one kubelet shares."""

    api: Api
    sources: Sources
    root: Path
    base_env: Mapping[str, str]
    service_env: Mapping[str, str]
    images: ImageRegistry = field(default_factory=ImageRegistry)
    #: Containers may have mount namespaces of their own (``privatemounts.check_support``).
    mount_namespaces: bool = False


@dataclass
class Container:
    """A container across its restarts."""

    spec: dict[str, Any]
    init: bool
    run: ContainerRun | None = None
    probe: ReadinessProbe | None = None
    restart_count: int = 0
    pull_failures: int = 0  # failed pulls in a row, for ErrImagePull then ImagePullBackOff
    handled_exit: Exit | None = None  # the run's exit, once the worker acted on it
    previous_exit: Exit | None = None  # the exit of the run before a restart (lastState)
    waiting_reason: str = "PodInitializing"
    waiting_message: str = ""
    not_before: float = 0.0
    done: bool = False  # will not run again

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    @property
    def running(self) -> bool:
        return self.run is not None and self.run.running

    @property
    def ready(self) -> bool:
        if not self.running:
            return False
        return self.probe.ready if self.probe else True

    def status(self) -> dict[str, Any]:
        state: dict[str, Any]
        run = self.run
        if run is not None and run.exit is None:
            state = {"running": {"startedAt": run.started_at}}
        elif run is not None and run.exit is not None and not self.waiting_reason:
            state = {"terminated": run.exit.as_state()}
        else:
            waiting = {"reason": self.waiting_reason or "ContainerCreating"}
            if self.waiting_message:
                waiting["message"] = self.waiting_message
            state = {"waiting": waiting}
        status: dict[str, Any] = {
            "name": self.name,
            "image": self.spec.get("image", ""),
            "imageID": "",
            "state": state,
            "lastState": {},
            "ready": self.ready,
            "restartCount": self.restart_count,
            "started": self.running,
        }
        if run is not None and run.pid is not None:
            status["containerID"] = f"process://{run.pid}"
        if self.previous_exit is not None:
            status["lastState"] = {"terminated": self.previous_exit.as_state()}
        return status


def _parse_time(stamp: str) -> datetime:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


class PodWorker:
    """Runs one pod; ``update`` feeds it the latest object from the watch."""

    def __init__(
        self,
        host: Host,
        pod: Pod,
        *,
        on_finished: Callable[[PodWorker], None] | None = None,
    ) -> None:
        self.host = host
        self.pod = pod
        self.on_finished = on_finished
        self._wake = threading.Event()
        self._removed = False
        self._thread: threading.Thread | None = None
        meta = pod["metadata"]
        self.uid: str = meta["uid"]
        self.key = f"{meta['namespace']}/{meta['name']}"
        self.dir = host.root / "pods" / f"{meta['namespace']}_{meta['name']}_{self.uid[:8]}"
        spec = pod["spec"]
        self.init_containers = [Container(c, init=True) for c in spec.get("initContainers") or []]
        self.containers = [Container(c, init=False) for c in spec.get("containers") or []]
        self.policy: str = spec.get("restartPolicy", "Always")
        self.volumes: dict[str, Path] | None = None
        self.prepare_retry_at = 0.0
        self.phase = "Pending"
        self.reason = ""
        self.message = ""
        reported_start = pod.get("status", {}).get("startTime")
        self.start_time: str = reported_start or now()
        # activeDeadlineSeconds counts from here (sub-second precision when we set startTime).
        self.active_since = (
            _parse_time(reported_start).timestamp() if reported_start else time.time()
        )
        self.conditions: dict[str, tuple[str, str]] = {}
        self.last_reported: dict[str, Any] | None = None

    # -- interface for the kubelet -------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name=f"pod-{self.key}", daemon=True)
        self._thread.start()

    def update(self, pod: Pod) -> None:
        self.pod = pod
        self._wake.set()

    def remove(self) -> None:
        """The API object is gone: kill everything now."""
        self._removed = True
        self._wake.set()

    @property
    def removed(self) -> bool:
        return self._removed

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    # -- the loop -------------------------------------------------------------------

    def _main(self) -> None:
        try:
            self._loop()
        except Exception as error:
            log.exception("pod %s: worker crashed", self.key)
            self._kill_all(grace=0)
            # Say so on the pod rather than leave it Pending without a word.
            self._finish("Failed", "ProcessKubeletError", f"process-kubelet: {error!r}")
            with contextlib.suppress(Exception):
                self._report()
        finally:
            if self.on_finished is not None:
                self.on_finished(self)

    def _loop(self) -> None:
        while True:
            self._wake.clear()
            if self._removed:
                self._kill_all(grace=0)
                return
            meta = self.pod["metadata"]
            if meta.get("deletionTimestamp"):
                grace_seconds = meta.get("deletionGracePeriodSeconds")
                if grace_seconds is None:  # 0 is a forced delete, not a missing value
                    grace_seconds = self.pod["spec"].get("terminationGracePeriodSeconds", 30)
                grace = float(grace_seconds)
                self._kill_all(grace=grace)
                if self.phase not in {"Succeeded", "Failed"}:
                    self._finish(self._phase_after_kill(), "", "")
                self._report()
                self._delete_now()
                return
            if self.phase in {"Succeeded", "Failed"}:
                if self._report():
                    return
                self._wake.wait(REPORT_RETRY)
                continue
            timers = self._advance()
            if not self._report():
                timers.append(time.monotonic() + REPORT_RETRY)
            if self.phase in {"Succeeded", "Failed"}:
                continue
            timeout = max(0.0, min(timers) - time.monotonic()) if timers else None
            self._wake.wait(timeout)

    def _advance(self) -> list[float]:
        """Move the pod along; return the monotonic times at which to look again."""
        timers: list[float] = []
        deadline = self._deadline()
        if deadline is not None:
            if deadline <= time.monotonic():
                return []
            timers.append(deadline)
        if self.volumes is None:
            retry_at = self._prepare()
            if retry_at is not None:
                return [*timers, retry_at]
        return timers + self._advance_containers()

    def _deadline(self) -> float | None:
        """Enforce activeDeadlineSeconds; return when it falls due (monotonic), if set."""
        seconds = self.pod["spec"].get("activeDeadlineSeconds")
        if seconds is None:
            return None
        remaining = self.active_since + float(seconds) - time.time()
        if remaining <= 0:
            self._kill_all(grace=0)
            self._finish(
                "Failed",
                "DeadlineExceeded",
                f"Pod was active on the node longer than the specified deadline ({seconds}s)",
            )
        return time.monotonic() + remaining

    def _prepare(self) -> float | None:
        """Materialise the volumes; return when to retry if a source is missing."""
        if time.monotonic() < self.prepare_retry_at:
            return self.prepare_retry_at
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self.volumes = materialise(self.pod, self.dir, self.host.sources)
        except (MissingSourceError, ApiError) as error:
            for container in self.init_containers + self.containers:
                container.waiting_reason = "CreateContainerConfigError"
                container.waiting_message = str(error)
            self.prepare_retry_at = time.monotonic() + PREPARE_RETRY
            return self.prepare_retry_at
        for container in self.init_containers + self.containers:
            container.waiting_reason, container.waiting_message = "PodInitializing", ""
        self._set_condition("PodReadyToStartContainers", "True")
        return None

    def _advance_containers(self) -> list[float]:
        timers: list[float] = []
        pending_init = [c for c in self.init_containers if not c.done]
        if pending_init:
            current = pending_init[0]
            timers += self._drive(current)
            if self.phase in {"Succeeded", "Failed"}:
                return []
            if any(not c.done for c in self.init_containers):
                return timers
            for container in self.containers:
                container.waiting_reason = "ContainerCreating"
        for container in self.containers:
            timers += self._drive(container)
            if self.phase in {"Succeeded", "Failed"}:
                return []
            if container.probe is not None and container.running:
                if container.probe.due():
                    container.probe.probe()
                timers.append(container.probe.next_at)
        self._update_phase()
        return timers

    def _drive(self, container: Container) -> list[float]:
        """Start, observe and restart one container; return its timers."""
        if container.done or container.running:
            return []
        run = container.run
        if run is not None and run.exit is not None and run.exit is not container.handled_exit:
            container.handled_exit = run.exit
            failed = run.exit.exit_code != 0
            restart = self.policy == "Always" or (self.policy == "OnFailure" and failed)
            if not restart or (container.init and not failed):
                container.done = True
                if container.init and failed:
                    self._finish("Failed", "", f"init container {container.name} failed")
                return []
            backoff = _backoff(container.restart_count)
            container.previous_exit = run.exit
            container.not_before = time.monotonic() + backoff
            container.waiting_reason = "CrashLoopBackOff"
            container.waiting_message = f"back-off {backoff:.0f}s restarting failed container"
        if time.monotonic() < container.not_before:
            return [container.not_before]
        if not self._start(container):
            # A Secret, ConfigMap or image it needs may appear at any time; nothing wakes us for it.
            return [container.not_before]
        return []

    def _start(self, container: Container) -> bool:
        """Start the container's next run; False if its image or config is not there yet."""
        spec = container.spec
        assert self.volumes is not None
        cdir = self.dir / "containers" / container.name
        termination_file = cdir / "termination-log"
        # The image first, as the kubelet pulls before it builds the container's config.
        try:
            image_root = self.host.images.root(spec.get("image", ""))
        except ImagePullError as error:
            self._pull_failed(container, error)
            return False
        container.pull_failures = 0
        try:
            mounts = container_mounts(
                spec, self.volumes, termination_file=termination_file, image_root=image_root
            )
            env = container_env(
                self.pod, spec, self.host.sources, service_env=self.host.service_env
            )
            argv = [mounts.argument(part) for part in container_argv(spec, env)]
        except (MissingSourceError, ApiError) as error:
            container.waiting_reason = "CreateContainerConfigError"
            container.waiting_message = str(error)
            container.not_before = time.monotonic() + PREPARE_RETRY
            return False
        if container.run is not None:
            container.restart_count += 1  # counted when the new run starts, as by the kubelet
        mapped_env = {name: mounts.argument(value) for name, value in env.items()}
        full_env = {**self.host.base_env, "HOME": str(cdir), **mapped_env}
        full_env.setdefault("HOSTNAME", self.pod["metadata"]["name"])
        cwd = self._working_dir(spec, mounts, cdir)
        log_file = self.dir / "logs" / f"{container.name}.log"
        private = (
            private_mounts(spec, self.volumes) if self.host.mount_namespaces else PrivateMounts()
        )
        container.run = ContainerRun(
            argv=argv,
            env=full_env,
            cwd=cwd,
            log=log_file,
            termination_file=termination_file,
            message_policy=spec.get("terminationMessagePolicy", "File"),
            on_exit=self._wake.set,
            mounts=private,
        )
        container.waiting_reason, container.waiting_message = "", ""
        probe_spec = spec.get("readinessProbe")
        if probe_spec and not container.init:

            def run_probe(command: Any, timeout: float) -> int:
                probe_argv = [mounts.argument(str(part)) for part in command]
                probe_log = self.dir / "logs" / f"{container.name}.probe.log"
                return run_exec(probe_argv, env=full_env, cwd=cwd, log=probe_log, timeout=timeout)

            container.probe = ReadinessProbe(probe_spec, spec, run_probe)
        else:
            container.probe = None
        return True

    @staticmethod
    def _pull_failed(container: Container, error: ImagePullError) -> None:
        """Wait and retry, as the kubelet does: ErrImagePull once, then ImagePullBackOff."""
        backoff = _backoff(container.pull_failures)
        image = container.spec.get("image", "")
        if container.pull_failures == 0:
            container.waiting_reason = "ErrImagePull"
            container.waiting_message = f"failed to pull image {image!r}: {error}"
        else:
            container.waiting_reason = "ImagePullBackOff"
            container.waiting_message = f'Back-off pulling image "{image}": {error}'
        container.pull_failures += 1
        container.not_before = time.monotonic() + backoff

    @staticmethod
    def _working_dir(spec: Mapping[str, Any], mounts: MountMap, cdir: Path) -> Path:
        working_dir = spec.get("workingDir")
        if not working_dir:
            return cdir / "cwd"
        mapped = mounts.path(working_dir)
        if mapped != working_dir:
            return Path(mapped)
        # Under no mount and not in an image root we have: give it a private dir.
        return cdir / "fs" / str(working_dir).lstrip("/")

    def _update_phase(self) -> None:
        containers = self.containers
        initialised = all(c.done for c in self.init_containers)
        if not initialised or any(c.run is None for c in containers):
            self.phase = "Pending"
            return
        if all(c.done for c in containers):
            exits = [c.run.exit for c in containers if c.run is not None]
            failed = any(e is None or e.exit_code != 0 for e in exits)
            self._finish("Failed" if failed else "Succeeded", "", "")
            return
        self.phase = "Running"

    def _finish(self, phase: str, reason: str, message: str) -> None:
        self.phase, self.reason, self.message = phase, reason, message
        for container in self.init_containers + self.containers:
            if container.run is not None and container.run.exit is not None:
                container.done = True
            elif not container.done:
                container.waiting_reason = container.waiting_reason or "PodInitializing"

    def _phase_after_kill(self) -> str:
        exits = [c.run.exit for c in self.containers if c.run is not None]
        ok = exits and all(e is not None and e.exit_code == 0 for e in exits)
        return "Succeeded" if ok else "Failed"

    def _kill_all(self, *, grace: float) -> None:
        runs = [c.run for c in self.init_containers + self.containers if c.run and c.run.running]
        for run in runs:
            if grace > 0:
                run.terminate()
            else:
                run.kill()
        deadline = time.monotonic() + grace
        for run in runs:
            if not run.wait(max(0.0, deadline - time.monotonic())):
                run.kill()
                run.wait(None)
        for container in self.init_containers + self.containers:
            container.waiting_reason = ""
            if container.run is not None and container.run.exit is not None:
                container.done = True

    # -- status ---------------------------------------------------------------------

    def _set_condition(self, kind: str, status: str) -> None:
        previous = self.conditions.get(kind)
        if previous is None or previous[0] != status:
            self.conditions[kind] = (status, now())

    def _status(self) -> dict[str, Any]:
        terminal = self.phase in {"Succeeded", "Failed"}
        initialised = all(c.done for c in self.init_containers)
        ready = not terminal and initialised and all(c.ready for c in self.containers)
        self._set_condition("PodScheduled", "True")
        self._set_condition("Initialized", "True" if initialised else "False")
        self._set_condition("ContainersReady", "True" if ready else "False")
        self._set_condition("Ready", "True" if ready else "False")
        if terminal:
            self._set_condition("PodReadyToStartContainers", "False")
        conditions = []
        for kind, (value, since) in self.conditions.items():
            condition = {"type": kind, "status": value, "lastTransitionTime": since}
            if value == "False" and terminal and kind in {"Ready", "ContainersReady"}:
                condition["reason"] = "PodCompleted"
            conditions.append(condition)
        # Conditions others set (DisruptionTarget from an eviction or preemption, readiness
        # gates) are kept, as a kubelet keeps them: a merge patch replaces the whole list.
        for other in (self.pod.get("status") or {}).get("conditions") or []:
            if other.get("type") not in KUBELET_CONDITIONS:
                conditions.append(dict(other))
        status: dict[str, Any] = {
            "phase": self.phase,
            "conditions": conditions,
            "hostIP": POD_IP,
            "hostIPs": [{"ip": POD_IP}],
            "podIP": POD_IP,
            "podIPs": [{"ip": POD_IP}],
            "startTime": self.start_time,
            "containerStatuses": [c.status() for c in self.containers],
        }
        if self.init_containers:
            status["initContainerStatuses"] = [c.status() for c in self.init_containers]
        if self.reason:
            status["reason"] = self.reason
        if self.message:
            status["message"] = self.message
        return status

    def _report(self) -> bool:
        """Patch the status if it changed; False when the API refused (try again later)."""
        status = self._status()
        if status == self.last_reported:
            return True
        meta = self.pod["metadata"]
        path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/status"
        try:
            self.host.api.patch(path, {"metadata": {"uid": self.uid}, "status": status})
            self.last_reported = copy.deepcopy(status)
        except ApiError as error:
            if error.status == 404:
                self._removed = True
                return True
            log.warning("pod %s: status update failed: %s", self.key, error)
            return False
        return True

    def _delete_now(self) -> None:
        meta = self.pod["metadata"]
        path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
        body = {"gracePeriodSeconds": 0, "preconditions": {"uid": self.uid}}
        try:
            self.host.api.delete(path, body)
        except ApiError as error:
            if error.status not in {404, 409}:
                log.warning("pod %s: delete failed: %s", self.key, error)


def _backoff(failures: int) -> float:
    """Seconds before the next try after ``failures`` failed ones: doubling, capped."""
    return float(min(BACKOFF_MAX, BACKOFF_INITIAL * 2**failures))
