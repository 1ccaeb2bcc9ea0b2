"""Pod volumes as plain directories, and the mapping of mount paths onto them.

Containers share this machine's filesystem: a container's ``/etc/app/config``
cannot exist for one process only. So each volume is materialised as a
directory under the pod's directory, and a container's view is approximated by
rewriting paths: an argv element or env value equal to, or starting with, a
``mountPath`` (or the ``terminationMessagePath``) is rewritten to the local
directory or file. ``--flag=/mount/path`` is rewritten after the ``=`` too.
Paths that a program builds itself or has compiled in are not seen; pass them
explicitly. The exception is what is mounted under ``/var/run/secrets/``, the
in-cluster ServiceAccount token above all: where this machine allows it, it is
really mounted there, in the container's own mount namespace (``privatemounts``).
A path under no mount may still be in the container's image, when the image
has a root filesystem (``images``).
"""

from __future__ import annotations

import posixpath
import shutil
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localkube.environment import field_value
from localkube.images import in_image
from localkube.sources import MissingSourceError, Pod, Sources

DEFAULT_TERMINATION_MESSAGE_PATH = "/dev/termination-log"
_TOKEN_EXPIRATION = 3607


@dataclass(frozen=True)
class Mount:
    """``container_path`` in the pod spec is ``local_path`` on this machine."""

    container_path: str
    local_path: Path


class MountMap:
    """Rewrites container paths to local paths: longest mount first, then the image's root."""

    def __init__(self, mounts: Iterable[Mount], *, image_root: Path | None = None) -> None:
        self.mounts = sorted(
            mounts, key=lambda mount: len(mount.container_path.rstrip("/")), reverse=True
        )
        self.image_root = image_root

    def path(self, value: str) -> str:
        """``value`` with a leading mount path replaced by its local path.

        Under no mount, a path the image's root has is that copy. The rest of
        the path is kept as written: a trailing ``/.`` changes what ``cp -R`` copies.
        """
        for mount in self.mounts:
            root = mount.container_path.rstrip("/") or "/"
            if value == root:
                return str(mount.local_path)
            prefix = root if root.endswith("/") else root + "/"
            if value.startswith(prefix):
                return posixpath.join(str(mount.local_path), value[len(prefix) :])
        if self.image_root is not None:
            return in_image(self.image_root, value) or value
        return value

    def argument(self, value: str) -> str:
        """Like ``path``, also for the value part of ``--flag=/path`` and ``NAME=/path``."""
        mapped = self.path(value)
        if mapped != value or "=" not in value:
            return mapped
        key, _, rest = value.partition("=")
        mapped_rest = self.path(rest)
        return value if mapped_rest == rest else f"{key}={mapped_rest}"


def _write_file(directory: Path, relative: str, content: bytes, mode: int) -> None:
    target = (directory / relative).resolve()
    if not target.is_relative_to(directory.resolve()):
        raise MissingSourceError(f"volume item path {relative!r} escapes the volume")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(content)
    target.chmod(mode)


def _project_keys(
    directory: Path,
    data: Mapping[str, bytes],
    *,
    items: list[dict[str, Any]] | None,
    default_mode: int,
    what: str,
    optional: bool,
) -> None:
    if items:
        for item in items:
            if item["key"] not in data:
                if optional:
                    continue
                raise MissingSourceError(f"{what} has no key {item['key']!r}")
            mode = int(item.get("mode", default_mode))
            _write_file(directory, item["path"], data[item["key"]], mode)
    else:
        for key, value in data.items():
            _write_file(directory, key, value, default_mode)


def _project_source(
    directory: Path,
    pod: Pod,
    source: Mapping[str, Any],
    sources: Sources,
    *,
    default_mode: int,
) -> None:
    namespace = pod["metadata"]["namespace"]
    if "secret" in source or "configMap" in source:
        is_secret = "secret" in source
        spec = source["secret"] if is_secret else source["configMap"]
        name = spec.get("secretName") or spec.get("name")
        data = (sources.secret if is_secret else sources.config_map)(namespace, name)
        what = f"{'secret' if is_secret else 'configmap'} {namespace}/{name}"
        optional = bool(spec.get("optional"))
        if data is None:
            if optional:
                return
            raise MissingSourceError(f"{what} not found")
        mode = int(spec.get("defaultMode", default_mode))
        _project_keys(
            directory,
            data,
            items=spec.get("items"),
            default_mode=mode,
            what=what,
            optional=optional,
        )
    elif "downwardAPI" in source:
        spec = source["downwardAPI"]
        for item in spec.get("items") or []:
            if "fieldRef" not in item:
                raise MissingSourceError(f"unsupported downwardAPI item {sorted(item)}")
            value = field_value(pod, item["fieldRef"]["fieldPath"]).encode()
            mode = int(item.get("mode", spec.get("defaultMode", default_mode)))
            _write_file(directory, item["path"], value, mode)
    elif "serviceAccountToken" in source:
        spec = source["serviceAccountToken"]
        token = sources.service_account_token(
            pod,
            audience=spec.get("audience"),
            expiration=int(spec.get("expirationSeconds", _TOKEN_EXPIRATION)),
        )
        _write_file(directory, spec["path"], token.encode(), default_mode)
    elif "clusterTrustBundle" not in source:
        raise MissingSourceError(f"unsupported projected source {sorted(source)}")


def _atomic_writer_layout(directory: Path) -> None:
    """Lay ``directory`` out as the kubelet's AtomicWriter does for content volumes.

    The files go in a hidden, timestamped directory; ``..data`` links to it,
    and each top-level entry is a symlink through ``..data``. Programs that
    list a mounted ConfigMap see symlinks and two hidden directories, as on a
    real node (Alembic's flat version directory, for one).
    """
    stamp = time.strftime("..%Y_%m_%d_%H_%M_%S.000000001", time.gmtime())
    hidden = directory / stamp
    entries = sorted(directory.iterdir())
    hidden.mkdir()
    for entry in entries:
        entry.rename(hidden / entry.name)
    (directory / "..data").symlink_to(stamp)
    for entry in entries:
        (directory / entry.name).symlink_to(Path("..data") / entry.name)


def materialise(pod: Pod, pod_dir: Path, sources: Sources) -> dict[str, Path]:
    """Create every volume of ``pod`` under ``pod_dir/volumes``; return name -> directory.

    Raises ``MissingSourceError`` when a non-optional Secret or ConfigMap is
    missing, like a kubelet that cannot start the pod yet.
    """
    root = pod_dir / "volumes"
    result: dict[str, Path] = {}
    for volume in pod["spec"].get("volumes") or []:
        name = volume["name"]
        directory = root / name
        if "hostPath" in volume:
            # The host is this machine: the path means itself.
            result[name] = Path(volume["hostPath"]["path"])
            continue
        if "emptyDir" in volume:
            directory.mkdir(parents=True, exist_ok=True)
            result[name] = directory
            continue
        # Content volumes are rebuilt from scratch, then swapped in.
        staging = root / f".{name}.new"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        if "secret" in volume or "configMap" in volume or "downwardAPI" in volume:
            _project_source(staging, pod, volume, sources, default_mode=0o644)
        elif "projected" in volume:
            spec = volume["projected"]
            mode = int(spec.get("defaultMode", 0o644))
            for source in spec.get("sources") or []:
                _project_source(staging, pod, source, sources, default_mode=mode)
        else:
            kinds = sorted(set(volume) - {"name"})
            raise MissingSourceError(f"volume {name!r}: unsupported kind {kinds}")
        _atomic_writer_layout(staging)
        shutil.rmtree(directory, ignore_errors=True)
        staging.rename(directory)
        result[name] = directory
    return result


def container_mounts(
    container: Mapping[str, Any],
    volumes: Mapping[str, Path],
    *,
    termination_file: Path,
    image_root: Path | None = None,
) -> MountMap:
    """The mount map of one container: its volumeMounts plus its termination message file.

    ``image_root`` is the root filesystem of its image, when the image has one.
    """
    mounts = [
        Mount(
            container.get("terminationMessagePath") or DEFAULT_TERMINATION_MESSAGE_PATH,
            termination_file,
        )
    ]
    for mount in container.get("volumeMounts") or []:
        if mount["name"] not in volumes:
            raise MissingSourceError(f"volumeMount {mount['name']!r} names no volume")
        local = volumes[mount["name"]]
        sub_path = mount.get("subPath")
        if sub_path:
            normalised = posixpath.normpath(sub_path)
            if normalised.startswith("..") or posixpath.isabs(normalised):
                raise MissingSourceError(f"subPath {sub_path!r} escapes its volume")
            local = local / normalised
        mounts.append(Mount(mount["mountPath"], local))
    return MountMap(mounts, image_root=image_root)
