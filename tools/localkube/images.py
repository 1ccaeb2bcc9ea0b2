"""Image filesystems for the process-kubelet: an image may be a local directory.

There is no container runtime, so nothing is pulled or unpacked: a container
runs from this machine's environment (``containers``). For most images that
is the point (the runner image *is* this checkout). But some images matter
for their files, e.g. a scripts image whose init container runs
``cp -R /app/migrations/. /scripts/``. For those the kubelet has a registry
that is a directory (``--images-dir``; ``LocalCluster`` uses
``<state-dir>/images``)::

    <images-dir>/<reference, quoted>/     the image's root filesystem
    <images-dir>/<reference, quoted>      a file instead: pulling it fails

The reference is taken as the pod spec writes it (no ``docker.io/library/``
or ``:latest`` is added) and quoted as one path segment (``image_dir``):
``registry.example/shop:1.0`` is ``registry.example%2Fshop:1.0``. It is
looked up each time a container starts, so an image is created, even while
the kubelet runs, by making that directory, or a symlink to any directory.
An image with neither behaves as it always did. A file in its place makes the
container wait in ``ErrImagePull``, then ``ImagePullBackOff``, with the
file's content as the message, until a directory replaces it.

A container whose image has a root sees it by path rewriting, as it sees its
volumes (``volumes.MountMap``): an absolute path in its command, args, env
values or workingDir that is under no volume mount (mounts win) and exists
under the root means the root's copy. A bare command name still resolves on
the kubelet's PATH (the host's ``cp`` stands in for the image's) and a path
the image does not have keeps its meaning on this machine. The root is
shared by every container of the image and is not copy-on-write: treat it as
read-only, as ``readOnlyRootFilesystem`` does.

The kubelet advertises the directory on its Node (annotation
``localkube.dev/images-dir``), so tests against a running cluster find it.
"""

from __future__ import annotations

import os
import posixpath
from pathlib import Path
from urllib.parse import quote

IMAGES_DIR_ANNOTATION = "localkube.dev/images-dir"


class ImagePullError(Exception):
    """The image is registered as one that cannot be pulled."""


def image_dir(images_dir: Path, reference: str) -> Path:
    """Where ``reference``'s root filesystem lives in the registry ``images_dir``."""
    name = quote(reference, safe=":@")
    if name in {"", ".", ".."}:
        raise ValueError(f"not an image reference: {reference!r}")
    return images_dir / name


class ImageRegistry:
    """The image roots of one kubelet; without a directory, no image has one."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory

    def root(self, reference: str) -> Path | None:
        """The root filesystem of ``reference``, or None when it has none.

        Raises ``ImagePullError`` when the image is registered as failing to pull.
        """
        if self.directory is None or not reference:
            return None
        try:
            path = image_dir(self.directory, reference)
        except ValueError:
            return None
        if path.is_dir():
            return path
        if path.is_file():
            message = path.read_text(errors="replace").strip()
            raise ImagePullError(message or "the registry refused it")
        return None


def in_image(root: Path, value: str) -> str | None:
    """``value`` as a path in the image at ``root``, if it is absolute and exists there.

    ``..`` stops at the image's ``/`` as it does in a container; a trailing
    ``/`` or ``/.`` is kept, because it changes what ``cp -R`` copies.
    """
    if not value.startswith("/"):
        return None
    inside = posixpath.normpath(value).lstrip("/")
    local = f"{root}/{inside}" if inside else str(root)
    if not os.path.lexists(local):
        return None
    tail = "/." if value.endswith("/.") else "/" if value.endswith("/") else ""
    return local + tail
