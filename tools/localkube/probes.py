"""Readiness probes: ``exec``, ``httpGet`` and ``tcpSocket`` against 127.0.0.1.

A container without a readinessProbe is ready while it runs. With one, it
starts unready and flips after ``successThreshold`` successes or
``failureThreshold`` failures, probed every ``periodSeconds`` after
``initialDelaySeconds``: enough for a Deployment whose pods must never become
Ready. Liveness and startup probes are not run.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from localkube import processes

ExecRunner = Callable[[Sequence[str], float], int]


def resolve_port(port: int | str, container: Mapping[str, Any]) -> int:
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    for declared in container.get("ports") or []:
        if declared.get("name") == port:
            return int(declared["containerPort"])
    raise ValueError(f"no container port named {port!r}")


def run_exec(
    argv: Sequence[str], *, env: Mapping[str, str], cwd: Path, log: Path, timeout: float
) -> int:
    """Run a probe command; a timeout counts as failure (exit 1)."""
    process = processes.spawn(argv, log=log, env=env, cwd=cwd)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        processes.stop(process, grace=0)
        return 1


def check_http(spec: Mapping[str, Any], container: Mapping[str, Any], timeout: float) -> bool:
    port = resolve_port(spec["port"], container)
    host = spec.get("host") or "127.0.0.1"
    connection: http.client.HTTPConnection
    if spec.get("scheme", "HTTP").upper() == "HTTPS":
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # as the kubelet does for HTTPS probes
        connection = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
    else:
        connection = http.client.HTTPConnection(host, port, timeout=timeout)
    headers = {h["name"]: h["value"] for h in spec.get("httpHeaders") or []}
    try:
        connection.request("GET", spec.get("path") or "/", headers=headers)
        return 200 <= connection.getresponse().status < 400
    except OSError:
        return False
    finally:
        connection.close()


def check_tcp(spec: Mapping[str, Any], container: Mapping[str, Any], timeout: float) -> bool:
    port = resolve_port(spec["port"], container)
    try:
        with socket.create_connection((spec.get("host") or "127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


class ReadinessProbe:
    """The readiness state of one container run."""

    def __init__(
        self, spec: Mapping[str, Any], container: Mapping[str, Any], run_command: ExecRunner
    ) -> None:
        self._spec = spec
        self._container = container
        self._run_command = run_command
        self.ready = False
        self._successes = 0
        self._failures = 0
        self.next_at = time.monotonic() + float(spec.get("initialDelaySeconds", 0))

    @property
    def period(self) -> float:
        return float(self._spec.get("periodSeconds", 10))

    def due(self) -> bool:
        return time.monotonic() >= self.next_at

    def probe(self) -> bool:
        """Run the probe once; return True when readiness changed."""
        timeout = float(self._spec.get("timeoutSeconds", 1))
        if "exec" in self._spec:
            ok = self._run_command(self._spec["exec"].get("command") or [], timeout) == 0
        elif "httpGet" in self._spec:
            ok = check_http(self._spec["httpGet"], self._container, timeout)
        elif "tcpSocket" in self._spec:
            ok = check_tcp(self._spec["tcpSocket"], self._container, timeout)
        else:
            ok = False
        self.next_at = time.monotonic() + self.period
        before = self.ready
        if ok:
            self._successes, self._failures = self._successes + 1, 0
            if self._successes >= int(self._spec.get("successThreshold", 1)):
                self.ready = True
        else:
            self._successes, self._failures = 0, self._failures + 1
            if self._failures >= int(self._spec.get("failureThreshold", 3)):
                self.ready = False
        return before != self.ready
