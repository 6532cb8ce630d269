"""Render a dataset card (README.md with Hugging Face front matter, plus PNG plots) from stats.

`card_text(stats, meta)` is a pure function of its inputs: no clock, no
environment, dicts emitted in a fixed order. `render_card` writes that text
and the length plots, which are drawn on a bare `matplotlib.figure.Figure`
with the Agg canvas, so rendering never touches pyplot's global state or the
backend chosen by whoever imported matplotlib first. PNGs are saved without
the `Software` tag (it carries the matplotlib version), so the same stats give
the same bytes.

The front matter is what the Hub and `datasets` read: `pretty_name`,
`license`, `size_categories`, `task_categories`, `source_datasets`, and, when
`CardMeta.data_files` is given, a `configs:` block that makes
`datasets.load_dataset(card_dir)` find the Parquet shards beside the card.
Our own keys live under `r1f:`, which the Hub ignores.

`CardMeta.reports` are the reports stored with the version
(`store.reports`): each becomes a section of its own, headed by the
report's title and signed with the version and writer it came with; a
version without any says so in a `Reports` section.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from data_cards.stats import NULL_KEY, CardStats, LengthStats
from store.jsonl import atomic_output
from store.reports import AttachedReport, VersionReports

# Hugging Face's size buckets: (exclusive upper bound, label).
SIZE_CATEGORIES: tuple[tuple[int, str], ...] = (
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
    (100_000_000, "10M<n<100M"),
    (1_000_000_000, "100M<n<1B"),
    (10_000_000_000, "1B<n<10B"),
    (100_000_000_000, "10B<n<100B"),
    (1_000_000_000_000, "100B<n<1T"),
)
LARGEST_SIZE_CATEGORY = "n>1T"
# The split names `datasets` accepts (datasets.naming._split_re).
SPLIT_NAME = re.compile(r"^\w+(\.\w+)*$")
PLOTS_DIR = "plots"
FIELD_LABELS = {
    "prompt_chars": ("Prompt length", "characters"),
    "completion_chars": ("Completion length", "characters"),
    "reasoning_chars": ("Reasoning length", "characters"),
    "answer_chars": ("Answer length", "characters"),
    "completion_tokens": ("Completion length", "tokens"),
}
# Lineage keys in the order a reader wants them; any other key follows, sorted.
LINEAGE_ORDER = ("writer", "flow_run_id", "config_hash", "code_version", "created_at", "parents")
HISTORY_ORDER = ("version", "timestamp", "operation", "writer")
DECISION_LABELS = {True: "kept", False: "rejected", None: "undecided"}
# Fixed colours per track, so a track looks the same in every card.
TRACK_COLOURS = {"reasoning": "#1f77b4", "non_reasoning": "#ff7f0e"}
OTHER_COLOURS = ("#2ca02c", "#d62728", "#9467bd", "#8c564b")
DASH = "—"


@dataclass(frozen=True)
class CardMeta:
    """What the card says about a table version that the rows themselves do not."""

    name: str
    version: int
    parent_version: int | None
    content_hash: str
    license: str = "other"
    task_categories: tuple[str, ...] = ("text-generation",)
    description: str = ""
    # Free-form commit metadata: writer, flow_run_id, config_hash, code_version,
    # parents ([{table, version}]), created_at. Rendered as far as present.
    lineage: Mapping[str, Any] = field(default_factory=dict)
    # Recent commits, newest first as the store lists them: version, timestamp, operation, writer.
    history: Sequence[Mapping[str, Any]] = ()
    # Split name -> glob relative to the card's directory, e.g. {"train": "data/train-*.parquet"}.
    data_files: Mapping[str, str] | None = None
    # The reports stored with the version (store.reports), one section each; None: not
    # looked up (a card rendered from stats alone), so the card has no reports section.
    reports: VersionReports | None = None


def size_category(rows: int) -> str:
    """The Hugging Face `size_categories` bucket for a row count (1000 -> "1K<n<10K")."""
    for bound, label in SIZE_CATEGORIES:
        if rows < bound:
            return label
    return LARGEST_SIZE_CATEGORY


def _check_data_files(data_files: Mapping[str, str]) -> None:
    for split, path in data_files.items():
        if not SPLIT_NAME.match(split):
            raise ValueError(
                f"CardMeta.data_files: split name {split!r} is not accepted by `datasets` "
                f"(letters, digits, '_' and '.' only, e.g. 'train')"
            )
        if path.startswith("/") or ".." in Path(path).parts:
            raise ValueError(
                f"CardMeta.data_files[{split!r}]: {path!r} must be a glob relative to the "
                f"card's directory (e.g. 'data/{split}-*.parquet'), so the folder can move"
            )


def _plain(value: Any) -> Any:
    """A value YAML's safe dumper accepts; anything exotic becomes its string form."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _front_matter(stats: CardStats, meta: CardMeta) -> str:
    front: dict[str, Any] = {
        "pretty_name": meta.name,
        "license": meta.license,
        "size_categories": [size_category(stats.rows)],
        "task_categories": list(meta.task_categories),
        "source_datasets": list(stats.sources),
    }
    if meta.data_files:
        front["configs"] = [
            {
                "config_name": "default",
                "data_files": [{"split": s, "path": p} for s, p in meta.data_files.items()],
            }
        ]
    front["r1f"] = {
        "name": meta.name,
        "version": meta.version,
        "parent_version": meta.parent_version,
        "content_hash": meta.content_hash,
        "rows": stats.rows,
        "config_hash": _plain(meta.lineage.get("config_hash")),
        "code_version": _plain(meta.lineage.get("code_version")),
    }
    if meta.reports is not None:
        front["r1f"]["reports"] = meta.reports.kinds()
    # A huge width keeps long hashes and globs on one line; sort_keys=False keeps our order.
    body = yaml.safe_dump(front, sort_keys=False, allow_unicode=True, width=1 << 30)
    return f"---\n{body}---\n"


def _cell(value: Any) -> str:
    if value is None:
        return DASH
    text = str(value).replace("\n", " ").replace("|", "\\|")
    return text if text.strip() else DASH


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], numeric: int = 0) -> str:
    """A Markdown table; the last `numeric` columns are right-aligned."""
    align = ["---"] * (len(headers) - numeric) + ["--:"] * numeric
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _n(value: int | None) -> str:
    return DASH if value is None else f"{value:,}"


def _share(count: int, total: int) -> str:
    return f"{100 * count / total:.1f}%" if total else DASH


def _code(value: Any) -> str:
    return f"`{value}`"


def _summary(stats: CardStats, meta: CardMeta) -> str:
    parent = (
        f"derived from version {meta.parent_version}"
        if meta.parent_version is not None
        else "the first version"
    )
    head = (
        f"Version {meta.version} of `{meta.name}` ({parent}), content hash `{meta.content_hash}`."
    )
    if stats.rows == 0:
        return f"{head} This table is empty: it has no rows, so every section below is empty too."
    tracks = ", ".join(f"{_n(c)} `{t}` ({_share(c, stats.rows)})" for t, c in stats.tracks.items())
    decided = {d: sum(r.count for r in stats.decisions if r.kept is d) for d in (True, False)}
    if decided[True] + decided[False] == 0:
        filtered = "No filter has decided on these samples yet."
    else:
        undecided = stats.rows - decided[True] - decided[False]
        filtered = (
            f"Filters kept {_n(decided[True])} and rejected {_n(decided[False])} "
            f"(rejected rows stay in the table with their reason)"
            + (f"; {_n(undecided)} are undecided." if undecided else ".")
        )
    judged = stats.rows - stats.unjudged
    return (
        f"{head} It holds **{_n(stats.rows)} samples**: {tracks}, "
        f"from {len(stats.sources)} source(s) across {len(stats.domains)} domain(s). "
        f"{_n(judged)} ({_share(judged, stats.rows)}) carry at least one verifier verdict. "
        f"{filtered}"
    )


def _composition(stats: CardStats) -> str:
    if stats.rows == 0:
        return "The table is empty."
    detail = _table(
        ["domain", "track", "source", "samples", "share"],
        [
            (
                _code(r.domain),
                _code(r.track),
                _code(r.source),
                _n(r.count),
                _share(r.count, stats.rows),
            )
            for r in stats.composition
        ],
        numeric=2,
    )
    per_track = _table(
        ["track", "samples", "share"],
        [(_code(t), _n(c), _share(c, stats.rows)) for t, c in stats.tracks.items()],
        numeric=2,
    )
    per_domain = _table(
        ["domain", "samples", "share"],
        [(_code(d), _n(c), _share(c, stats.rows)) for d, c in stats.domains.items()],
        numeric=2,
    )
    return (
        "Samples per domain, track and source (shares of all rows).\n\n"
        f"{detail}\n\n### Per track\n\n{per_track}\n\n### Per domain\n\n{per_domain}"
    )


def plotted_fields(stats: CardStats) -> list[str]:
    """Length fields that get a plot: those with at least one positive length."""
    return [name for name, s in stats.lengths.items() if sum(s.histogram.counts) > 0]


def _length_row(name: str, track: str, s: LengthStats) -> tuple[Any, ...]:
    mean = DASH if s.mean is None else f"{s.mean:,.1f}"
    return (
        _code(name),
        track,
        _n(s.count),
        _n(s.empty),
        mean,
        _n(s.min),
        _n(s.p50),
        _n(s.p90),
        _n(s.p99),
        _n(s.max),
    )


def _lengths(stats: CardStats) -> str:
    if stats.rows == 0:
        return "The table is empty."
    parts = [
        "Characters are Unicode code points (polars `str.len_chars`), not bytes; "
        "`completion_tokens` is the count the generator reported, shown only when recorded. "
        "Null values are left out of `count`; zero-length values are counted under `empty` "
        "and left out of the plots. Percentiles are nearest-rank, so each one is a length "
        "that occurs in the data. The histograms use log-spaced bins, equal width on the "
        "log axis, whenever the lengths span a decade or more (long-tailed text lengths "
        "are unreadable on a linear axis), and linear bins otherwise."
    ]
    for name in plotted_fields(stats):
        label, _ = FIELD_LABELS.get(name, (name, ""))
        parts.append(f"![{label} ({name})]({PLOTS_DIR}/{name}.png)")
    rows: list[tuple[Any, ...]] = []
    for name, s in stats.lengths.items():
        rows.append(_length_row(name, "all", s))
        if len(stats.tracks) > 1:
            for track, fields in stats.lengths_by_track.items():
                if name in fields and fields[name].count:
                    rows.append(_length_row(name, _code(track), fields[name]))
    headers = ["field", "track", "count", "empty", "mean", "min", "p50", "p90", "p99", "max"]
    parts.append(_table(headers, rows, numeric=8))
    total = sum(stats.finish_reasons.values())
    finish = _table(
        ["finish reason", "samples", "share"],
        [
            (DASH if k == NULL_KEY else _code(k), _n(c), _share(c, total))
            for k, c in stats.finish_reasons.items()
        ],
        numeric=2,
    )
    parts.append(
        "### Finish reasons\n\n"
        "`length` means the generator hit its token limit, so the text is truncated; "
        f"{DASH} means none was recorded.\n\n{finish}"
    )
    return "\n\n".join(parts)


def _verdicts(stats: CardStats) -> str:
    if not stats.verdicts:
        return "No verifier has judged these samples yet."
    judged: dict[str, int] = {}
    by_verdict: dict[tuple[str, str], int] = {}
    for r in stats.verdicts:
        judged[r.verifier] = judged.get(r.verifier, 0) + r.count
        by_verdict[r.verifier, r.verdict] = by_verdict.get((r.verifier, r.verdict), 0) + r.count
    summary = _table(
        ["verifier", "verdict", "samples", "share of judged"],
        [
            (_code(v), _code(verdict), _n(c), _share(c, judged[v]))
            for (v, verdict), c in by_verdict.items()
        ],
        numeric=2,
    )
    detail = _table(
        ["verifier", "verdict", "reason", "samples", "share of judged"],
        [
            (
                _code(r.verifier),
                _code(r.verdict),
                r.reason,
                _n(r.count),
                _share(r.count, judged[r.verifier]),
            )
            for r in stats.verdicts
        ],
        numeric=2,
    )
    unjudged = (
        f"{_n(stats.unjudged)} sample(s) carry no verdict from any verifier."
        if stats.unjudged
        else "Every sample carries at least one verdict."
    )
    return f"{unjudged}\n\n{summary}\n\n### Reasons\n\n{detail}"


def _decisions(stats: CardStats) -> str:
    if stats.rows == 0:
        return "The table is empty."
    if all(r.kept is None for r in stats.decisions):
        return "No filter has run yet: every sample is undecided (`kept` is null)."
    table = _table(
        ["decision", "reason", "samples", "share"],
        [
            (DECISION_LABELS[r.kept], r.filter_reason, _n(r.count), _share(r.count, stats.rows))
            for r in stats.decisions
        ],
        numeric=2,
    )
    return (
        "Nothing is deleted: rejected samples stay in the table with the reason the filter "
        "gave.\n\n" + table
    )


def _lineage_value(key: str, value: Any) -> str:
    if key == "parents" and isinstance(value, Sequence) and not isinstance(value, str):
        if not value:
            return "none"
        return ", ".join(
            f"`{p.get('table')}` v{p.get('version')}" if isinstance(p, Mapping) else _code(p)
            for p in value
        )
    if isinstance(value, Mapping | list | tuple):
        return _code(json.dumps(value, sort_keys=True, default=str))
    return _code(value)


def _lineage(meta: CardMeta) -> str:
    if not meta.lineage:
        return "No lineage was recorded for this version."
    keys = [k for k in LINEAGE_ORDER if k in meta.lineage]
    keys += sorted(k for k in meta.lineage if k not in LINEAGE_ORDER)
    return _table(["key", "value"], [(k, _lineage_value(k, meta.lineage[k])) for k in keys])


def _report_data(report: AttachedReport) -> str:
    """A report stored without Markdown: its data as a key/value table."""
    data = report.report.data
    if not data:
        return "The report holds no data."
    rows = [
        (
            _code(k),
            _code(json.dumps(v, sort_keys=True)) if isinstance(v, Mapping | list) else _cell(v),
        )
        for k, v in data.items()
    ]
    return _table(["key", "value"], rows)


def _report_section(report: AttachedReport, meta: CardMeta) -> tuple[str, str]:
    writer = f" by `{report.writer}`" if report.writer else ""
    signed = f"_Report `{report.kind}`, stored with version {report.version}{writer}"
    if report.version < meta.version:
        later = (
            f"version {meta.version}"
            if report.version + 1 == meta.version
            else f"versions {report.version + 1}-{meta.version}"
        )
        signed += (
            f"; {later} added or changed rows without a new `{report.kind}` report, "
            f"so it describes the rows of version {report.version}"
        )
    body = report.report.markdown.strip() or _report_data(report)
    return report.report.title, f"{signed}._\n\n{body}"


def _report_sections(meta: CardMeta) -> list[tuple[str, str]]:
    found = meta.reports
    if found is None:
        return []
    sections = [_report_section(r, meta) for r in found.reports]
    if not found.complete:
        cut = (
            f"The table's log no longer reaches back before version {found.searched_from} "
            "(Delta removes log entries past its retention when it writes a checkpoint), so "
            "reports stored with earlier versions whose rows this version still holds cannot "
            "be shown."
        )
        sections.append(("Reports", cut))
    elif not sections:
        writer = meta.lineage.get("writer")
        who = f"its writer, `{writer}`," if writer else "its writer"
        searched = (
            f"version {meta.version}"
            if found.searched_from == meta.version
            else f"versions {found.searched_from}-{meta.version} (the commits its rows come from)"
        )
        sections.append(
            (
                "Reports",
                f"No reports were stored with {searched}: {who} attached none. Reports "
                "(filter steps, decontamination, mixture, generation cost) are stored in the "
                "same commit as the rows they describe, so none was lost in a crash: none "
                "was written.",
            )
        )
    return sections


def _history(meta: CardMeta) -> str:
    if not meta.history:
        return "No history was recorded."
    present = {k for entry in meta.history for k in entry}
    keys = [k for k in HISTORY_ORDER if k in present]
    keys += sorted(k for k in present if k not in HISTORY_ORDER)
    return _table(keys, [[entry.get(k) for k in keys] for entry in meta.history])


def _how_to_load(meta: CardMeta) -> str:
    if meta.data_files:
        files = json.dumps(dict(meta.data_files))
        first = next(iter(meta.data_files.values()))
        return (
            "In a release of this version (`r1f datasets export "
            f"{meta.name}@{meta.version} --to DIR`) the Parquet shards sit beside this card, "
            "and the front matter's `configs:` block tells `datasets` where they are. Paths "
            "are relative to this card's directory.\n\n"
            "```python\n"
            "import datasets\n\n"
            'CARD_DIR = "."  # the directory that holds this README.md\n'
            "ds = datasets.load_dataset(CARD_DIR)\n"
            "# or, naming the files yourself:\n"
            f'ds = datasets.load_dataset("parquet", data_files={files})\n'
            "```\n\n"
            "```python\n"
            "import polars as pl\n\n"
            f'df = pl.read_parquet("{first}")\n'
            'kept = df.filter(pl.col("kept"))  # only the rows the filters accepted\n'
            "```"
        )
    return (
        "This card describes a table in the store. Export the version as Parquet shards "
        "first:\n\n"
        "```bash\n"
        f"r1f datasets export {meta.name}@{meta.version} --to DIR\n"
        "```\n\n"
        "```python\n"
        "import datasets\n\n"
        'DIR = "path/to/export"  # the --to directory above\n'
        'ds = datasets.load_dataset("parquet", data_files=f"{DIR}/**/*.parquet")\n'
        "```\n\n"
        "```python\n"
        "import polars as pl\n\n"
        'df = pl.read_parquet(f"{DIR}/**/*.parquet")\n'
        'kept = df.filter(pl.col("kept"))  # only the rows the filters accepted\n'
        "```"
    )


def card_text(stats: CardStats, meta: CardMeta) -> str:
    """The card's README.md text: front matter, then the sections in a fixed order."""
    if meta.data_files:
        _check_data_files(meta.data_files)
    title = f"# {meta.name}"
    intro = [title]
    if meta.description.strip():
        intro.append(meta.description.strip())
    intro.append(_summary(stats, meta))
    intro.append(
        "_This card is rendered from the store by `data_cards`; edit the data or the "
        "renderer, not this file._"
    )
    sections: list[tuple[str, str]] = [
        ("Composition", _composition(stats)),
        ("Length distributions", _lengths(stats)),
        ("Verdicts", _verdicts(stats)),
        ("Filter decisions and reject reasons", _decisions(stats)),
        *_report_sections(meta),
        ("Lineage", _lineage(meta)),
        ("History", _history(meta)),
        ("How to load", _how_to_load(meta)),
    ]
    body = "\n\n".join(intro + [f"## {title}\n\n{text.strip()}" for title, text in sections])
    return f"{_front_matter(stats, meta)}\n{body}\n"


def _track_colour(track: str, index: int) -> str:
    return TRACK_COLOURS.get(track, OTHER_COLOURS[index % len(OTHER_COLOURS)])


def _plot(stats: CardStats, name: str, path: Path) -> None:
    overall = stats.lengths[name]
    hist = overall.histogram
    label, unit = FIELD_LABELS.get(name, (name, "length"))
    fig = Figure(figsize=(9, 3.8), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    tracks = [
        (t, fields[name])
        for t, fields in stats.lengths_by_track.items()
        if name in fields and sum(fields[name].histogram.counts) > 0
    ]
    if len(tracks) > 1:
        ax.stairs(hist.counts, hist.edges, fill=True, color="#d9d9d9", label="all")
    for i, (track, s) in enumerate(tracks):
        ax.stairs(
            s.histogram.counts,
            s.histogram.edges,
            color=_track_colour(track, i),
            linewidth=1.6,
            label=f"{track} (n={s.count - s.empty:,})",
        )
    for pct, value, style in (("p50", overall.p50, "--"), ("p99", overall.p99, ":")):
        if value:
            ax.axvline(
                value, color="#444444", linestyle=style, linewidth=1, label=f"{pct} = {value:,}"
            )
    if hist.scale == "log":
        ax.set_xscale("log")
        # Plain numbers (100, 1,000) read faster than 10^2 on a length axis; minor
        # ticks stay unlabelled so the axis does not crowd.
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlim(hist.edges[0], hist.edges[-1])
    scale_note = "log-spaced bins" if hist.scale == "log" else "linear bins"
    ax.set_xlabel(f"{unit} ({'log scale, ' if hist.scale == 'log' else ''}{scale_note})")
    ax.set_ylabel("samples per bin")
    empty = f", {overall.empty:,} empty not shown" if overall.empty else ""
    ax.set_title(f"{label} in {unit}: {overall.count:,} values{empty}")
    ax.grid(True, which="major", alpha=0.3)
    # Outside the axes: a long tail or a spike can sit in any corner of the plot.
    fig.legend(loc="outside right upper", fontsize="small", frameon=False)
    # No "Software" tag: it embeds the matplotlib version, which would change the bytes.
    with atomic_output(path, binary=True) as fh:  # a reader never sees half a PNG
        fig.savefig(fh, format="png", metadata={"Software": None})


def render_card(stats: CardStats, meta: CardMeta, out_dir: Path) -> Path:
    """Write `out_dir/README.md` and `out_dir/plots/*.png`; return the README path."""
    out_dir = Path(out_dir)
    text = card_text(stats, meta)
    plots = out_dir / PLOTS_DIR
    plots.mkdir(parents=True, exist_ok=True)
    wanted = plotted_fields(stats)
    for name in wanted:
        _plot(stats, name, plots / f"{name}.png")
    # A re-render must not leave a plot the new README no longer describes.
    for name in FIELD_LABELS:
        if name not in wanted:
            (plots / f"{name}.png").unlink(missing_ok=True)
    readme = out_dir / "README.md"
    with atomic_output(readme) as fh:
        fh.write(text)
    return readme
