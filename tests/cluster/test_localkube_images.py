"""Image root filesystems of the process-kubelet, without a cluster.

An image registered in the kubelet's images directory lends its files to its
containers by path: a path under no volume mount that the image has is the
image's copy. Everything else means what it always did.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from localkube.images import ImagePullError, ImageRegistry, image_dir
from localkube.volumes import Mount, MountMap, container_mounts


@pytest.fixture
def image(tmp_path: Path) -> Path:
    """An image root with ``/app/migrations/{a.py,.hidden}`` and ``/usr/bin/tool``."""
    root = tmp_path / "image"
    (root / "app" / "migrations").mkdir(parents=True)
    (root / "app" / "migrations" / "a.py").write_text("a")
    (root / "app" / "migrations" / ".hidden").write_text("h")
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "usr" / "bin" / "tool").write_text("#!/bin/sh\n")
    return root


def test_an_image_reference_is_one_directory_name_in_the_registry(tmp_path: Path) -> None:
    assert image_dir(tmp_path, "registry.example/shop:1.0") == (
        tmp_path / "registry.example%2Fshop:1.0"
    )
    assert image_dir(tmp_path, "shop@sha256:ab12").name == "shop@sha256:ab12"
    assert image_dir(tmp_path, "a%2Fb").name == "a%252Fb"  # quoting is one-to-one
    with pytest.raises(ValueError, match="not an image reference"):
        image_dir(tmp_path, "..")


def test_registry_finds_a_directory_or_symlink_per_image_and_nothing_else(
    tmp_path: Path, image: Path
) -> None:
    registry = ImageRegistry(tmp_path / "images")
    assert registry.root("registry.example/shop:1.0") is None  # not even the directory exists
    (tmp_path / "images").mkdir()
    image_dir(tmp_path / "images", "registry.example/shop:1.0").mkdir()
    image_dir(tmp_path / "images", "linked:2").symlink_to(image)
    assert registry.root("registry.example/shop:1.0") == image_dir(
        tmp_path / "images", "registry.example/shop:1.0"
    )
    assert registry.root("linked:2") == image_dir(tmp_path / "images", "linked:2")
    assert registry.root("registry.example/shop:1.1") is None
    assert registry.root("") is None
    assert registry.root("..") is None
    assert ImageRegistry().root("registry.example/shop:1.0") is None


def test_a_file_in_place_of_an_image_is_an_image_that_cannot_be_pulled(tmp_path: Path) -> None:
    registry = ImageRegistry(tmp_path)
    image_dir(tmp_path, "private/shop:1").write_text("401 Unauthorized\n")
    image_dir(tmp_path, "gone:1").write_text("")
    with pytest.raises(ImagePullError, match=r"^401 Unauthorized$"):
        registry.root("private/shop:1")
    with pytest.raises(ImagePullError, match=r"^the registry refused it$"):
        registry.root("gone:1")


def test_paths_the_image_has_are_its_files_and_mounts_win(tmp_path: Path, image: Path) -> None:
    (image / "scripts").mkdir()
    mounts = MountMap(
        [Mount("/scripts", tmp_path / "vol"), Mount("/app/migrations/a.py", tmp_path / "a")],
        image_root=image,
    )
    assert mounts.path("/app/migrations") == f"{image}/app/migrations"
    assert mounts.path("/usr/bin/tool") == f"{image}/usr/bin/tool"
    assert mounts.path("/scripts/x") == str(
        tmp_path / "vol" / "x"
    )  # a mount, though the image has it
    assert mounts.path("/app/migrations/a.py") == str(tmp_path / "a")
    assert mounts.path("/app/missing") == "/app/missing"  # not in the image: this machine's
    assert mounts.path("/usr") == f"{image}/usr"
    assert mounts.path("/") == f"{image}/"
    assert mounts.path("cp") == "cp"
    assert mounts.path("app/migrations") == "app/migrations"
    assert mounts.argument("--from=/app/migrations") == f"--from={image}/app/migrations"


def test_image_paths_keep_a_trailing_dot_and_never_leave_the_image(image: Path) -> None:
    mounts = MountMap([], image_root=image)
    assert mounts.path("/app/migrations/.") == f"{image}/app/migrations/."
    assert mounts.path("/app/migrations/") == f"{image}/app/migrations/"
    # A container's /.. is its /: the path stays inside the image (or is not the image's).
    assert mounts.path("/../../app/migrations") == f"{image}/app/migrations"
    assert mounts.path("/app/../usr/bin/tool") == f"{image}/usr/bin/tool"


def test_volume_paths_keep_what_follows_the_mount_as_written(tmp_path: Path) -> None:
    mounts = MountMap([Mount("/src", tmp_path / "src")])
    assert mounts.path("/src/.") == f"{tmp_path / 'src'}/."
    assert mounts.path("/src/") == f"{tmp_path / 'src'}/"
    assert mounts.path("/src/a/b") == str(tmp_path / "src" / "a" / "b")


def test_copying_an_image_directory_into_a_volume_copies_its_content(
    tmp_path: Path, image: Path
) -> None:
    """What the operator's scripts init container runs, with its paths mapped."""
    scripts = tmp_path / "volumes" / "scripts"
    scripts.mkdir(parents=True)
    container: dict[str, Any] = {
        "name": "scripts",
        "image": "registry.example/shop:1.0",
        "command": ["cp", "-R", "/app/migrations/.", "/scripts/"],
        "volumeMounts": [{"name": "scripts", "mountPath": "/scripts"}],
    }
    mounts = container_mounts(
        container, {"scripts": scripts}, termination_file=tmp_path / "term", image_root=image
    )
    argv = [mounts.argument(part) for part in container["command"]]
    assert argv == ["cp", "-R", f"{image}/app/migrations/.", f"{scripts}/"]
    subprocess.run(argv, check=True)
    assert sorted(p.name for p in scripts.iterdir()) == [".hidden", "a.py"]


def test_without_an_image_root_paths_outside_mounts_are_left_alone(
    tmp_path: Path, image: Path
) -> None:
    mounts = container_mounts({"name": "c"}, {}, termination_file=tmp_path / "term")
    assert mounts.path("/app/migrations") == "/app/migrations"
    assert mounts.path(str(image)) == str(image)
