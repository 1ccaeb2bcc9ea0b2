"""A container's environment and argv, computed the way the kubelet does.

Pure functions of the pod, the container and ``Sources``: ``envFrom`` first
(values taken literally), then ``env`` in order, each ``value`` expanded with
``$(VAR)`` against what is defined so far; ``command`` and ``args`` are
expanded against the result. ``$$`` escapes a dollar and an undefined
``$(VAR)`` stays as written, as in Kubernetes' ``third_party/forked/golang/expansion``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from localkube.sources import MissingSourceError, Pod, Sources

POD_IP = "127.0.0.1"
HOST_IP = "127.0.0.1"

# envFrom keys that are not valid variable names are skipped, as by the kubelet.
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_SUBSCRIPT = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")


def expand(text: str, lookup: Callable[[str], str | None]) -> str:
    """Kubernetes ``$(VAR)`` expansion of ``text``."""
    out: list[str] = []
    cursor = 0
    checkpoint = 0
    while cursor < len(text):
        if text[cursor] == "$" and cursor + 1 < len(text):
            out.append(text[checkpoint:cursor])
            following = text[cursor + 1]
            if following == "$":
                out.append("$")
                advance = 1
            elif following == "(":
                close = text.find(")", cursor + 2)
                if close == -1:
                    out.append("$(")
                    advance = 1
                else:
                    name = text[cursor + 2 : close]
                    value = lookup(name)
                    out.append(value if value is not None else f"$({name})")
                    advance = close - cursor
            else:
                out.append("$" + following)
                advance = 1
            cursor += advance
            checkpoint = cursor + 1
        cursor += 1
    out.append(text[checkpoint:])
    return "".join(out)


def field_value(pod: Pod, path: str) -> str:
    """The value of a downward-API ``fieldRef.fieldPath``."""
    metadata = pod.get("metadata", {})
    subscript = _SUBSCRIPT.match(path)
    if subscript:
        return str((metadata.get(subscript.group(1)) or {}).get(subscript.group(2), ""))
    simple: dict[str, Callable[[], Any]] = {
        "metadata.name": lambda: metadata.get("name", ""),
        "metadata.namespace": lambda: metadata.get("namespace", ""),
        "metadata.uid": lambda: metadata.get("uid", ""),
        "metadata.labels": lambda: _key_values(metadata.get("labels") or {}),
        "metadata.annotations": lambda: _key_values(metadata.get("annotations") or {}),
        "spec.nodeName": lambda: pod.get("spec", {}).get("nodeName", ""),
        "spec.serviceAccountName": lambda: pod.get("spec", {}).get("serviceAccountName", ""),
        "status.hostIP": lambda: HOST_IP,
        "status.hostIPs": lambda: HOST_IP,
        "status.podIP": lambda: POD_IP,
        "status.podIPs": lambda: POD_IP,
    }
    if path not in simple:
        raise MissingSourceError(f"unsupported fieldPath {path!r}")
    return str(simple[path]())


def _key_values(mapping: Mapping[str, str]) -> str:
    # The downward API's file format for labels and annotations.
    return "\n".join(f'{key}="{value}"' for key, value in sorted(mapping.items()))


def _resource_value(container: Mapping[str, Any], ref: Mapping[str, Any]) -> str:
    kind, _, name = str(ref["resource"]).partition(".")
    value = (container.get("resources", {}).get(kind) or {}).get(name)
    if value is None:
        # Unset limits default to the node's allocatable, as in Kubernetes.
        value = {"cpu": "4", "memory": "8Gi", "ephemeral-storage": "20Gi"}.get(name, "0")
    return str(value)


def _key_ref(
    sources: Sources, namespace: str, ref: Mapping[str, Any], *, secret: bool
) -> str | None:
    kind = "secret" if secret else "configmap"
    data = (sources.secret if secret else sources.config_map)(namespace, ref["name"])
    optional = bool(ref.get("optional"))
    if data is None or ref["key"] not in data:
        if optional:
            return None
        raise MissingSourceError(f"{kind} {namespace}/{ref['name']} key {ref['key']!r} not found")
    return data[ref["key"]].decode(errors="replace")


def _env_from(namespace: str, sources: Sources, source: Mapping[str, Any]) -> dict[str, str]:
    """The variables of one ``envFrom`` entry (values literal, invalid names skipped)."""
    prefix = source.get("prefix", "")
    is_secret = "secretRef" in source
    ref = source.get("secretRef") if is_secret else source.get("configMapRef")
    if ref is None:
        return {}
    data = (sources.secret if is_secret else sources.config_map)(namespace, ref["name"])
    if data is None:
        if ref.get("optional"):
            return {}
        kind = "secret" if is_secret else "configmap"
        raise MissingSourceError(f"{kind} {namespace}/{ref['name']} not found")
    return {
        prefix + key: raw.decode(errors="replace")
        for key, raw in data.items()
        if _ENV_NAME.match(prefix + key)
    }


def _value_from(
    pod: Pod, container: Mapping[str, Any], sources: Sources, var: Mapping[str, Any]
) -> str | None:
    """The value of an ``env`` entry with ``valueFrom``; None for a missing optional key."""
    namespace = pod["metadata"]["namespace"]
    source = var["valueFrom"]
    if "fieldRef" in source:
        return field_value(pod, source["fieldRef"]["fieldPath"])
    if "resourceFieldRef" in source:
        return _resource_value(container, source["resourceFieldRef"])
    if "secretKeyRef" in source:
        return _key_ref(sources, namespace, source["secretKeyRef"], secret=True)
    if "configMapKeyRef" in source:
        return _key_ref(sources, namespace, source["configMapKeyRef"], secret=False)
    raise MissingSourceError(f"unsupported valueFrom for {var['name']}: {sorted(source)}")


def container_env(
    pod: Pod,
    container: Mapping[str, Any],
    sources: Sources,
    *,
    service_env: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The variables the pod spec defines for ``container`` (without the host's base env)."""
    namespace = pod["metadata"]["namespace"]
    env: dict[str, str] = dict(service_env or {})
    for source in container.get("envFrom") or []:
        env.update(_env_from(namespace, sources, source))
    for var in container.get("env") or []:
        if "valueFrom" in var:
            value = _value_from(pod, container, sources, var)
            if value is not None:
                env[var["name"]] = value
        else:
            env[var["name"]] = expand(var.get("value", ""), env.get)
    return env


def container_argv(container: Mapping[str, Any], env: Mapping[str, str]) -> list[str]:
    """``command`` + ``args`` expanded against ``env`` (there is no image entrypoint here)."""
    command = list(container.get("command") or [])
    args = list(container.get("args") or [])
    if not command:
        # No image, so no ENTRYPOINT: args alone are taken as the command line.
        command, args = args, []
    if not command:
        raise MissingSourceError(
            f"container {container['name']!r} has neither command nor args; "
            "the process-kubelet cannot run an image's entrypoint"
        )
    return [expand(part, env.get) for part in command + args]
