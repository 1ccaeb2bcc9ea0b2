"""The one module of localkube that talks HTTP to the Kubernetes API.

The process-kubelet needs little of the API (a node, a lease, pods, secrets,
config maps, token requests) but needs it exactly: merge patches on
``/status``, watches it can stop, raw JSON bodies. The generated ``kubernetes``
client converts everything through models; a small JSON client over urllib3
(already installed with it) keeps bodies as plain dicts and errors as one
exception carrying the HTTP status.
"""

from __future__ import annotations

import base64
import json
import tempfile
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlencode

import urllib3
import yaml

JSON = dict[str, Any]

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"


#: ``ApiError.status`` when no answer came at all (reset, timeout, refused connection).
NO_ANSWER = 0


class ApiError(Exception):
    """A non-2xx answer from the API server, or none (status ``NO_ANSWER``).

    A dropped connection is one more reason to try again later, which is
    what every caller already does with an error answer; mapping both to one
    exception here keeps a transient reset on a loaded machine from crashing
    a pod worker (and failing the pod) the way a real kubelet would not.
    """

    def __init__(self, *, status: int, method: str, path: str, body: str) -> None:
        self.status = status
        self.method = method
        self.path = path
        self.body = body
        try:
            message = str(json.loads(body).get("message", body))
        except ValueError:
            message = body
        super().__init__(f"{method} {path}: HTTP {status}: {message[:500]}")


@dataclass(frozen=True)
class Credentials:
    """Where the API is and how to prove who we are (client certificate or bearer token)."""

    server: str
    ca_file: Path
    cert_file: Path | None = None
    key_file: Path | None = None
    token: str | None = None


def credentials_from_kubeconfig(path: Path, *, scratch_dir: Path | None = None) -> Credentials:
    """Read the current context of a kubeconfig; inline data is written to files for ``ssl``."""
    config = yaml.safe_load(path.read_text())
    current = config.get("current-context") or config["contexts"][0]["name"]
    context = next(c["context"] for c in config["contexts"] if c["name"] == current)
    cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
    user = next(u["user"] for u in config["users"] if u["name"] == context["user"])
    folder = scratch_dir or Path(tempfile.mkdtemp(prefix="localkube-creds-"))
    folder.mkdir(parents=True, exist_ok=True)

    def file_of(data_key: str, file_key: str, section: Mapping[str, Any]) -> Path | None:
        if section.get(data_key):
            target = folder / data_key
            target.write_bytes(base64.b64decode(section[data_key]))
            target.chmod(0o600)
            return target
        if section.get(file_key):
            given = Path(section[file_key])
            return given if given.is_absolute() else path.parent / given
        return None

    ca_file = file_of("certificate-authority-data", "certificate-authority", cluster)
    if ca_file is None:
        raise ValueError(f"{path}: the cluster has no certificate authority")
    return Credentials(
        server=cluster["server"].rstrip("/"),
        ca_file=ca_file,
        cert_file=file_of("client-certificate-data", "client-certificate", user),
        key_file=file_of("client-key-data", "client-key", user),
        token=user.get("token"),
    )


class Api:
    """A thread-safe JSON client for one API server."""

    def __init__(self, credentials: Credentials, *, timeout: float = 30.0) -> None:
        self.credentials = credentials
        self._timeout = timeout
        self._pool = urllib3.PoolManager(
            num_pools=4,
            maxsize=16,
            ca_certs=str(credentials.ca_file),
            cert_file=str(credentials.cert_file) if credentials.cert_file else None,
            key_file=str(credentials.key_file) if credentials.key_file else None,
            cert_reqs="CERT_REQUIRED",
        )
        self._headers = {"Accept": "application/json"}
        if credentials.token:
            self._headers["Authorization"] = f"Bearer {credentials.token}"

    @classmethod
    def from_kubeconfig(cls, path: Path, *, scratch_dir: Path | None = None) -> Api:
        return cls(credentials_from_kubeconfig(path, scratch_dir=scratch_dir))

    def request(
        self,
        method: str,
        path: str,
        *,
        body: object = None,
        query: Mapping[str, str | int] | None = None,
        content_type: str = "application/json",
        timeout: float | None = None,
    ) -> JSON:
        url = self._url(path, query)
        headers = dict(self._headers)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        try:
            response = self._pool.request(
                method,
                url,
                body=data,
                headers=headers,
                timeout=urllib3.Timeout(total=timeout or self._timeout),
                retries=False,
            )
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise ApiError(status=NO_ANSWER, method=method, path=path, body=repr(error)) from error
        text = response.data.decode(errors="replace")
        if response.status >= 300:
            raise ApiError(status=response.status, method=method, path=path, body=text)
        return cast(JSON, json.loads(text)) if text else {}

    def get_text(self, path: str) -> str:
        """GET a non-JSON endpoint such as ``/readyz``."""
        try:
            response = self._pool.request(
                "GET",
                self._url(path, None),
                headers=self._headers,
                timeout=urllib3.Timeout(total=self._timeout),
                retries=False,
            )
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise ApiError(status=NO_ANSWER, method="GET", path=path, body=repr(error)) from error
        text = response.data.decode(errors="replace")
        if response.status >= 300:
            raise ApiError(status=response.status, method="GET", path=path, body=text)
        return text

    def get(self, path: str, **query: str | int) -> JSON:
        return self.request("GET", path, query=query)

    def post(self, path: str, body: object) -> JSON:
        return self.request("POST", path, body=body)

    def put(self, path: str, body: object) -> JSON:
        return self.request("PUT", path, body=body)

    def patch(self, path: str, body: object, *, content_type: str = MERGE_PATCH) -> JSON:
        return self.request("PATCH", path, body=body, content_type=content_type)

    def delete(self, path: str, body: object = None) -> JSON:
        return self.request("DELETE", path, body=body)

    def watch(
        self,
        path: str,
        *,
        resource_version: str,
        stop: threading.Event,
        timeout_seconds: int = 60,
        **query: str,
    ) -> Iterator[JSON]:
        """Yield watch events until the server ends the stream or ``stop`` is set.

        The server closes the stream after ``timeout_seconds``; the caller
        loops with the last resourceVersion it saw.
        """
        params: dict[str, str | int] = {
            "watch": "1",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": timeout_seconds,
            **query,
        }
        response = self._pool.request(
            "GET",
            self._url(path, params),
            headers=self._headers,
            preload_content=False,
            timeout=urllib3.Timeout(connect=self._timeout, read=timeout_seconds + 15),
            retries=False,
        )
        try:
            if response.status >= 300:
                body = response.read().decode(errors="replace")
                raise ApiError(status=response.status, method="WATCH", path=path, body=body)
            buffer = b""
            for chunk in response.stream(4096, decode_content=True):
                if stop.is_set():
                    return
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        yield cast(JSON, json.loads(line))
        finally:
            response.release_conn()

    def _url(self, path: str, query: Mapping[str, str | int] | None) -> str:
        url = f"{self.credentials.server}{path}"
        if query:
            url += "?" + urlencode({k: str(v) for k, v in query.items()})
        return url
