"""`r1f demo`: the whole R1 recipe at toy scale on the CPU, then a summary table."""

from __future__ import annotations

import argparse
from typing import Any

from flows.cli.common import add_command, watch_store


def cmd_demo(args: argparse.Namespace) -> int:
    from flows.config import load_run_config
    from flows.demo import run_demo
    from store.store import Store

    cfg = load_run_config(args.config)
    with watch_store(Store.from_config(cfg.store), "run the demo again: it starts afresh"):
        return run_demo(args.config)


def register(commands: Any) -> None:
    """Add `demo` to the top-level subparsers."""
    p = add_command(commands, "demo", cmd_demo, "run the whole R1 recipe at toy scale on the CPU")
    p.add_argument(
        "--config",
        default="configs/demo.yaml",
        metavar="FILE",
        help="run config (default configs/demo.yaml; its paths are relative to the file)",
    )
