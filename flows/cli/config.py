"""`r1f config show`: print a run config fully resolved."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from flows.cli.common import add_command, print_json


def cmd_config_show(args: argparse.Namespace) -> int:
    from flows.config import load_run_config
    from store.config import config_hash, config_to_dict, dump_config

    config = load_run_config(args.file)
    if args.json:
        print_json({"config_hash": config_hash(config), "config": config_to_dict(config)})
    else:
        sys.stdout.write(f"# {args.file} (resolved; config hash {config_hash(config)})\n")
        sys.stdout.write(dump_config(config))
    return 0


def register(commands: Any) -> None:
    """Add `config` and its subcommands to the top-level subparsers."""
    config = commands.add_parser("config", help="inspect run configs")
    cfg = config.add_subparsers(dest="config_command", metavar="COMMAND", required=True)
    p = add_command(
        cfg, "show", cmd_config_show, "print a config file fully resolved (defaults, extends)"
    )
    p.add_argument("file", metavar="FILE")
