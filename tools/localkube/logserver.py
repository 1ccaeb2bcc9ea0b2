"""The one kubelet endpoint localkube serves: container logs, so ``kubectl logs`` works.

``kubectl logs`` asks the API server, which connects to the node's
``daemonEndpoints.kubeletEndpoint`` over TLS and proxies
``GET /containerLogs/<namespace>/<pod>/<container>``. The logs are the files
the pod workers write (stdout and stderr, all runs appended). Supported
query parameters: ``tailLines``, ``limitBytes`` and ``follow`` (streams while
the file grows, until the pod's worker ends). Everything else of the kubelet
API (exec, attach, port-forward, metrics) answers 404.

It listens on 127.0.0.1 only and does not authenticate callers: anyone on
this machine can read these logs, as they can read the files.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

FOLLOW_POLL_SECONDS = 0.25


def find_log(root: Path, namespace: str, pod: str, container: str) -> Path | None:
    """The newest log file of ``container`` in pod ``namespace/pod`` (names cannot hold '_')."""
    candidates = sorted(
        root.glob(f"pods/{namespace}_{pod}_*/logs/{container}.log"),
        key=lambda path: path.stat().st_mtime,
    )
    return candidates[-1] if candidates else None


def tail(data: bytes, lines: int) -> bytes:
    if lines <= 0:
        return b""
    parts = data.splitlines(keepends=True)
    return b"".join(parts[-lines:])


class LogServer:
    """A TLS HTTP server on 127.0.0.1 answering ``/containerLogs/...``."""

    def __init__(
        self,
        *,
        root: Path,
        cert_file: Path,
        key_file: Path,
        is_running: Callable[[str, str], bool],
    ) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(cert_file), str(key_file))
        handler = _handler(root, is_running)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.port = int(self._server.server_address[1])

    def start(self) -> None:
        threading.Thread(target=self._server.serve_forever, name="logserver", daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(root: Path, is_running: Callable[[str, str], bool]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            return

        def do_GET(self) -> None:
            url = urlparse(self.path)
            parts = url.path.strip("/").split("/")
            if len(parts) != 4 or parts[0] != "containerLogs":
                self.send_error(404, "only /containerLogs is served by the process-kubelet")
                return
            _, namespace, pod, container = parts
            log = find_log(root, namespace, pod, container)
            if log is None:
                self.send_error(404, f"no logs for {namespace}/{pod}/{container}")
                return
            query = {key: values[-1] for key, values in parse_qs(url.query).items()}
            data = log.read_bytes()
            offset = len(data)
            if "tailLines" in query:
                data = tail(data, int(query["tailLines"]))
            if "limitBytes" in query:
                data = data[: int(query["limitBytes"])]
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            if query.get("follow") != "true":
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)
            self._follow(log, offset, namespace, pod)

        def _follow(self, log: Path, offset: int, namespace: str, pod: str) -> None:
            # Polling a file is the simple, portable way to follow it; the cadence is human.
            while True:
                with log.open("rb") as handle:
                    handle.seek(offset)
                    chunk = handle.read()
                if chunk:
                    offset += len(chunk)
                    try:
                        self.wfile.write(chunk)
                        self.wfile.flush()
                    except OSError:
                        return
                elif not is_running(namespace, pod):
                    return
                time.sleep(FOLLOW_POLL_SECONDS)

    return Handler
