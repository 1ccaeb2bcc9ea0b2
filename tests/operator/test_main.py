"""Running the operator: flags, environment, defaults."""

from __future__ import annotations

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
