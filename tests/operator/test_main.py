"""Running the operator: flags, environment, defaults."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from revisor_operator.main import build_parser, settings_from
from revisor_operator.settings import DEFAULT_LIVENESS, Settings


def test_environment_configures_namespaces_and_runner_image() -> None:
    env = Settings.from_env(
        {
            "REVISOR_NAMESPACES": "shop, billing",
            "REVISOR_RUNNER_IMAGE": "r:1",
            "REVISOR_METRICS_PORT": "0",
        }
    )
    assert env.namespaces == ("shop", "billing")
    assert env.runner_image == "r:1"
    assert env.metrics_port == 0
    assert env.liveness == DEFAULT_LIVENESS


def test_flags_override_the_environment() -> None:
    env = Settings.from_env({"REVISOR_NAMESPACES": "shop"})
    args = build_parser().parse_args(
        ["-n", "a", "-n", "b", "--runner-image", "x:2", "--liveness", ""]
    )
    settings = settings_from(args, env)
    assert settings.namespaces == ("a", "b")
    assert settings.runner_image == "x:2"
    assert settings.liveness is None


def test_all_namespaces_flag_ignores_the_environment_list() -> None:
    env = Settings.from_env({"REVISOR_NAMESPACES": "shop"})
    assert settings_from(build_parser().parse_args(["-A"]), env).namespaces == ()


def test_the_resync_and_polls_come_at_the_settings_intervals() -> None:
    """REVISOR_RESYNC_SECONDS and REVISOR_ROLLOUT_POLL_SECONDS reach the work queue's schedule
    through Settings, read once where the handlers are registered (here: kopf_entry, kopf run
    -m); and kopf has no timer on DatabaseMigrations (it would keep each one's body in memory).

    A fresh interpreter: kopf_entry registers into kopf's default registry on import.
    """
    probe = (
        "from kopf._core.intents import registries\n"
        "from revisor_operator import handlers, kopf_entry\n"
        "timers = [t for t in registries.get_default_registry()._spawning.get_all_handlers()\n"
        "          if t.selector.plural == 'databasemigrations']\n"
        "settings = kopf_entry.SETTINGS\n"
        "every, _ = handlers.schedule(settings, labels={}, status={})\n"
        "child, _ = handlers.schedule(settings, labels={'revisor.dev/set': 's'}, status={})\n"
        "_, poll = handlers.schedule(settings, labels={}, status={'rollout': {'state': 'Watching'}})\n"
        "_, progress = handlers.schedule(settings, labels={}, status={'phase': 'Running'})\n"
        "print(len(timers), every, settings.resync_seconds, child, poll[0], poll[1],\n"
        "      settings.rollout_poll_seconds, progress[0], progress[1])\n"
    )
    env = {
        **os.environ,
        "REVISOR_RESYNC_SECONDS": "7.5",
        "REVISOR_ROLLOUT_POLL_SECONDS": "2.5",
        "REVISOR_PROGRESS_POLL_SECONDS": "1.5",
        "REVISOR_FLEET_CHILD_RESYNC_SECONDS": "99",
    }
    out = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert out.split() == ["0", "7.5", "7.5", "99.0", "2.5", "rollout", "2.5", "1.5", "progress"]
    defaults = Settings.from_env({})
    assert (defaults.resync_seconds, defaults.rollout_poll_seconds) == (30.0, 5.0)


def test_kubeconfig_flag_is_used_and_a_bad_one_is_named_in_one_line(tmp_path: Path) -> None:
    """`revisor-operator --kubeconfig PATH`, as `wait` takes it; a path without a config fails
    at once, saying which file, before kopf or the metrics server start."""
    missing = tmp_path / "nowhere.yaml"
    done = subprocess.run(
        [sys.executable, "-m", "revisor_operator.main", "--kubeconfig", str(missing),
         "--metrics-port", "0", "--log-format", "console"],
        env={**os.environ, "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 1, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("revisor-operator: no Kubernetes credentials")
    assert f"$KUBECONFIG={missing}" in lines[0]
