"""`r1f recipe`: the toy R1 recipe's comparison study over several seeds (flows/study.py),
writing OUT/results.json and OUT/results.md (docs/results.md)."""

from __future__ import annotations

import argparse
import shutil
from typing import Any

from flows.cli.common import UserError, add_command, int_at_least, new_directory


def cmd_recipe(args: argparse.Namespace) -> int:
    from pathlib import Path

    from flows.environment import set_prefect_environment

    set_prefect_environment()  # before anything imports prefect
    config = Path(args.config)
    if not config.is_file():
        raise UserError(f"--config {config}: no such file; name the study config")
    previous = Path(args.out)
    if args.force and previous.is_dir() and any(previous.iterdir()):
        # Only a directory an earlier study wrote: --force must never clear anything else.
        if not ((previous / "runs").is_dir() and (previous / "store").is_dir()):
            raise UserError(
                f"--force: {previous} does not hold an earlier study (runs/ and store/); "
                "name a new directory or clear it yourself"
            )
        shutil.rmtree(previous)
    out = new_directory(args.out, "--out")
    # Loaded (with every stage config it names) before anything starts: a mistake is one line.
    from flows.study import load_study_config, run_study

    load_study_config(config)
    from flows.study import StudyFailed

    try:
        run_study(config, out, args.seeds)
    except StudyFailed as err:
        import sys

        sys.stderr.write(f"r1f: error: {err}\n")
        return 1
    return 0


def register(commands: Any) -> None:
    """Add `recipe` to the top-level subparsers."""
    p = add_command(
        commands,
        "recipe",
        cmd_recipe,
        "run the toy R1 recipe's comparison study over seeds; write OUT/results.json and .md",
    )
    p.add_argument(
        "--config",
        default="configs/r1-toy.yaml",
        metavar="FILE",
        help="study config (default configs/r1-toy.yaml; its paths are relative to the file)",
    )
    p.add_argument(
        "--out",
        default="work/study",
        metavar="DIR",
        help="a new or empty directory for the runs, the study's store and the results",
    )
    p.add_argument(
        "--seeds",
        type=int_at_least(1),
        default=3,
        metavar="N",
        help="how many seeds (config seed, seed + 1, ...); intervals need at least 2",
    )
    p.add_argument("--force", action="store_true", help="clear --out first when it is not empty")
