"""What every `r1f` command group shares: output (console, tables, progress, JSON),
the user-error type, and store access.

Only the standard library is imported at module level; rich, polars and the store
are imported inside the helpers, so building the parser stays fast.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    from store.store import Store

DEFAULT_STORE = "work/store"

Handler = Callable[[argparse.Namespace], int]


class UserError(Exception):
    """An error the user can fix; printed without a traceback."""


def add_command(group: Any, name: str, handler: Handler, help: str) -> argparse.ArgumentParser:
    """Register one leaf command on a subparsers group, with the options every command takes."""
    p: argparse.ArgumentParser = group.add_parser(name, help=help, description=help)
    p.set_defaults(handler=handler)
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    return p


# -- output ----------------------------------------------------------------------


def make_console(stderr: bool = False) -> Console:
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    # Piped output (logs, CI) gets a wide page instead of rich's 80 columns,
    # so tables are not folded into unreadable slivers.
    width = None if stream.isatty() else 160
    return Console(stderr=stderr, highlight=False, soft_wrap=True, width=width)


def when(ts: Any) -> str:
    return str(ts.strftime("%Y-%m-%d %H:%M:%S"))


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def print_table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    from rich.table import Table

    out = Table(title=title, title_justify="left")
    for col in columns:
        out.add_column(col, overflow="fold")
    for row in rows:
        out.add_row(*("" if v is None else str(v) for v in row))
    make_console().print(out)


def progress_bar(description: str, total: int | None, unit: str) -> Any:
    """A rich progress bar on stderr; transient so it leaves no noise in logs."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    amount = DownloadColumn() if unit == "bytes" else MofNCompleteColumn()
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        amount,
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=make_console(stderr=True),
        transient=True,
    )
    task = bar.add_task(description, total=total)
    return bar, lambda n: bar.advance(task, n)


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


# -- store access ----------------------------------------------------------------


def open_store(args: argparse.Namespace) -> Store:
    from store.store import Store

    return Store(args.store)


def parse_ref(text: str, *, need_version: bool = False) -> tuple[str, int | None]:
    from store.lineage import TableRef

    try:
        ref = TableRef.parse(text)
    except ValueError as err:
        raise UserError(str(err)) from None
    if need_version and ref.version is None:
        raise UserError(f"{text!r}: name a version, e.g. {ref.table}@0")
    return ref.table, ref.version


def cli_lineage(writer: str) -> Any:
    from store.lineage import Lineage

    return Lineage(writer=writer, flow_run_id=os.environ.get("PREFECT__FLOW_RUN_ID"))
