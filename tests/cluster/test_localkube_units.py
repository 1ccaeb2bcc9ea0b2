"""The process-kubelet's pure parts, without a cluster: expansion, env, volumes, mount paths."""

from __future__ import annotations

import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# tests/cluster/conftest.py puts tools/ on sys.path when the Makefile has not.
from localkube.api import NO_ANSWER, Api, ApiError, Credentials
from localkube.environment import container_argv, container_env, expand
from localkube.sources import MissingSourceError
from localkube.volumes import Mount, MountMap, container_mounts, materialise

from tests.support.kube import localkube

TOOLS = Path(__file__).resolve().parents[2] / "tools"
VARS = {"A": "alpha", "EMPTY": ""}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$(A)", "alpha"),
        ("x-$(A)-y", "x-alpha-y"),
        ("$(A)$(A)", "alphaalpha"),
        ("$(EMPTY)z", "z"),
        ("$(MISSING)", "$(MISSING)"),
        ("$$(A)", "$(A)"),
        ("$$$(A)", "$alpha"),
        ("$(A", "$(A"),
        ("$A", "$A"),
        ("cost: 5$", "cost: 5$"),
        ("", ""),
    ],
)
def test_expand_follows_kubernetes_rules(text: str, expected: str) -> None:
    assert expand(text, VARS.get) == expected


class FakeSources:
    def __init__(self) -> None:
        self.secrets = {"db": {"password": b"pw", "user": b"u"}}
        self.config_maps = {"app": {"mode": b"strict", "bad key": b"x", "settings": b"[a]\n"}}

    def secret(self, namespace: str, name: str) -> dict[str, bytes] | None:
        return self.secrets.get(name)

    def config_map(self, namespace: str, name: str) -> dict[str, bytes] | None:
        return self.config_maps.get(name)

    def service_account_token(self, pod: Any, *, audience: str | None, expiration: int) -> str:
        return f"token-for-{pod['metadata']['name']}"


POD: dict[str, Any] = {
    "metadata": {"name": "p", "namespace": "ns", "uid": "u-1", "labels": {"b": "2", "a": "1"}},
    "spec": {"nodeName": "localkube", "serviceAccountName": "runner"},
}


def test_env_orders_envfrom_then_env_with_expansion_of_earlier_values() -> None:
    container = {
        "name": "c",
        "envFrom": [{"configMapRef": {"name": "app"}, "prefix": "APP_"}],
        "env": [
            {"name": "FIRST", "value": "$(APP_mode)-1"},
            {"name": "SECOND", "value": "$(FIRST)-$(LATER)"},
            {"name": "LATER", "value": "late"},
            {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "LABEL", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['a']"}}},
            {
                "name": "GONE",
                "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k", "optional": True}},
            },
        ],
    }
    env = container_env(POD, container, FakeSources(), service_env={"KUBERNETES_SERVICE_HOST": "h"})
    assert env["APP_mode"] == "strict"
    assert "APP_bad key" not in env  # not a valid variable name: skipped, as by the kubelet
    assert env["FIRST"] == "strict-1"
    assert env["SECOND"] == "strict-1-$(LATER)"  # only variables defined earlier expand
    assert env["PW"] == "pw"
    assert env["NS"] == "ns"
    assert env["LABEL"] == "1"
    assert "GONE" not in env
    assert env["KUBERNETES_SERVICE_HOST"] == "h"


def test_missing_required_secret_key_is_reported() -> None:
    container = {
        "name": "c",
        "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "db", "key": "nope"}}}],
    }
    with pytest.raises(MissingSourceError, match="key 'nope'"):
        container_env(POD, container, FakeSources())


def test_argv_expands_command_and_args_against_env() -> None:
    container = {"name": "c", "command": ["run", "$(MODE)"], "args": ["--x=$(MODE)", "$$(MODE)"]}
    assert container_argv(container, {"MODE": "fast"}) == ["run", "fast", "--x=fast", "$(MODE)"]


def test_argv_without_command_runs_args() -> None:
    assert container_argv({"name": "c", "args": ["python", "-V"]}, {}) == ["python", "-V"]
    with pytest.raises(MissingSourceError, match="neither command nor args"):
        container_argv({"name": "c"}, {})


def test_mount_map_rewrites_paths_under_the_longest_mount(tmp_path: Path) -> None:
    mounts = MountMap(
        [
            Mount("/etc/app", tmp_path / "app"),
            Mount("/etc/app/secrets/", tmp_path / "secrets"),
            Mount("/dev/termination-log", tmp_path / "term"),
        ]
    )
    assert mounts.path("/etc/app") == str(tmp_path / "app")
    assert mounts.path("/etc/app/conf.ini") == str(tmp_path / "app" / "conf.ini")
    assert mounts.path("/etc/app/secrets/pw") == str(tmp_path / "secrets" / "pw")
    assert mounts.path("/etc/application") == "/etc/application"  # a prefix, not a parent
    assert mounts.path("relative/etc/app") == "relative/etc/app"
    assert mounts.path("/dev/termination-log") == str(tmp_path / "term")
    assert mounts.argument("--config=/etc/app/c.ini") == f"--config={tmp_path / 'app' / 'c.ini'}"
    assert mounts.argument("--name=value") == "--name=value"


def test_container_mounts_map_termination_path_and_sub_paths(tmp_path: Path) -> None:
    volumes = {"data": tmp_path / "data"}
    container = {
        "name": "c",
        "terminationMessagePath": "/tmp/msg",
        "volumeMounts": [{"name": "data", "mountPath": "/srv/one", "subPath": "one"}],
    }
    mounts = container_mounts(container, volumes, termination_file=tmp_path / "term")
    assert mounts.path("/tmp/msg") == str(tmp_path / "term")
    assert mounts.path("/srv/one/f") == str(tmp_path / "data" / "one" / "f")
    escaping = {
        **container,
        "volumeMounts": [{"name": "data", "mountPath": "/x", "subPath": "../"}],
    }
    with pytest.raises(MissingSourceError, match="escapes"):
        container_mounts(escaping, volumes, termination_file=tmp_path / "term")


def test_materialise_writes_items_modes_downward_api_and_tokens(tmp_path: Path) -> None:
    pod = {
        **POD,
        "spec": {
            **POD["spec"],
            "volumes": [
                {
                    "name": "cfg",
                    "configMap": {
                        "name": "app",
                        "items": [{"key": "settings", "path": "conf/app.ini", "mode": 0o600}],
                    },
                },
                {"name": "sec", "secret": {"secretName": "db", "defaultMode": 0o400}},
                {"name": "opt", "secret": {"secretName": "absent", "optional": True}},
                {"name": "scratch", "emptyDir": {}},
                {
                    "name": "api",
                    "projected": {
                        "sources": [
                            {"serviceAccountToken": {"path": "token"}},
                            {
                                "downwardAPI": {
                                    "items": [
                                        {
                                            "path": "labels",
                                            "fieldRef": {"fieldPath": "metadata.labels"},
                                        }
                                    ]
                                }
                            },
                        ]
                    },
                },
            ],
        },
    }
    volumes = materialise(pod, tmp_path, FakeSources())
    ini = volumes["cfg"] / "conf" / "app.ini"
    assert ini.read_text() == "[a]\n"
    assert ini.stat().st_mode & 0o777 == 0o600
    assert not (volumes["cfg"] / "mode").exists()  # items select keys
    assert (volumes["sec"] / "password").read_bytes() == b"pw"
    assert (volumes["sec"] / "user").stat().st_mode & 0o777 == 0o400
    assert [e.name for e in volumes["opt"].iterdir() if not e.name.startswith("..")] == []
    assert volumes["scratch"].is_dir()
    assert (volumes["api"] / "token").read_text() == "token-for-p"
    assert (volumes["api"] / "labels").read_text() == 'a="1"\nb="2"'
    # As the kubelet lays them out: each key a symlink through ..data to a hidden directory.
    sec = volumes["sec"]
    assert (sec / "password").is_symlink()
    assert str((sec / "password").readlink()) == "..data/password"
    assert (sec / "..data").is_symlink() and (sec / "..data").resolve().name.startswith("..")
    assert sorted(e.name for e in sec.iterdir() if not e.name.startswith("..")) == [
        "password",
        "user",
    ]


def test_materialise_refuses_missing_secret_and_escaping_item(tmp_path: Path) -> None:
    missing = {**POD, "spec": {"volumes": [{"name": "s", "secret": {"secretName": "absent"}}]}}
    with pytest.raises(MissingSourceError, match="not found"):
        materialise(missing, tmp_path, FakeSources())
    escaping_item = {"key": "mode", "path": "../../evil"}
    escaping = {
        **POD,
        "spec": {
            "volumes": [{"name": "c", "configMap": {"name": "app", "items": [escaping_item]}}]
        },
    }
    with pytest.raises(MissingSourceError, match="escapes"):
        materialise(escaping, tmp_path, FakeSources())


# -- the HTTP client: no answer is an error answer -------------------------------------


@pytest.fixture
def hang_up_server() -> Iterator[str]:
    """A TCP server that accepts each connection and closes it without a word."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    listener.close()


def _refused_url() -> str:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # closed again: connections are refused


@pytest.mark.parametrize("where", ["refused", "hung-up"])
def test_a_dropped_or_refused_connection_is_an_api_error_callers_retry(
    where: str, hang_up_server: str, tmp_path: Path
) -> None:
    """A pod worker retries on ApiError; a reset must not escape as something else and kill it."""
    server = _refused_url() if where == "refused" else hang_up_server
    ca = tmp_path / "ca.crt"
    ca.write_text("")
    api = Api(Credentials(server=server, ca_file=ca), timeout=2.0)
    for call in (lambda: api.get("/api/v1/pods"), lambda: api.get_text("/readyz")):
        with pytest.raises(ApiError) as raised:
            call()
        assert raised.value.status == NO_ANSWER
        assert raised.value.path in {"/api/v1/pods", "/readyz"}


# -- the detached daemon's pid file ------------------------------------------------------


def test_down_never_signals_a_stranger_holding_a_stale_pid(tmp_path: Path) -> None:
    """After a reboot or a SIGKILL the recorded pid may be anyone's: not running, not killed."""
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        state_dir = tmp_path / "cluster"
        state_dir.mkdir()
        (state_dir / "localkube.pid").write_text(f"{stranger.pid}\n")
        status = localkube("status", "--state-dir", str(state_dir))
        assert status.returncode == 1
        assert "not running" in status.stdout
        down = localkube("down", "--state-dir", str(state_dir))
        assert down.returncode == 0
        assert "nothing running" in down.stderr
        assert stranger.poll() is None  # still alive: it was not sent SIGTERM
        assert not (state_dir / "localkube.pid").exists()
    finally:
        stranger.kill()
        stranger.wait()
