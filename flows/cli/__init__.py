"""`r1f`: the factory's command line.

One module per command group (`datasets`, `verify`, `config`, `model`, `generate`,
`filter`, `demo`, `recipe`, `train` with `eval`, `run` and `serve`), each exposing `register(commands)` that adds its subcommands;
`common` holds what they share (the parser class and global options, checked
flags, output, the error and interrupt paths, store access). Adding a group
is one module and one line in `COMMAND_GROUPS`.

Startup stays fast: these modules import only the standard library at module
level, and each command imports what it needs (polars, deltalake, rich, prefect,
torch) when it runs. Human-readable tables by default, `--json` for machines.

Every command ends through `main`, which keeps the error contract of
`flows.cli.common`: a user mistake is one line on stderr and exit status 2,
"no valid input" is 1, Ctrl-C is one line and 130, a bug is one line and 70
(`--debug` shows its traceback).
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import Sequence

from flows.cli import config, datasets, demo, generate, model, orchestrate, recipe, train, verify
from flows.cli import filter as filter_group  # the module name shadows the builtin
from flows.cli.common import (
    EXIT_BUG,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    Parser,
    UserError,
    add_global_options,
    printable,
)

# Order is the order of `r1f --help`.
COMMAND_GROUPS = (
    datasets,
    verify,
    config,
    demo,
    recipe,
    model,
    generate,
    filter_group,
    train,
    orchestrate,
)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="r1f",
        description="r1-factory: a reasoning-data factory for the DeepSeek-R1 recipe.",
        epilog="Exit status: 0 done, 1 no valid input, 2 a mistake to fix (one line on "
        "stderr), 130 interrupted, 70 a bug (--debug shows the traceback).",
    )
    add_global_options(parser, top=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in COMMAND_GROUPS:
        group.register(commands)
    return parser


def _user_message(err: BaseException) -> str | None:
    """The one-line message of an error a user can act on; None for anything else (a bug)."""
    from store.config import ConfigError
    from store.record import RecordError
    from store.store import StoreError

    if isinstance(err, UserError | StoreError | ConfigError | RecordError):
        return str(err)
    if isinstance(err, UnicodeDecodeError):
        return f"a file is not UTF-8 ({err.reason} at byte {err.start + 1})"
    if isinstance(err, OSError) and err.strerror:
        # Permission denied, no space left, read-only file system: about a path, not a bug.
        where = f"{err.filename}: " if err.filename else ""
        return f"{where}{err.strerror}"
    return None


def _fail(kind: str, message: str, status: int, as_json: bool) -> int:
    """`r1f: KIND: MESSAGE` on stderr, or with --json `{"error"|"interrupted": MESSAGE, ...}`."""
    if as_json:
        sys.stderr.write(json.dumps({kind: message, "exit_status": status}) + "\n")
    else:
        sys.stderr.write(f"r1f: {kind}{': ' if message else ''}{printable(message)}\n")
    sys.stderr.flush()
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Run one `r1f` command; returns its exit status (the console script exits with it)."""
    from store.interrupt import watch_interrupts

    argv = list(sys.argv[1:] if argv is None else argv)
    # Known before parsing, so that a parse error can follow them too.
    as_json, debug = "--json" in argv, "--debug" in argv
    try:
        args = build_parser().parse_args(argv)
    except UserError as err:
        return _fail("error", str(err), EXIT_USAGE, as_json)
    try:
        if args.store is not None and not getattr(args, "uses_store", False):
            raise UserError(
                f"--store: `r1f {_command_name(args)}` does not use a store "
                "(its inputs and outputs are files, or its config names the store)"
            )
        with watch_interrupts():
            return int(args.handler(args))
    except KeyboardInterrupt as err:
        note = str(err) if str(err) not in ("", "interrupted") else ""
        if debug:
            traceback.print_exc()
        return _fail("interrupted", note, EXIT_INTERRUPTED, args.json)
    except Exception as err:
        message = _user_message(err)
        if debug:
            traceback.print_exc()
        if message is not None:
            return _fail("error", message, EXIT_USAGE, args.json)
        detail = (str(err).strip().splitlines() or [""])[0][:300]
        hint = "" if debug else "; rerun with --debug for the traceback"
        return _fail(
            "error",
            f"internal error ({type(err).__name__}: {detail}){hint}; "
            "this is a bug in r1f, please report it",
            EXIT_BUG,
            args.json,
        )


def _command_name(args: argparse.Namespace) -> str:
    group = getattr(args, f"{args.command}_command", None)
    return f"{args.command} {group}" if group else str(args.command)


__all__ = ["UserError", "build_parser", "main"]
