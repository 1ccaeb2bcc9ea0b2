"""The one module that talks to the Kubernetes API.

Every call the operator makes goes through :class:`Kube`, which returns
plain dicts typed as :mod:`.bodies` and turns API failures into this
module's own exceptions (:class:`NotFound`, :class:`AlreadyExists`,
:class:`Conflict`, :class:`Forbidden`, :class:`KubeError`), so that the rest
of the operator never sees ``kubernetes.client`` types.

Secrets: :meth:`Kube.check_secret` reads a Secret to learn *which keys* it
has and drops the values at once; they are never returned, logged or
stored.

Requests are plain JSON over the client's authenticated connection pool
(``ApiClient.param_serialize`` + ``call_api``) rather than the generated
typed methods: bodies stay dicts end to end, and merge patches are sent as
merge patches.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast
from urllib.parse import quote

from kubernetes import client, config

from .. import GROUP, PLURAL, SET_PLURAL, VERSION
from ..decisions.admission import SET_LABEL
from ..decisions.bodies import Job, JsonDict, Migration, Pod
from ..decisions.jobs import MIGRATION_LABEL, label_value
from ..decisions.naming import fingerprint_config_map
from ..decisions.redaction import redact, shorten
from ..decisions.references import ConfigMapCheck, SecretCheck

REQUEST_TIMEOUT = 30.0
MERGE_PATCH = "application/merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
#: Lists of objects' metadata only: names and labels of Secrets, never their data.
METADATA_ONLY = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
#: Items per page of a list (the API's own limit is larger; pages bound our memory).
LIST_PAGE = 500
#: Connections the client keeps open to the API server: at least as many as there are
#: threads that call it at once (kopf's executor, the work queue's, the fleet's; see
#: handlers.EXECUTOR_THREADS). A thread without a free one opens, and then drops, its own.
POOL_SIZE = 32
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def use_kubeconfig(path: str) -> None:
    """Make ``path`` the kubeconfig of this process: for our client and for kopf's login.

    The kubernetes client reads ``$KUBECONFIG`` once, when it is imported;
    kopf's login goes through that default, so both are set.
    """
    os.environ["KUBECONFIG"] = path
    config.kube_config.KUBE_CONFIG_DEFAULT_LOCATION = path


class KubeError(Exception):
    """An API call failed; ``status`` is the HTTP status (0 when there was no answer)."""

    def __init__(self, message: str, *, status: int = 0, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class NotFound(KubeError):
    """404: the object does not exist."""


class AlreadyExists(KubeError):
    """409 AlreadyExists: an object with that name exists (a Job we created before)."""


class Conflict(KubeError):
    """409 Conflict: the object changed since we read it (resourceVersion mismatch)."""


class Forbidden(KubeError):
    """403: RBAC does not allow the operator this call."""


class KubeAPI(Protocol):
    """The calls the handlers and ``wait`` make: what :class:`Kube` and the tests' fake provide.

    Typing the callers against this rather than :class:`Kube` lets mypy check
    that a stand-in has every call, with the same signature.
    """

    def apply_migration(self, body: JsonDict, *, field_manager: str) -> Migration: ...

    def patch_migration(self, *, namespace: str, name: str, patch: JsonDict) -> Migration: ...

    def get_migration(self, *, namespace: str, name: str) -> Migration | None: ...

    def patch_migration_status(
        self, *, namespace: str, name: str, status: JsonDict, resource_version: str | None
    ) -> Migration: ...

    def list_jobs(self, *, namespace: str, migration: str) -> list[Job]: ...

    def list_pods(self, *, namespace: str, job: Job) -> list[Pod]: ...

    def read_pod_log(
        self, *, namespace: str, pod: str, container: str, tail_lines: int, limit_bytes: int
    ) -> str: ...

    def create_job(self, job: Job) -> bool: ...

    def get_deployment(self, *, namespace: str, name: str) -> JsonDict | None: ...

    def check_secret(self, *, namespace: str, name: str) -> SecretCheck: ...

    def check_config_map(self, *, namespace: str, name: str) -> ConfigMapCheck: ...


class FleetAPI(Protocol):
    """The calls a ``DatabaseMigrationSet``'s pass and ``wait dbmset/NAME`` make."""

    def get_set(self, *, namespace: str, name: str) -> JsonDict | None: ...

    def apply_set(self, body: JsonDict, *, field_manager: str) -> JsonDict: ...

    def patch_set(self, *, namespace: str, name: str, patch: JsonDict) -> JsonDict: ...

    def patch_set_status(
        self, *, namespace: str, name: str, status: JsonDict, resource_version: str | None
    ) -> JsonDict: ...

    def ensure_child(self, body: JsonDict, *, owner_uid: str, field_manager: str) -> str: ...

    def delete_migration(self, *, namespace: str, name: str) -> bool: ...

    def secret_names(self, *, namespace: str, selector: str) -> list[str]: ...

    def list_set_jobs(self, *, namespace: str, set_label: str) -> list[Job]: ...

    def delete_job(self, *, namespace: str, name: str) -> bool: ...

    def list_pods(self, *, namespace: str, job: Job) -> list[Pod]: ...

    def create_job(self, job: Job) -> bool: ...

    def check_config_map(self, *, namespace: str, name: str) -> ConfigMapCheck: ...

    def post_event(
        self, *, involved: JsonDict, type: str, reason: str, message: str, component: str
    ) -> None: ...


class Kube:
    """A thin, typed client for exactly the calls the operator makes."""

    def __init__(self, api: client.ApiClient) -> None:
        self._api = api

    @classmethod
    def from_environment(cls, *, kubeconfig: str | None = None) -> Kube:
        """In-cluster credentials when running in a pod, else ``$KUBECONFIG``/``~/.kube/config``.

        An explicit ``kubeconfig`` wins over both. With no credentials, the
        ``KubeError`` says in one line where it looked: what an operator that
        cannot start has to say is where credentials were expected.
        """
        configuration = client.Configuration()
        try:
            if kubeconfig:
                raise config.ConfigException("a kubeconfig was given")
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except config.ConfigException:
            # The client reads $KUBECONFIG once, at import; read it now instead.
            paths = (kubeconfig or os.environ.get("KUBECONFIG", "")).split(os.pathsep)
            try:
                config.load_kube_config(  # type: ignore[no-untyped-call]
                    config_file=paths[0] or None, client_configuration=configuration
                )
            except config.ConfigException as exc:
                token = Path(SERVICE_ACCOUNT_DIR, "token")
                host = os.environ.get("KUBERNETES_SERVICE_HOST")
                in_pod = "exists" if token.exists() else "does not exist"
                service = f"={host}" if host else " unset"
                default = Path("~/.kube/config").expanduser()
                kubeconfig = f"={paths[0]}" if paths[0] else f" unset, {default}"
                raise KubeError(
                    f"no Kubernetes credentials: in-cluster: token {token} {in_pod}, "
                    f"KUBERNETES_SERVICE_HOST{service}; kubeconfig: $KUBECONFIG{kubeconfig}: "
                    + " ".join(str(exc).split())
                ) from exc
        configuration.connection_pool_maxsize = POOL_SIZE
        return cls(client.ApiClient(configuration))

    @staticmethod
    def kubeconfig_namespace() -> str | None:
        """The namespace of ``$KUBECONFIG``'s current context, as kubectl defaults to it."""
        paths = os.environ.get("KUBECONFIG", "").split(os.pathsep)
        try:
            _, active = config.list_kube_config_contexts(config_file=paths[0] or None)  # type: ignore[no-untyped-call]
        except (config.ConfigException, OSError):
            return None
        namespace = ((active or {}).get("context") or {}).get("namespace")
        return str(namespace) if namespace else None

    @classmethod
    def from_service_account(cls, directory: str) -> Kube:
        """In-cluster credentials read from ``directory`` (``token`` and ``ca.crt``).

        The client's own in-cluster loader only reads the fixed standard path;
        taking the directory as an argument lets a caller (and the
        process-kubelet of the tests, which maps mount paths it sees in argv)
        point elsewhere.
        """
        configuration = client.Configuration()
        loader = config.incluster_config.InClusterConfigLoader(  # type: ignore[no-untyped-call]
            token_filename=str(Path(directory, "token")),
            cert_filename=str(Path(directory, "ca.crt")),
        )
        try:
            loader.load_and_set(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except config.ConfigException as exc:
            raise KubeError(f"no in-cluster credentials in {directory}: {exc}") from exc
        configuration.connection_pool_maxsize = POOL_SIZE
        return cls(client.ApiClient(configuration))

    # -- DatabaseMigrations ----------------------------------------------------------

    def apply_migration(self, body: JsonDict, *, field_manager: str) -> Migration:
        """Server-side apply ``body`` (created if absent), taking over conflicting fields."""
        meta = body.get("metadata") or {}
        path = _migration_path(meta.get("namespace", ""), meta.get("name", ""))
        query = {"fieldManager": field_manager, "force": "true"}
        return cast(
            Migration,
            # As text: JSON is YAML, and the client only serialises bodies for JSON types.
            self._request(
                "PATCH", path, query=query, body=json.dumps(body), content_type=APPLY_PATCH
            ),
        )

    def patch_migration(self, *, namespace: str, name: str, patch: JsonDict) -> Migration:
        """Merge ``patch`` into the resource (spec or metadata; status has its own call)."""
        path = _migration_path(namespace, name)
        return cast(Migration, self._request("PATCH", path, body=patch, content_type=MERGE_PATCH))

    def get_migration(self, *, namespace: str, name: str) -> Migration | None:
        try:
            return cast(Migration, self._request("GET", _migration_path(namespace, name)))
        except NotFound:
            return None

    def patch_migration_status(
        self, *, namespace: str, name: str, status: JsonDict, resource_version: str | None
    ) -> Migration:
        """Merge ``status`` into the status subresource.

        With ``resource_version``, the write only succeeds if nobody changed
        the object since it was read (:class:`Conflict` otherwise): two
        handlers recording the same finished Job cannot both append it.
        """
        body: JsonDict = {"status": status}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        path = _migration_path(namespace, name) + "/status"
        return cast(Migration, self._request("PATCH", path, body=body, content_type=MERGE_PATCH))

    # -- DatabaseMigrationSets and their children ------------------------------------

    def get_set(self, *, namespace: str, name: str) -> JsonDict | None:
        try:
            return self._request("GET", _set_path(namespace, name))
        except NotFound:
            return None

    def apply_set(self, body: JsonDict, *, field_manager: str) -> JsonDict:
        """Server-side apply a DatabaseMigrationSet (created if absent), forcing conflicts."""
        meta = body.get("metadata") or {}
        path = _set_path(meta.get("namespace", ""), meta.get("name", ""))
        query = {"fieldManager": field_manager, "force": "true"}
        return self._request(
            "PATCH", path, query=query, body=json.dumps(body), content_type=APPLY_PATCH
        )

    def patch_set(self, *, namespace: str, name: str, patch: JsonDict) -> JsonDict:
        return self._request(
            "PATCH", _set_path(namespace, name), body=patch, content_type=MERGE_PATCH
        )

    def patch_set_status(
        self, *, namespace: str, name: str, status: JsonDict, resource_version: str | None
    ) -> JsonDict:
        """Merge ``status`` into the set's status, only if it is unchanged since read."""
        body: JsonDict = {"status": status}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        path = _set_path(namespace, name) + "/status"
        return self._request("PATCH", path, body=body, content_type=MERGE_PATCH)

    def ensure_child(self, body: JsonDict, *, owner_uid: str, field_manager: str) -> str:
        """Make the set's child ``body`` exist as given: ``created``, ``applied`` or ``conflict``.

        A new child is created (POST: never taking over an object of that name);
        one the set owns (``owner_uid`` controls it) is server-side applied, so
        fields the template dropped go. A DatabaseMigration of that name that
        is not the set's is left alone: ``conflict``.
        """
        meta = body.get("metadata") or {}
        namespace, name = meta.get("namespace", ""), meta.get("name", "")
        existing = self.get_migration(namespace=namespace, name=name)
        if existing is None:
            try:
                self._request("POST", _migrations_path(namespace), body=body)
            except AlreadyExists:
                existing = self.get_migration(namespace=namespace, name=name)
            else:
                return "created"
        owners = (existing or {}).get("metadata", {}).get("ownerReferences") or []
        if not any(o.get("uid") == owner_uid and o.get("controller") for o in owners):
            return "conflict"
        self.apply_migration(body, field_manager=field_manager)
        return "applied"

    def delete_migration(self, *, namespace: str, name: str) -> bool:
        """Delete a set's child (its finalizer waits for a running Job); False if gone."""
        return self._delete(_migration_path(namespace, name))

    def secret_names(self, *, namespace: str, selector: str) -> list[str]:
        """The names of the Secrets ``selector`` matches: metadata only, values never sent."""
        path = f"/api/v1/namespaces/{_q(namespace)}/secrets"
        names: list[str] = []
        token = ""
        while True:
            query = {"labelSelector": selector, "limit": str(LIST_PAGE)}
            if token:
                query["continue"] = token
            page = self._request("GET", path, query=query, accept=METADATA_ONLY)
            names += [
                str((i.get("metadata") or {}).get("name", "")) for i in page.get("items") or []
            ]
            token = str((page.get("metadata") or {}).get("continue") or "")
            if not token:
                return [n for n in names if n]

    def list_set_jobs(self, *, namespace: str, set_label: str) -> list[Job]:
        """The Jobs of a set: its children's runs and its schemas query's pages."""
        query = {"labelSelector": f"{SET_LABEL}={set_label}"}
        data = self._request("GET", f"/apis/batch/v1/namespaces/{_q(namespace)}/jobs", query=query)
        return cast(list[Job], data.get("items") or [])

    def delete_job(self, *, namespace: str, name: str) -> bool:
        """Delete a finished Job and its pods; False if it was gone already."""
        return self._delete(f"/apis/batch/v1/namespaces/{_q(namespace)}/jobs/{_q(name)}")

    def post_event(
        self, *, involved: JsonDict, type: str, reason: str, message: str, component: str
    ) -> None:
        """A core/v1 Event about ``involved`` (apiVersion, kind, name, namespace, uid)."""
        namespace = str(involved.get("namespace", ""))
        now = datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
        event: JsonDict = {
            "metadata": {"namespace": namespace, "generateName": f"{involved.get('name')}."},
            "type": type,
            "reason": reason,
            "message": shorten(message, limit=1024),
            "involvedObject": dict(involved),
            "source": {"component": component},
            "reportingComponent": component,
            "reportingInstance": component,
            "action": reason,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "eventTime": now,
            "count": 1,
        }
        self._request("POST", f"/api/v1/namespaces/{_q(namespace)}/events", body=event)

    def _delete(self, path: str) -> bool:
        try:
            self._request("DELETE", path, body={"propagationPolicy": "Background"})
        except NotFound:
            return False
        return True

    # -- Jobs and pods ---------------------------------------------------------------

    def list_jobs(self, *, namespace: str, migration: str) -> list[Job]:
        """The Jobs of one ``DatabaseMigration`` (by label; ownership is checked by the caller)."""
        query = {"labelSelector": f"{MIGRATION_LABEL}={label_value(migration)}"}
        data = self._request("GET", f"/apis/batch/v1/namespaces/{_q(namespace)}/jobs", query=query)
        return cast(list[Job], data.get("items") or [])

    def list_pods(self, *, namespace: str, job: Job) -> list[Pod]:
        """The pods of ``job``, selected by the controller-uid label the Job controller sets.

        Anyone who may create pods may copy a label; :func:`.decisions.observe.owned_pods`
        then keeps only pods the Job controls (its uid in their owner references).
        """
        meta = job.get("metadata", {})
        uid, name = meta.get("uid"), meta.get("name", "")
        selector = f"batch.kubernetes.io/controller-uid={uid}" if uid else f"job-name={name}"
        query = {"labelSelector": selector}
        data = self._request("GET", f"/api/v1/namespaces/{_q(namespace)}/pods", query=query)
        return cast(list[Pod], data.get("items") or [])

    def read_pod_log(
        self, *, namespace: str, pod: str, container: str, tail_lines: int, limit_bytes: int
    ) -> str:
        """The last ``tail_lines`` lines of a container's log, at most ``limit_bytes`` of them.

        The API server asks the pod's kubelet; both bounds are applied there, so
        no more than ``limit_bytes`` crosses the network whatever the log's size.
        """
        path = f"/api/v1/namespaces/{_q(namespace)}/pods/{_q(pod)}/log"
        query = {
            "container": container,
            "tailLines": str(tail_lines),
            "limitBytes": str(limit_bytes),
        }
        # The log is text; the API refuses an Accept of text/plain, so take whatever it sends.
        raw = self._send("GET", path, query=query, accept="*/*")
        return raw.decode("utf-8", errors="replace")

    def create_job(self, job: Job) -> bool:
        """Create ``job``; False if a Job of that name already exists (adopted, not duplicated)."""
        namespace = job.get("metadata", {}).get("namespace", "")
        try:
            # The Job the API answers with is not read: not parsed either.
            self._send("POST", f"/apis/batch/v1/namespaces/{_q(namespace)}/jobs", body=job)
        except AlreadyExists:
            return False
        return True

    # -- the application's rollout ---------------------------------------------------

    def get_deployment(self, *, namespace: str, name: str) -> JsonDict | None:
        """The Deployment named by ``spec.rollback.deploymentRef``; None if it does not exist."""
        try:
            return self._request(
                "GET", f"/apis/apps/v1/namespaces/{_q(namespace)}/deployments/{_q(name)}"
            )
        except NotFound:
            return None

    # -- references ------------------------------------------------------------------

    def check_secret(self, *, namespace: str, name: str) -> SecretCheck:
        """Whether the Secret exists and its key names. Values are discarded here."""
        try:
            secret = self._request("GET", f"/api/v1/namespaces/{_q(namespace)}/secrets/{_q(name)}")
        except NotFound:
            return SecretCheck(name=name, exists=False)
        keys = frozenset((secret.get("data") or {}).keys()) | frozenset(
            (secret.get("stringData") or {}).keys()
        )
        version = str((secret.get("metadata") or {}).get("resourceVersion", ""))
        del secret
        return SecretCheck(name=name, exists=True, keys=keys, version=version)

    def check_config_map(self, *, namespace: str, name: str) -> ConfigMapCheck:
        try:
            data = self._request("GET", f"/api/v1/namespaces/{_q(namespace)}/configmaps/{_q(name)}")
        except NotFound:
            return ConfigMapCheck(name=name, exists=False)
        fingerprint = fingerprint_config_map(
            data=data.get("data") or {}, binary_data=data.get("binaryData") or {}
        )
        return ConfigMapCheck(name=name, exists=True, fingerprint=fingerprint)

    # -- transport -------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        accept: str = "application/json",
    ) -> JsonDict:
        raw = self._send(
            method, path, query=query, body=body, content_type=content_type, accept=accept
        )
        return cast(JsonDict, json.loads(raw)) if raw else {}

    def _send(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        accept: str = "application/json",
    ) -> bytes:
        headers = {"Accept": accept, "Content-Type": content_type}
        try:
            method, url, headers, payload, _ = self._api.param_serialize(
                method=method,
                resource_path=path,
                query_params=list((query or {}).items()),
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
            )
            response = self._api.call_api(
                method, url, header_params=headers, body=payload, _request_timeout=REQUEST_TIMEOUT
            )
            raw = response.read()  # type: ignore[no-untyped-call]
        except client.ApiException as exc:
            raise _error(exc.status or 0, exc.body or exc.reason or "") from None
        except Exception as exc:  # urllib3 transport errors and the like
            raise KubeError(f"{method} {path}: {redact(str(exc))}") from exc
        if response.status >= 400:
            raise _error(response.status, raw)
        return bytes(raw or b"")


if TYPE_CHECKING:
    _KUBE_IS_A_KUBE_API: type[KubeAPI] = Kube
    _KUBE_IS_A_FLEET_API: type[FleetAPI] = Kube


def _error(status: int, raw: bytes | str) -> KubeError:
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
    try:
        data = json.loads(text)
        reason, message = str(data.get("reason", "")), str(data.get("message", text))
    except (ValueError, AttributeError):
        reason, message = "", text
    message = shorten(redact(message), limit=512)
    if status == 404:
        return NotFound(message, status=status, reason=reason)
    if status == 409:
        kind = AlreadyExists if reason == "AlreadyExists" else Conflict
        return kind(message, status=status, reason=reason)
    if status == 403:
        return Forbidden(message, status=status, reason=reason)
    return KubeError(message, status=status, reason=reason)


def _q(segment: str) -> str:
    return quote(segment, safe="")


def _migration_path(namespace: str, name: str) -> str:
    return f"{_migrations_path(namespace)}/{_q(name)}"


def _migrations_path(namespace: str) -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{_q(namespace)}/{PLURAL}"


def _set_path(namespace: str, name: str) -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{_q(namespace)}/{SET_PLURAL}/{_q(name)}"
