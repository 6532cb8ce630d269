"""`r1f run` and `r1f serve` refuse a mistake with one line before any Prefect server starts;
`r1f serve` says it is serving once the deployments are registered."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cli.helpers import Result

Cli = Callable[..., Result]


def test_a_flag_the_flow_does_not_take_or_needs(cli: Cli, tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("store: {root: store}\n")
    cli("run", "verify", "--config", config, "--out", "x").one_line_error(
        2, "--out: the verify flow does not take it (it takes --table)"
    )
    cli("run", "distill", "--config", config, "--table", "mix").one_line_error(
        2, "--version: the distill flow needs it"
    )
    cli("run", "r1-recipe", "--config", config, "--model-dir", "m").one_line_error(
        2, "--model-dir", "takes no flags but --config"
    )
    cli("run", "nonsense", "--config", config).one_line_error(2, "nonsense")


def test_a_bad_config_is_named_before_prefect_starts(cli: Cli, tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("store: {root: store}\nflows: {workers: 0, executor: process}\n")
    cli("run", "generate", "--config", config).one_line_error(2, "flows", "workers")
    config.write_text("store: {root: store}\nflows: {executors: ray}\n")
    cli("run", "generate", "--config", config).one_line_error(2, "executors")
    cli("run", "generate", "--config", tmp_path / "absent.yaml").one_line_error(2, "absent.yaml")
    stage = tmp_path / "stage.yaml"
    stage.write_text("stage: pretrain\nloop: {steps: -1}\n")
    cli("run", "train", "--config", stage).one_line_error(2, "steps")


def test_serve_checks_the_deployments_file(cli: Cli, tmp_path: Path) -> None:
    file = tmp_path / "prefect.yaml"
    cli("serve", "--deployments", file).one_line_error(2, "no such file")
    file.write_text(
        "deployments:\n  - name: a\n    entrypoint: flows/factory.py:verify\n    cron: 1\n"
    )
    cli("serve", "--deployments", file).one_line_error(2, "deployments[0]", "'cron'")


def test_serving_is_announced_once_every_deployment_is_registered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`serve_deployments` says "ready" after the last registration and before the runner
    polls; Ctrl-C in the runner returns normally (the server is then stopped by the caller)."""
    import prefect.runner

    from flows.deployments import serve_deployments

    events: list[str] = []

    class Runner:
        def __init__(self, **kwargs: object) -> None:
            events.append("runner")

        def add_deployment(self, deployment: str) -> None:
            events.append(f"register {deployment}")

        async def start(self) -> None:
            events.append("start")
            raise KeyboardInterrupt

    monkeypatch.setattr(prefect.runner, "Runner", Runner)
    serve_deployments(["a", "b"], ready=lambda n: events.append(f"ready {n}"))
    assert events == ["runner", "register a", "register b", "ready 2", "start"]
