"""Which of a container's volumes are real mounts, in a mount namespace of its own.

Path rewriting (``volumes.MountMap``) reaches the paths a pod spec passes to
its program. The in-cluster ServiceAccount token is read from a path compiled
into every Kubernetes client instead: ``kubernetes.config.load_incluster_config()``,
client-go and kopf all open ``/var/run/secrets/kubernetes.io/serviceaccount/token``
(and ``ca.crt``, ``namespace``), where the API server's ServiceAccount
admission mounts the pod's ``kube-api-access-*`` projected volume. So where
this machine allows it (root), every volume a container mounts under
``/var/run/secrets/`` is also bind-mounted there, in the container's own mount
namespace (made by ``shim``): each container sees its own pod's token, however
many run at once, and the host sees nothing.

Only under ``/var/run/secrets/``: a bind needs its mount point to exist on
this machine, and that is the one tree where creating a directory changes
nothing for anything else. Mount paths elsewhere keep path rewriting only.
A container without a volume there (``automountServiceAccountToken: false``,
as the engine's Jobs) gets no namespace, unless this machine has a token of
its own at the standard path (a kubelet running in a pod): then it is hidden
behind an empty directory, so that such a container has no token, as it would
have on a real node.

Where namespaces cannot be made (not root), ``check_support`` says why and the
kubelet logs it once: tokens then reach a container only through paths in its
argv and env.
"""

from __future__ import annotations

import posixpath
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from localkube.containers import SHIM
from localkube.shim import PrivateMounts

SECRETS_DIR = "/var/run/secrets"
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
CHECK_TIMEOUT = 30.0


def _under(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory + "/")


def private_mounts(
    container: Mapping[str, Any],
    volumes: Mapping[str, Path],
    *,
    host_token_dir: Path = Path(SERVICE_ACCOUNT_DIR),
) -> PrivateMounts:
    """The binds (and mask) ``container`` needs: its volume mounts under ``/var/run/secrets/``.

    ``volumes`` are the pod's materialised volumes (``volumes.materialise``).
    A mount whose volume is not a directory here (a ``subPath`` naming a
    file) is left to path rewriting.
    """
    binds: list[tuple[str, str, bool]] = []
    for mount in container.get("volumeMounts") or []:
        target = posixpath.normpath(str(mount["mountPath"]))
        local = volumes.get(mount["name"])
        if local is None or not _under(target, SECRETS_DIR):
            continue
        sub_path = mount.get("subPath")
        if sub_path:
            local = local / posixpath.normpath(sub_path)
        if local.is_dir():
            binds.append((str(local), target, bool(mount.get("readOnly"))))
    binds.sort(key=lambda bind: bind[1])  # a parent, a prefix, before what is mounted in it
    covered = any(_under(SERVICE_ACCOUNT_DIR, target) for _, target, _ in binds)
    masks = () if covered or not _has_entries(host_token_dir) else (SERVICE_ACCOUNT_DIR,)
    return PrivateMounts(binds=tuple(binds), masks=masks)


def _has_entries(directory: Path) -> bool:
    try:
        return any(directory.iterdir())
    except OSError:
        return False


def check_support(target: str = SERVICE_ACCOUNT_DIR) -> str | None:
    """None when containers can have ``target`` bound in their own namespace; else why not.

    It runs the shim's own check (``shim.py --check``), so it answers for
    exactly the code that will make the mounts. As a side effect the mount
    point ``target`` exists afterwards, on this machine, empty.
    """
    try:
        done = subprocess.run(
            [sys.executable, "-I", "-S", str(SHIM), "--check", target],
            capture_output=True,
            text=True,
            check=False,
            timeout=CHECK_TIMEOUT,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return str(error)
    if done.returncode == 0:
        return None
    return " ".join((done.stderr or done.stdout).split()) or f"exit status {done.returncode}"
