"""`r1f recipe` refuses a mistake with one line and exit 2, before anything trains."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.cli.helpers import REPO, Result

Cli = Callable[..., Result]
STUDY = REPO / "configs" / "r1-toy.yaml"


def test_bad_seeds_and_out(cli: Cli, tmp_path: Path) -> None:
    cli("recipe", "--seeds", "0").one_line_error(2, "--seeds", "must be an integer >= 1, got 0")
    cli("recipe", "--seeds", "three").one_line_error(2, "--seeds", "expected an integer")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "x").write_text("x")
    cli("recipe", "--config", STUDY, "--out", taken).one_line_error(2, "--out", "not empty")
    cli("recipe", "--config", STUDY, "--out", taken, "--force").one_line_error(
        2, "--force", "does not hold an earlier study"
    )
    assert (taken / "x").is_file()
    cli("recipe", "--config", tmp_path / "absent.yaml").one_line_error(2, "absent.yaml")


def test_bad_config_key_is_named(cli: Cli, tmp_path: Path) -> None:
    config = tmp_path / "study.yaml"
    config.write_text(f"extends: {STUDY}\nstudy:\n  worker: 3\n")
    line = cli("recipe", "--config", config, "--out", tmp_path / "o").one_line_error(
        2, "study.worker", "unknown key"
    )
    assert "study.yaml" in line
    config.write_text(f"extends: {STUDY}\nstudy:\n  r1_zero_config: absent-stage.yaml\n")
    cli("recipe", "--config", config, "--out", tmp_path / "o").one_line_error(
        2, "study.r1_zero_config", "absent-stage.yaml"
    )
    config.write_text(
        f"extends: {STUDY}\nstudy:\n  language_config: {REPO}/configs/r1-zero-toy.yaml\n"
    )
    cli("recipe", "--config", config, "--out", tmp_path / "o").one_line_error(
        2, "study.language_config", "is stage r1_zero, not reasoning_rl"
    )
    config.write_text(f"extends: {STUDY}\neval: {{seed: 2}}\n")
    cli("recipe", "--config", config, "--out", tmp_path / "o").one_line_error(
        2, "rejection_prompts.seed equals eval.seed"
    )
    assert not (tmp_path / "o").exists()
