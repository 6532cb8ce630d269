"""`r1f demo`: the recipe, as far as it is built, at toy scale on the CPU."""

from __future__ import annotations

import argparse
from typing import Any

from flows.cli.common import add_command


def cmd_demo(args: argparse.Namespace) -> int:
    from flows.demo import run_demo

    return run_demo(args.config)


def register(commands: Any) -> None:
    """Add `demo` to the top-level subparsers."""
    p = add_command(
        commands, "demo", cmd_demo, "run the recipe, as far as it is built, at toy scale on the CPU"
    )
    p.add_argument("--config", default="configs/demo.yaml", metavar="FILE")
