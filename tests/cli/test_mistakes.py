"""Every kind of user mistake gives one line on stderr, the documented exit status, and loses
nothing: inputs are unchanged, valid rows are kept, the store is consistent.

The contract (README, "Errors and exit status"): 2 for a mistake to fix, 1 when the run
found no valid input, 130 when interrupted (tests/cli/test_interrupt.py), 70 for a bug.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from store.lineage import Lineage
from store.record import to_table, validate_sample
from store.store import Store
from tests.cli.helpers import BAD_LINES, Result, read_rows, write_lines

Cli = Callable[..., Result]


@pytest.fixture
def populated(store: Store, rows: Callable[..., list[dict[str, Any]]], lineage: Lineage) -> Store:
    store.commit("toy", to_table(rows(20)), lineage=lineage)
    return store


# -- flags -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["verify", "math", "--workers", "0"],
            "argument --workers: must be an integer >= 1, got 0",
        ),
        (["verify", "code", "--timeout", "0"], "argument --timeout: must be a number > 0, got 0"),
        (
            ["verify", "math", "--timeout", "nan"],
            "argument --timeout: must be a number > 0, got nan",
        ),
        (
            ["verify", "math", "--workers", "two"],
            "argument --workers: expected an integer, got 'two'",
        ),
        (["datasets", "show", "toy", "--rows", "-1"], "argument --rows: must be an integer >= 0"),
        (
            ["datasets", "history", "toy", "--limit", "0"],
            "argument --limit: must be an integer >= 1",
        ),
        (["datasets", "export", "toy@0", "--to", "d", "--shard-mb", "0"], "argument --shard-mb"),
        (["generate", "--batch-size", "0"], "argument --batch-size: must be an integer >= 1"),
        (["generate", "--top-p", "1.5"], "argument --top-p: must be a number > 0 and <= 1"),
        (["generate", "--temperature", "-1"], "argument --temperature: must be a number >= 0"),
        (["generate", "--n", "0"], "argument --n: must be an integer >= 1"),
        (["filter", "dedup", "--threshold", "0"], "argument --threshold: must be a number > 0"),
        (["filter", "decontaminate", "--n", "0"], "argument --n: must be an integer >= 1"),
        (["datasets", "import", "f.jsonl", "--table", "t", "--mode", "merge"], "argument --mode"),
        (["datasets", "frobnicate"], "invalid choice: 'frobnicate'"),
        (["verify", "math", "--input", "a.jsonl"], "the following arguments are required"),
        (["datasets", "list", "--colour"], "unrecognized arguments: --colour"),
    ],
)
def test_a_bad_flag_names_the_flag_and_the_valid_range(
    cli: Cli, argv: list[str], message: str
) -> None:
    line = cli(*argv).one_line_error(2, "r1f: error:", message)
    assert "--help" in line  # and where to read more


def test_global_options_go_before_or_after_the_subcommand(cli: Cli, populated: Store) -> None:
    root = populated.root
    for argv in (
        ["--store", root, "--json", "datasets", "list"],
        ["datasets", "--store", root, "list", "--json"],
        ["datasets", "list", "--store", root, "--json"],
        ["--json", "datasets", "list", "--store", root],
    ):
        result = cli(*argv)
        assert result.code == 0, (argv, result.err)
        assert [t["name"] for t in json.loads(result.out)] == ["toy"]
    # After the subcommand wins over before it.
    wrong = str(Path(root).parent / "elsewhere")
    assert cli("--store", wrong, "datasets", "list", "--store", root).code == 0


def test_json_errors_are_json_and_debug_shows_the_traceback(cli: Cli, populated: Store) -> None:
    result = cli("datasets", "show", "nope", "--store", populated.root, "--json")
    assert result.code == 2 and "Traceback" not in result.err
    error = json.loads(result.err)
    assert error["exit_status"] == 2 and "no table 'nope'" in error["error"]
    parse_error = json.loads(cli("--json", "verify", "math", "--workers", "0").err)
    assert "--workers" in parse_error["error"]
    debug = cli("datasets", "show", "nope", "--store", populated.root, "--debug")
    assert debug.code == 2 and "Traceback" in debug.err
    assert debug.err.splitlines()[-1].startswith("r1f: error: no table 'nope'")


def test_store_given_to_a_command_without_a_store_is_refused(cli: Cli, tmp_path: Path) -> None:
    source = write_lines(tmp_path / "in.jsonl", [{"gold": "1", "completion": "1"}])
    cli(
        "--store", tmp_path, "verify", "math", "--input", source, "--output", tmp_path / "o.jsonl"
    ).one_line_error(2, "--store: `r1f verify math` does not use a store")
    assert not (tmp_path / "o.jsonl").exists()


# -- files -------------------------------------------------------------------------


def test_missing_or_wrong_kind_of_files_name_the_flag(cli: Cli, tmp_path: Path) -> None:
    source = write_lines(tmp_path / "in.jsonl", [{"gold": "1", "completion": "1"}])
    before = source.read_bytes()
    out = tmp_path / "out.jsonl"
    verify = ["verify", "math", "--workers", "1"]
    cli(*verify, "--input", tmp_path / "nope.jsonl", "--output", out).one_line_error(
        2, "--input", "nope.jsonl: no such file"
    )
    cli(*verify, "--input", tmp_path, "--output", out).one_line_error(
        2, "--input", "is a directory"
    )
    cli(*verify, "--input", source, "--output", tmp_path).one_line_error(
        2, "--output", "is a directory"
    )
    cli(*verify, "--input", source, "--output", source / "x.jsonl").one_line_error(
        2, "--output", "is a file, not a directory"
    )
    cli("datasets", "import", tmp_path, "--table", "t", "--store", tmp_path / "s").one_line_error(
        2, "is a directory"
    )
    csv = tmp_path / "rows.csv"
    csv.write_text("a,b\n")
    cli("datasets", "import", csv, "--table", "t", "--store", tmp_path / "s").one_line_error(
        2, "unsupported file type '.csv'; use .jsonl or .parquet"
    )
    cli(
        "datasets", "import", source, "--table", "Bad Name", "--store", tmp_path / "s"
    ).one_line_error(2, "invalid table name 'Bad Name'")
    assert source.read_bytes() == before and not out.exists()


def test_export_and_card_to_an_existing_file_or_full_directory(
    cli: Cli, populated: Store, tmp_path: Path
) -> None:
    taken = tmp_path / "taken"
    taken.write_text("mine")
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    store = ["--store", populated.root]
    cli("datasets", "export", "toy@0", "--to", taken, *store).one_line_error(
        2, "--to", "is a file; name a new or empty directory"
    )
    cli("datasets", "export", "toy@0", "--to", full, *store).one_line_error(
        2, "--to", "exists and is not empty"
    )
    cli("datasets", "card", "toy", "--to", taken, *store).one_line_error(2, "--to", "is a file")
    assert taken.read_text() == "mine" and (full / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full", "store", "taken"]


def test_devices_pipes_and_links(cli: Cli, tmp_path: Path) -> None:
    source = write_lines(tmp_path / "in.jsonl", [{"gold": "1", "completion": "\\boxed{1}"}])
    verify = ["verify", "math", "--workers", "1", "--input"]
    # An output that is a device is never replaced by a file (as root, it could be).
    cli(*verify, source, "--output", "/dev/null").one_line_error(
        2, "--output /dev/null: not a regular file"
    )
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    cli(*verify, fifo, "--output", tmp_path / "o.jsonl").one_line_error(
        2, "--input", "not a regular file"
    )
    # Through a link, the file it names is written; the link stays a link.
    real = tmp_path / "real.jsonl"
    real.write_text("old\n")
    link = tmp_path / "link.jsonl"
    link.symlink_to(real)
    assert cli(*verify, source, "--output", link).code == 0
    assert link.is_symlink() and read_rows(real)[0]["verdict"] == "correct"


@pytest.mark.parametrize(
    ("command", "extra"),
    [
        (["verify", "math", "--workers", "1"], []),
        (["filter", "dedup", "--method", "exact", "--id-field", "id"], []),
        (["filter", "decontaminate"], ["--benchmarks", "BENCH"]),
    ],
)
def test_output_that_is_the_input_is_replaced_safely(
    cli: Cli, tmp_path: Path, command: list[str], extra: list[str]
) -> None:
    from filters.decontam import TOY_BENCHMARK

    rows = [
        {"id": i, "gold": "4", "completion": f"so the answer is \\boxed{{{i}}}", "prompt": "p"}
        for i in range(3, 6)
    ]
    path = write_lines(tmp_path / "rows.jsonl", rows)
    extra = [str(TOY_BENCHMARK) if a == "BENCH" else a for a in extra]
    result = cli(*command, "--input", path, "--output", path, *extra)
    assert result.code == 0, result.err
    out = read_rows(path)
    # Read fully first, then replaced: every row is there, with the command's fields added.
    assert [r["id"] for r in out] == [3, 4, 5]
    assert all(r["completion"].startswith("so the answer") for r in out)
    assert len(out[0]) > len(rows[0])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left


def test_generate_refuses_to_write_samples_over_its_prompts(cli: Cli, tmp_path: Path) -> None:
    # Samples are another kind of file: writing them over the prompts would lose the prompts
    # that were left out. The check comes before the model is read, so none is needed here.
    path = write_lines(tmp_path / "prompts.jsonl", [{"prompt": "2+2"}, "{cut off"])
    before = path.read_bytes()
    result = cli("generate", "--model", tmp_path, "--prompts", path, "--output", path)
    result.one_line_error(2, "--output", "is the --prompts file")
    assert path.read_bytes() == before


# -- bad lines in JSONL inputs: the same rule everywhere ----------------------------


def bad_line_file(path: Path, good: list[dict[str, Any]]) -> tuple[Path, dict[str, int]]:
    """good[0], one line of each bad kind, then the rest of `good`; returns {kind: line}."""
    lines: list[Any] = [good[0]]
    where = {}
    for kind, line in BAD_LINES.items():
        lines.append(line)
        where[kind] = len(lines)
    lines.extend(good[1:])
    return write_lines(path, lines), where


def test_import_quarantines_every_kind_of_bad_line_and_keeps_the_valid_rows(
    cli: Cli, raw_row: Callable[..., dict[str, Any]], tmp_path: Path
) -> None:
    path, where = bad_line_file(tmp_path / "in.jsonl", [raw_row(i) for i in range(4)])
    before = path.read_bytes()
    root = tmp_path / "store"
    result = cli("datasets", "import", path, "--table", "t", "--store", root, "--json")
    assert result.code == 0 and "Traceback" not in result.err
    report = json.loads(result.out)
    assert (report["valid"], report["invalid"]) == (4, len(BAD_LINES))
    store = Store(root)
    assert store.read("t").height == 4
    quarantine = dict(store.read("t.quarantine").select("line", "reason").iter_rows())
    assert sorted(quarantine) == sorted(where.values())
    assert "lone surrogate \\ud800" in quarantine[where["lone surrogate"]]
    assert "NaN is not JSON" in quarantine[where["NaN"]]
    assert "not UTF-8" in quarantine[where["not UTF-8"]]
    assert path.read_bytes() == before


def test_verify_math_writes_a_bad_input_row_for_each_bad_line(cli: Cli, tmp_path: Path) -> None:
    good = [{"gold": str(i), "completion": f"\\boxed{{{i}}}"} for i in range(3)]
    path, where = bad_line_file(tmp_path / "in.jsonl", good)
    out = tmp_path / "out.jsonl"
    result = cli("verify", "math", "--input", path, "--output", out, "--workers", "1")
    assert result.code == 0 and "Traceback" not in result.err
    rows = read_rows(out)
    assert len(rows) == 3 + len(BAD_LINES)  # one output row per input row, in order
    assert [r["verdict"] for r in rows if "raw" not in r] == ["correct"] * 3
    bad = {r["line"]: r for r in rows if "raw" in r}
    assert sorted(bad) == sorted(where.values())
    assert all(r["reason"].startswith("bad_input: ") for r in bad.values())
    # Each bad line is also reported, with file and line, on stderr.
    for kind, line in where.items():
        assert f"{path}:{line}: " in result.err, kind


def test_verify_code_writes_a_bad_input_row_for_each_bad_line(cli: Cli, tmp_path: Path) -> None:
    tests = {"kind": "stdio", "cases": [{"input": "", "output": "2"}]}
    good = [{"completion": "print(2)", "tests": tests} for _ in range(2)]
    path, where = bad_line_file(tmp_path / "in.jsonl", good)
    out = tmp_path / "out.jsonl"
    result = cli("verify", "code", "--input", path, "--output", out, "--workers", "1")
    assert result.code == 0 and "Traceback" not in result.err
    rows = read_rows(out)
    assert [r["detail"] for r in rows if "raw" not in r] == ["passed", "passed"]
    assert sorted(r["line"] for r in rows if "raw" in r) == sorted(where.values())


@pytest.mark.parametrize("command", ["dedup", "decontaminate"])
def test_filter_commands_report_bad_lines_and_process_the_rest(
    cli: Cli, tmp_path: Path, command: str
) -> None:
    from filters.decontam import TOY_BENCHMARK

    good = [
        {"id": i, "prompt": f"question {i}", "completion": f"answer {i} " * 5} for i in range(3)
    ]
    path, where = bad_line_file(tmp_path / "in.jsonl", good)
    out = tmp_path / "out.jsonl"
    extra = ["--benchmarks", str(TOY_BENCHMARK)] if command == "decontaminate" else []
    result = cli("filter", command, "--input", path, "--output", out, *extra)
    assert result.code == 0 and "Traceback" not in result.err
    assert [r["id"] for r in read_rows(out)] == [0, 1, 2]
    warnings = [line for line in result.err.splitlines() if line.startswith("r1f: warning:")]
    assert len(warnings) == len(BAD_LINES)
    for line in where.values():
        assert any(f"{path}:{line}: " in w for w in warnings)


def test_an_input_with_no_valid_row_exits_1(cli: Cli, tmp_path: Path) -> None:
    path = write_lines(tmp_path / "in.jsonl", list(BAD_LINES.values()))
    root = tmp_path / "store"
    result = cli("datasets", "import", path, "--table", "t", "--store", root)
    assert result.code == 1 and "no valid rows found" in result.err
    result = cli("verify", "math", "--input", path, "--output", tmp_path / "o.jsonl")
    assert result.code == 1 and "no valid rows found" in result.err
    assert len(read_rows(tmp_path / "o.jsonl")) == len(BAD_LINES)  # kept as bad_input rows
    result = cli("filter", "dedup", "--input", path, "--output", tmp_path / "d.jsonl")
    assert result.code == 1 and "Traceback" not in result.err


# -- the store ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["datasets", "list"],
        ["datasets", "show", "toy"],
        ["datasets", "history", "toy"],
        ["datasets", "diff", "toy@0", "toy@1"],
        ["datasets", "export", "toy@0", "--to", "OUT"],
        ["datasets", "vacuum", "toy"],
    ],
)
def test_a_store_that_does_not_exist_is_not_an_empty_store(
    cli: Cli, tmp_path: Path, argv: list[str]
) -> None:
    root = tmp_path / "no-such-store"
    argv = [str(tmp_path / "out") if a == "OUT" else a for a in argv]
    cli(*argv, "--store", root).one_line_error(
        2, f"no store at {root}: the directory does not exist", "--store"
    )
    assert not root.exists() and not (tmp_path / "out").exists()


def test_an_empty_store_lists_no_tables(cli: Cli, tmp_path: Path) -> None:
    result = cli("datasets", "list", "--store", tmp_path)
    assert result.code == 0 and f"No tables in {tmp_path} yet." in result.out
    assert json.loads(cli("datasets", "list", "--store", tmp_path, "--json").out) == []


def test_a_store_path_that_is_a_file(cli: Cli, tmp_path: Path, raw_row: Any) -> None:
    root = tmp_path / "store"
    root.write_text("not a store")
    source = write_lines(tmp_path / "in.jsonl", [raw_row(0)])
    cli("datasets", "list", "--store", root).one_line_error(
        2, f"store {root}: is a file, not a directory"
    )
    cli("datasets", "import", source, "--table", "t", "--store", root).one_line_error(
        2, "is a file, not a directory"
    )
    assert root.read_text() == "not a store"


def read_only(path: Path) -> list[str]:
    """A command prefix that runs with `path` read-only: a read-only bind mount when root
    (root ignores permissions), file modes otherwise."""
    if os.geteuid() != 0:
        for folder, _, _ in os.walk(path):
            os.chmod(folder, 0o555)
        return []
    if shutil.which("bwrap") is None:
        pytest.skip("as root, a read-only store needs bwrap for a read-only bind mount")
    return ["bwrap", "--dev-bind", "/", "/", "--ro-bind", str(path), str(path), "--"]


def test_a_read_only_store_is_refused_before_anything_is_written(
    populated: Store, tmp_path: Path, raw_row: Any
) -> None:
    import sys

    source = write_lines(tmp_path / "in.jsonl", [raw_row(100), raw_row(101)])
    root = Path(populated.root)
    prefix = read_only(root)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    argv = [sys.executable, "-m", "flows.cli", "datasets", "import", str(source)]
    done = subprocess.run(
        [*prefix, *argv, "--table", "toy", "--store", str(root)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if os.geteuid() != 0:
        for folder, _, _ in os.walk(root):
            os.chmod(folder, 0o755)
    Result(done.returncode, done.stdout, done.stderr).one_line_error(
        2, f"store {root}: cannot write to", "read-only or no permission"
    )
    assert Store(root).latest_version("toy") == 0 and Store(root).read("toy").height == 20


def test_a_corrupt_table_log_is_one_line(cli: Cli, populated: Store) -> None:
    log = Path(populated.root) / "toy" / "_delta_log" / "00000000000000000000.json"
    log.write_text("{ this is not a log")
    result = cli("datasets", "show", "toy", "--store", populated.root)
    result.one_line_error(2, "toy", "unreadable log")


def test_a_corrupt_release_manifest_is_a_problem_line_not_a_traceback(
    cli: Cli, populated: Store, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    assert cli("datasets", "export", "toy@0", "--to", release, "--store", populated.root).code == 0
    manifest = release / "manifest.json"
    for content, problem in [
        (b"{ not json", "invalid JSON"),
        (b"\xff\xfe", "not UTF-8"),
        (b"[1, 2]", "not a release manifest"),
        (b'{"shards": [{"path": 3}]}', "shards[0] needs a string path"),
    ]:
        manifest.write_bytes(content)
        result = cli("datasets", "verify", release)
        assert result.code == 1 and "Traceback" not in result.err
        assert problem in result.err.splitlines()[0]
    cli("datasets", "verify", tmp_path / "nowhere").one_line_error(2, "no such directory")


# -- import: modes and the duplicate message -----------------------------------------


def test_already_present_rows_say_how_to_upsert_and_upsert_replaces_them(
    cli: Cli, tmp_path: Path, raw_row: Callable[..., dict[str, Any]]
) -> None:
    root = tmp_path / "store"
    first = write_lines(tmp_path / "a.jsonl", [raw_row(i) for i in range(3)])
    assert cli("datasets", "import", first, "--table", "t", "--store", root).code == 0
    corrected = [raw_row(0, completion="a corrected completion"), raw_row(1), raw_row(7)]
    second = write_lines(tmp_path / "b.jsonl", corrected)
    result = cli("datasets", "import", second, "--table", "t", "--store", root)
    assert result.code == 0
    assert "1 new, 2 already in t" in result.out
    assert f"r1f datasets import {second} --table t --mode upsert" in result.out
    store = Store(root)
    assert "a corrected completion" not in store.read("t")["completion"].to_list()
    result = cli("datasets", "import", second, "--table", "t", "--store", root, "--mode", "upsert")
    assert result.code == 0, result.err
    assert "0 new, 1 replacing a stored row, 2 unchanged" in result.out
    table = store.read("t")
    assert table.height == 4 and table["sample_id"].n_unique() == 4
    assert "a corrected completion" in table["completion"].to_list()


def test_duplicate_sample_ids_say_what_makes_two_samples_distinct(
    cli: Cli, tmp_path: Path, raw_row: Callable[..., dict[str, Any]]
) -> None:
    row = raw_row(0)
    path = write_lines(tmp_path / "in.jsonl", [row, {**row, "completion": "another try"}])
    root = tmp_path / "store"
    result = cli("datasets", "import", path, "--table", "t", "--store", root)
    assert result.code == 0 and "1 quarantined" in result.out
    reason = Store(root).read("t.quarantine")["reason"][0]
    assert "duplicate sample_id" in reason and "first seen at line 1" in reason
    assert "sample_index" in reason and "seed" in reason


# -- vacuum --------------------------------------------------------------------------


def test_vacuum_removes_what_killed_writers_left_even_before_a_first_commit(
    cli: Cli, populated: Store
) -> None:
    root = Path(populated.root)
    # What a killed writer leaves: a partial Parquet file of a commit that never
    # landed, and the staging file of an unfinished upload.
    (root / "toy" / "part-00001-dead-c000.zstd.parquet").write_bytes(b"PAR1 half a file")
    (root / "toy" / "part-00002-dead-c000.zstd.parquet#1").write_bytes(b"PAR1")
    # A table whose first commit never landed: files and no log.
    (root / "fresh").mkdir()
    (root / "fresh" / "part-00000-dead-c000.zstd.parquet").write_bytes(b"PAR1")
    listed = cli("datasets", "vacuum", "toy", "--store", root, "--json")
    assert json.loads(listed.out)["would_remove"] == [
        "part-00001-dead-c000.zstd.parquet",
        "part-00002-dead-c000.zstd.parquet#1",
    ]
    assert cli("datasets", "vacuum", "toy", "--store", root, "--apply").code == 0
    assert cli("datasets", "vacuum", "fresh", "--store", root, "--apply").code == 0
    assert not (root / "fresh").exists()
    assert populated.read("toy").height == 20 and populated.latest_version("toy") == 0
    cli("datasets", "vacuum", "nothing", "--store", root).one_line_error(2, "no table 'nothing'")


# -- display -------------------------------------------------------------------------


def test_preview_tables_escape_control_and_bidi_characters(
    cli: Cli, store: Store, lineage: Lineage
) -> None:
    hostile = "evil\x1b[2J\u202eyawa\u2066x[bold]markup[/bold]\nnext"
    row = validate_sample(
        {
            "prompt": hostile,
            "completion": "c",
            "domain": "math",
            "track": "reasoning",
            "source": "s",
        }
    )
    store.commit("t", to_table([row]), lineage=lineage)
    result = cli("datasets", "show", "t", "--store", store.root)
    assert result.code == 0
    assert "\x1b" not in result.out and "\u202e" not in result.out and "\u2066" not in result.out
    assert "\\x1b[2J" in result.out and "\\u202e" in result.out
    assert "[bold]markup" in result.out  # shown as text, not read as a style


def test_a_long_completion_stays_out_of_the_log_statistics(store: Store, lineage: Lineage) -> None:
    row = validate_sample(
        {
            "prompt": "p",
            "completion": "long " * 400_000,  # 2 MB
            "domain": "math",
            "track": "reasoning",
            "source": "s",
        }
    )
    store.commit("t", to_table([row]), lineage=lineage)
    log = Path(store.root) / "t" / "_delta_log" / "00000000000000000000.json"
    assert log.stat().st_size < 20_000
    assert store.read("t")["completion"][0] == row["completion"]


# -- a bug is not a user mistake -------------------------------------------------------


def test_an_unexpected_error_is_one_line_with_status_70(
    cli: Cli, populated: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(Store, "info", broken)
    cli("datasets", "list", "--store", populated.root).one_line_error(
        70, "internal error (ZeroDivisionError: a bug)", "--debug"
    )
