"""What every `r1f` command group shares: the parser class and global options,
checked numeric flags, output (console, tables, progress, JSON), the error
and interrupt paths, and store access.

Only the standard library is imported at module level; rich, polars and the store
are imported inside the helpers, so building the parser stays fast.

The error contract (README, "Errors and exit status"):

- 0: done; 1: the run found no valid input (every row was bad, or there were none);
- 2: a mistake the user can fix (a flag, a file, a config, a store path): one
  line on stderr, `r1f: error: ...`, naming the flag, file, line or key and
  what would be valid; with `--json`, that line is a JSON object instead;
- 130: interrupted (Ctrl-C): one line saying what state the outputs are in;
- 70: a bug in r1f: one line, and `--debug` shows the traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from rich.console import Console

    from store.store import Store

DEFAULT_STORE = "work/store"
EXIT_NO_VALID_INPUT = 1
EXIT_USAGE = 2
EXIT_BUG = 70
EXIT_INTERRUPTED = 130

Handler = Callable[[argparse.Namespace], int]


class UserError(Exception):
    """An error the user can fix; printed as one line, exit status 2."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, with a sentence saying what state the command left things in."""


class Parser(argparse.ArgumentParser):
    """argparse, with its errors raised as UserError: one line, no usage block."""

    def error(self, message: str) -> NoReturn:
        raise UserError(f"{message} (see: {self.prog} --help)")


# -- global options and registration ---------------------------------------------


def add_global_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """`--store`, `--json` and `--debug`, accepted before or after any subcommand.

    The top-level parser holds the defaults; every other level declares the
    same options with SUPPRESS, so a value given after the subcommand
    overrides one given before it, and an absent one does not reset it.
    """

    def default(value: Any) -> Any:
        return value if top else argparse.SUPPRESS

    parser.add_argument(
        "--store",
        default=default(None),
        metavar="ROOT",
        help="store root: a directory or object-store URI (default: $R1F_STORE or work/store)",
    )
    parser.add_argument(
        "--json", action="store_true", default=default(False), help="print machine-readable JSON"
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        default=default(False),
        help="show the traceback of an error",
    )


def add_group(commands: Any, name: str, help: str) -> Any:
    """A command group (`r1f datasets ...`): its parser's subcommands, to add commands to."""
    group = commands.add_parser(name, help=help, description=help)
    add_global_options(group, top=False)
    return group.add_subparsers(dest=f"{name}_command", metavar="COMMAND", required=True)


def add_command(
    group: Any, name: str, handler: Handler, help: str, *, uses_store: bool = False
) -> argparse.ArgumentParser:
    """Register one leaf command on a subparsers group, with the global options.

    `uses_store`: the command reads or writes the store named by `--store`;
    other commands refuse an explicit `--store` rather than ignore it.
    """
    p: argparse.ArgumentParser = group.add_parser(name, help=help, description=help)
    p.set_defaults(handler=handler, uses_store=uses_store)
    add_global_options(p, top=False)
    return p


# -- checked numeric flags (argparse types that name the valid range) -----------------


def int_at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {value}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


def float_in(
    low: float, high: float = math.inf, *, low_open: bool = False, high_open: bool = False
) -> Callable[[str], float]:
    """A finite number in [low, high] (either end open when asked)."""
    left = f"> {low:g}" if low_open else f">= {low:g}"
    right = "" if math.isinf(high) else (f" and < {high:g}" if high_open else f" and <= {high:g}")
    rule = f"a number {left}{right}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        fits = math.isfinite(value) and (value > low if low_open else value >= low)
        fits = fits and (value < high if high_open else value <= high)
        if not fits:
            raise argparse.ArgumentTypeError(f"must be {rule}, got {text}")
        return value

    parse.__name__ = rule
    return parse


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)
positive_seconds = float_in(0, low_open=True)


# -- output ----------------------------------------------------------------------


def make_console(stderr: bool = False) -> Console:
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    # Piped output (logs, CI) gets a wide page instead of rich's 80 columns,
    # so tables are not folded into unreadable slivers. Markup is off: file
    # names and row text are printed as they are, never read as [style] tags.
    width = None if stream.isatty() else 160
    return Console(stderr=stderr, highlight=False, soft_wrap=True, width=width, markup=False)


def when(ts: Any) -> str:
    return str(ts.strftime("%Y-%m-%d %H:%M:%S"))


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


# Characters that would move the cursor, ring the bell or reorder the text of
# the rest of the line if printed raw: C0/C1 controls and the bidi overrides,
# embeddings and isolates (the "Trojan Source" characters).
_BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: str) -> str:
    """`text` with control and bidi-control characters written as escapes (`\\x1b`, `\\u202e`)."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch in _NAMED_ESCAPES:
            out.append(_NAMED_ESCAPES[ch])
        elif ch in _BIDI_CONTROLS or unicodedata.category(ch) == "Cc":
            out.append(f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out)


def print_table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    from rich.table import Table
    from rich.text import Text

    out = Table(title=None if title is None else printable(title), title_justify="left")
    for col in columns:
        out.add_column(printable(col), overflow="fold")
    for row in rows:
        out.add_row(*(Text("" if v is None else printable(str(v))) for v in row))
    make_console().print(out)


def progress_bar(description: str, total: int | None, unit: str) -> Any:
    """A rich progress bar on stderr, on a terminal only; transient, so it leaves no trace."""
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
    console = make_console(stderr=True)
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        amount,
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        # Nothing at all when stderr is a file or a pipe: a log gets the result, not frames.
        disable=not console.is_terminal,
    )
    task = bar.add_task(printable(description), total=total)
    return bar, lambda n: bar.advance(task, n)


class StageBar:
    """A stage function's progress on stderr (`stage(name, total)`, `advance(rows)`): one bar
    per stage, each left on screen with its time."""

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.bar = Progress(
            TextColumn("{task.description:<18}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=make_console(stderr=True),
        )
        self.task: Any = None

    def _finish(self) -> None:
        if self.task is None:
            return
        task = self.bar.tasks[-1]
        done = task.total or task.completed or 1
        self.bar.update(self.task, total=done, completed=done)
        self.bar.stop_task(self.task)

    def stage(self, name: str, total: int | None) -> None:
        self._finish()
        self.task = self.bar.add_task(name, total=total)

    def advance(self, rows: int) -> None:
        self.bar.advance(self.task, rows)

    def __enter__(self) -> StageBar:
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._finish()
        self.bar.stop()


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


def warn(message: str) -> None:
    sys.stderr.write(f"r1f: warning: {printable(message)}\n")


def warn_bad_lines(summary: dict[str, Any], what: str = "left out") -> None:
    """The bad lines a command met, as `FILE:LINE: reason`, the first few of them."""
    examples = summary.get("bad_line_examples") or []
    for example in examples:
        warn(f"{example} ({what})")
    more = int(summary.get("bad_lines") or 0) - len(examples)
    if more > 0:
        warn(f"... and {more:,} more bad line(s) ({what})")


# -- files -------------------------------------------------------------------------


def input_file(path: str, flag: str | None) -> Path:
    """A file the command reads; UserError naming the flag (None: a positional argument)
    when it is not one."""
    source = Path(path)
    where = f"{flag} {source}" if flag else str(source)
    if source.is_dir():
        raise UserError(f"{where}: is a directory; name a file")
    if source.exists() and not source.is_file():
        raise UserError(f"{where}: not a regular file; name a file")
    if not source.is_file():
        raise UserError(f"{where}: no such file")
    return source


def output_file(path: str, flag: str) -> Path:
    """A file the command writes (atomically); UserError when that cannot be a file.

    An output that is also the input is allowed: every output is written to a
    temporary file and renamed over its target only after the input has been
    read to its end, so the input is replaced, never truncated mid-read.
    """
    target = Path(path)
    if target.is_dir():
        raise UserError(f"{flag} {target}: is a directory; name a file to write")
    if target.exists() and not target.is_file():
        raise UserError(f"{flag} {target}: not a regular file; name a file to write")
    parent = target.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"{flag} {target}: {parent} is a file, not a directory")
    return target


def new_directory(path: str, flag: str) -> Path:
    """A directory the command creates; UserError when the path holds a file or a non-empty
    directory."""
    target = Path(path)
    if target.is_file() or (target.exists() and not target.is_dir()):
        raise UserError(f"{flag} {target}: is a file; name a new or empty directory")
    if target.is_dir() and any(target.iterdir()):
        raise UserError(f"{flag} {target}: exists and is not empty; name a new directory")
    return target


# -- store access ----------------------------------------------------------------


def store_root(args: argparse.Namespace) -> str:
    return str(args.store or os.environ.get("R1F_STORE") or DEFAULT_STORE)


def open_store(args: argparse.Namespace, *, must_exist: bool = True) -> Store:
    """The store named by `--store`, `$R1F_STORE` or the default, checked.

    Reading commands need the store to exist: a missing root is far more
    often a wrong `--store` than an empty store, and saying "no tables"
    would hide that. Writing commands create it.
    """
    from store.store import Store, StoreError

    store = Store(store_root(args))
    try:
        store.check_root(must_exist=must_exist)
    except StoreError as err:
        hint = " (pass --store DIR or set $R1F_STORE; `r1f datasets import` creates a store)"
        raise UserError(f"{err}{hint if 'does not exist' in str(err) else ''}") from None
    return store


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


# -- interrupts ------------------------------------------------------------------


@contextlib.contextmanager
def on_interrupt(note: str) -> Iterator[None]:
    """Turn Ctrl-C inside the block into Interrupted carrying `note` (what was left how)."""
    try:
        yield
    except Interrupted as err:
        if str(err) not in ("", "interrupted"):
            raise  # an inner block already said what it left how
        raise Interrupted(note) from None
    except KeyboardInterrupt:
        raise Interrupted(note) from None


def _table_versions(store: Store) -> dict[str, int]:
    return {name: store.latest_version(name) for name in store.tables()}


@contextlib.contextmanager
def watch_store(store: Store, note: str = "") -> Iterator[None]:
    """On Ctrl-C, say which tables kept their version and which got a complete new one."""
    before = _table_versions(store) if store.check_root(must_exist=False) else {}
    try:
        yield
    except KeyboardInterrupt:
        after = _table_versions(store) if store.check_root(must_exist=False) else {}
        changed = [
            f"{t} is at version {v} (a complete commit)"
            for t, v in after.items()
            if before.get(t) != v
        ]
        if changed:
            state = "; ".join(changed) + "; every other table is as it was"
        else:
            state = f"nothing was committed: every table in {store.root} is as it was"
        raise Interrupted(state + (f"; {note}" if note else "")) from None
