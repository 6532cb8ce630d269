"""`r1f`: the factory's command line.

One module per command group (`datasets`, `verify`, `config`, `model`, `generate`,
`filter`, `demo`, `train` with `eval`), each exposing `register(commands)` that adds its subcommands;
`common` holds what they share (output, the user-error type, store access).
Adding a group is one module and one line in `COMMAND_GROUPS`.

Startup stays fast: these modules import only the standard library at module
level, and each command imports what it needs (polars, deltalake, rich, prefect,
torch) when it runs. Human-readable tables by default, `--json` for machines;
errors a user can fix are printed as one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from flows.cli import config, datasets, demo, generate, model, train, verify
from flows.cli import filter as filter_group  # the module name shadows the builtin
from flows.cli.common import UserError

# Order is the order of `r1f --help`.
COMMAND_GROUPS = (datasets, verify, config, demo, model, generate, filter_group, train)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="r1f",
        description="r1-factory: a reasoning-data factory for the DeepSeek-R1 recipe.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in COMMAND_GROUPS:
        group.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except UserError as err:
        sys.stderr.write(f"r1f: error: {err}\n")
        return 2
    except Exception as err:
        # Errors from our own layers carry messages meant for users; show them plainly.
        from store.config import ConfigError
        from store.store import StoreError

        if isinstance(err, StoreError | ConfigError):
            sys.stderr.write(f"r1f: error: {err}\n")
            return 2
        raise


__all__ = ["UserError", "build_parser", "main"]
