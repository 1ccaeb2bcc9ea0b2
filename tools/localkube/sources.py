"""What a pod's env and volumes read from the cluster, as an interface.

``environment`` and ``volumes`` are pure functions of a pod and this
interface, so they are unit-tested with a dict-backed fake; the kubelet
passes one backed by the API.
"""

from __future__ import annotations

import base64
from typing import Any, Protocol

from localkube.api import Api, ApiError

Pod = dict[str, Any]


class MissingSourceError(Exception):
    """A Secret, ConfigMap or key a pod needs does not exist (yet): the kubelet retries."""


class Sources(Protocol):
    def secret(self, namespace: str, name: str) -> dict[str, bytes] | None:
        """The decoded data of a Secret, or None when it does not exist."""

    def config_map(self, namespace: str, name: str) -> dict[str, bytes] | None:
        """data + binaryData of a ConfigMap, or None when it does not exist."""

    def service_account_token(self, pod: Pod, *, audience: str | None, expiration: int) -> str:
        """A token bound to ``pod`` for its ServiceAccount (TokenRequest)."""


class ApiSources:
    """``Sources`` read through the API with the kubelet's credentials."""

    def __init__(self, api: Api) -> None:
        self._api = api

    def secret(self, namespace: str, name: str) -> dict[str, bytes] | None:
        try:
            body = self._api.get(f"/api/v1/namespaces/{namespace}/secrets/{name}")
        except ApiError as error:
            if error.status == 404:
                return None
            raise
        return {key: base64.b64decode(value) for key, value in (body.get("data") or {}).items()}

    def config_map(self, namespace: str, name: str) -> dict[str, bytes] | None:
        try:
            body = self._api.get(f"/api/v1/namespaces/{namespace}/configmaps/{name}")
        except ApiError as error:
            if error.status == 404:
                return None
            raise
        data = {key: value.encode() for key, value in (body.get("data") or {}).items()}
        for key, value in (body.get("binaryData") or {}).items():
            data[key] = base64.b64decode(value)
        return data

    def service_account_token(self, pod: Pod, *, audience: str | None, expiration: int) -> str:
        namespace = pod["metadata"]["namespace"]
        account = pod["spec"].get("serviceAccountName") or "default"
        spec: dict[str, Any] = {
            "expirationSeconds": expiration,
            "boundObjectRef": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": pod["metadata"]["name"],
                "uid": pod["metadata"]["uid"],
            },
        }
        if audience:
            spec["audiences"] = [audience]
        answer = self._api.post(
            f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec},
        )
        return str(answer["status"]["token"])
