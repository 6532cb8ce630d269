"""`r1f train sft` from a checkpoint on a store version, `r1f eval`, and their user errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from flows.cli import main
from store.lineage import Lineage
from store.record import to_table, validate_sample
from store.store import Store
from trainer.init import init_checkpoint
from trainer.model import tiny
from trainer.tokenizer import render_prompt, train_tokenizer


@pytest.fixture
def setup(tmp_path: Path) -> dict[str, Path]:
    torch.set_num_threads(1)
    rows = [
        validate_sample(
            {
                "prompt": f"Compute {a}+{b}.",
                "completion": f"<think>{a}+{b}={a + b}.</think><answer>{a + b}</answer>",
                "domain": "math",
                "track": "reasoning",
                "source": "toy-arithmetic",
                "sample_index": 0,
            }
        )
        for a in range(1, 8)
        for b in range(1, 4)
    ]
    store = Store(tmp_path / "store")
    store.commit("toy-sft", to_table(rows), lineage=Lineage(writer="tests"))
    texts = [render_prompt(r["prompt"]) + r["completion"] for r in rows]
    tok = train_tokenizer(texts, vocab_size=300)
    base, _ = init_checkpoint(tiny(vocab_size=300, n_layers=2), 0, tmp_path / "base", tokenizer=tok)
    config = tmp_path / "sft.yaml"
    config.write_text(
        "stage: sft\n"
        f"store: {{root: {tmp_path / 'store'}}}\n"
        f"model: {{checkpoint: {base}}}\n"
        "data: {source: toy-sft@0, seq_len: 128, loss_on: completion}\n"
        "optim: {lr: 1.0e-3, warmup_steps: 1}\n"
        "loop: {steps: 3, rows_per_micro_batch: 2, tensorboard: false, progress: false}\n"
        "eval: {families: [toy-arithmetic], problems: 2, k: 2, max_tokens: 8}\n"
    )
    return {"config": config, "base": base, "root": tmp_path}


def test_sft_from_a_checkpoint_then_eval(
    setup: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    out = setup["root"] / "sft-out"
    assert (
        main(["train", "sft", "--config", str(setup["config"]), "--out", str(out), "--json"]) == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 3 and summary["data"]["table"] == "toy-sft"
    assert set(summary["eval_after"]["families"]) == {"toy-arithmetic"}
    config = json.loads((out / "config.json").read_text())
    assert config["r1f_stage"] == "sft" and config["r1f_parent"]["path"] == str(setup["base"])
    assert (out / "tokenizer.json").is_file() and (out / "loss.png").is_file()
    assert (
        main(["eval", "--model", str(out), "--problems", "2", "--k", "2", "--max-tokens", "8"]) == 0
    )
    table = capsys.readouterr().out
    assert "toy-arithmetic" in table and "toy-countdown" in table


def test_user_errors_are_one_line_and_exit_2(
    setup: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    root, config = setup["root"], setup["config"]

    def error(argv: list[str]) -> str:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("r1f: error: ")
        return err

    assert "stage is 'sft'" in error(["train", "pretrain", "--config", str(config)])
    bad = root / "bad.yaml"
    bad.write_text(config.read_text().replace("loop: {steps: 3", "loop: {stpes: 3"))
    assert "loop.stpes: unknown key" in error(["train", "sft", "--config", str(bad)])
    missing = root / "missing.yaml"
    missing.write_text(config.read_text().replace("toy-sft@0", "toy-sft@9"))
    out = root / "o"
    assert "no such version" in error(["train", "sft", "--config", str(missing), "--out", str(out)])
    out.mkdir(exist_ok=True)
    (out / "x").write_text("")
    assert "--resume" in error(["train", "sft", "--config", str(config), "--out", str(out)])
    assert "no config.json" in error(["eval", "--model", str(root)])
    assert "--families" in error(["eval", "--model", str(setup["base"]), "--families", "toy-nope"])
    assert "no such directory" in error(["eval", "--model", str(root / "nowhere")])
    base = str(setup["base"])
    for flag, value, rule in (
        ("--k", "0", "an integer >= 1"),
        ("--problems", "0", "an integer >= 1"),
        ("--max-tokens", "0", "an integer >= 1"),
        ("--temperature", "-1", "a number >= 0"),
        ("--difficulty", "9", "an integer in 1..8"),
    ):
        assert f"argument {flag}: must be {rule}" in error(["eval", "--model", base, flag, value])


def test_distill_a_dense_student_that_transformers_loads_offline(
    setup: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    transformers = pytest.importorskip("transformers")
    root = setup["root"]
    student = root / "student.json"
    student.write_text(
        json.dumps(
            {
                "model_type": "qwen2",
                "vocab_size": 300,
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "num_key_value_heads": 2,
                "max_position_embeddings": 512,
            }
        )
    )
    config = root / "distill.yaml"
    config.write_text(
        setup["config"]
        .read_text()
        .replace("stage: sft", "stage: distill")
        .replace(
            f"model: {{checkpoint: {setup['base']}}}",
            f"model: {{kind: hf, hf_config: {student}, tokenizer: {setup['base']}}}",
        )
    )
    out = root / "student"
    assert main(["train", "distill", "--config", str(config), "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["eval_after"]["families"]["toy-arithmetic"]["problems"] == 2
    loaded = transformers.AutoModelForCausalLM.from_pretrained(str(out))
    assert type(loaded).__name__ == "Qwen2ForCausalLM"
    assert json.loads((out / "config.json").read_text())["r1f_stage"] == "distill"
    assert (
        main(["eval", "--model", str(out), "--problems", "1", "--k", "2", "--max-tokens", "4"]) == 0
    )


def test_fp8_section_trains_the_linear_layers_in_fp8(
    setup: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    from trainer.fp8 import Float8Recipe, Fp8Linear
    from trainer.metrics import read_metrics
    from trainer.train import build_model, config_transforms

    root, config = setup["root"], setup["config"]
    fp8 = root / "fp8.yaml"
    fp8.write_text(config.read_text() + "fp8: {}\n")
    losses = {}
    for name, path in (("fp32", config), ("fp8", fp8)):
        out = root / name
        assert main(["train", "sft", "--config", str(path), "--out", str(out), "--json"]) == 0
        capsys.readouterr()
        losses[name] = [
            r["loss"] for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "train"
        ]
    # The same run: close, but not the same numbers (the GEMMs really ran in FP8).
    assert losses["fp8"] != losses["fp32"]
    for a, b in zip(losses["fp32"], losses["fp8"], strict=True):
        assert abs(a - b) / a < 0.02
    saved = json.loads((root / "fp8" / "config.json").read_text())["r1f_config"]["fp8"]
    assert saved["scaling"] == "blockwise" and saved["block"] == 128
    # `fp8: {}` is the V3 recipe; the swap is the first transform and leaves the head alone.
    from trainer.config import load_train_config

    cfg = load_train_config(fp8)
    assert cfg.fp8 == Float8Recipe()
    model = build_model(cfg.model, 300, 0)
    for transform in config_transforms(cfg):
        model.module = transform(model.module)
    kinds = {n: type(m) for n, m in model.module.named_modules()}
    assert kinds["layers.0.attn.wo"] is Fp8Linear and kinds["head"] is torch.nn.Linear
    # A bad section is one line naming it, exit 2.
    for bad, said in (
        ("fp8: {block: 100}", "block=100"),
        ("fp8: {keep_high_precision: [haed]}", "keep_high_precision"),
    ):
        path = root / "bad-fp8.yaml"
        path.write_text(config.read_text() + bad + "\n")
        assert (
            main(["train", "sft", "--config", str(path), "--out", str(root / "x"), "--force"]) == 2
        )
        # (the run's progress lines may come first on stderr; the error is one line)
        errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
        assert len(errors) == 1 and errors[0].startswith("r1f: error: ") and said in errors[0]


def test_ctrl_c_stops_training_and_resume_finishes_it(setup: dict[str, Path]) -> None:
    import signal
    import subprocess
    import sys
    import time

    root = setup["root"]
    long_run = root / "long.yaml"
    long_run.write_text(
        setup["config"]
        .read_text()
        .replace("loop: {steps: 3,", "loop: {steps: 4000, checkpoint_every: 1,")
        .replace("eval: {families: [toy-arithmetic], problems: 2, k: 2, max_tokens: 8}\n", "")
    )
    out = root / "run"
    argv = [sys.executable, "-m", "flows.cli", "train", "sft", "--config", str(long_run)]
    repo = str(Path(__file__).resolve().parents[2])
    child = subprocess.Popen(
        [*argv, "--out", str(out)],
        cwd=repo,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**__import__("os").environ, "PYTHONPATH": repo},
    )
    deadline = time.monotonic() + 600  # a hang guard (the machine may be busy), not a timing
    while not list(out.glob("checkpoints/step-*")):
        assert child.poll() is None, "training ended before it could be interrupted"
        assert time.monotonic() < deadline, "no checkpoint was written"
        time.sleep(0.05)
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=60)
    lines = err.decode().strip().splitlines()
    assert child.returncode == 130, err
    assert "Traceback" not in err.decode()
    assert lines[-1].startswith("r1f: interrupted: ") and "--resume" in lines[-1], lines
    # The last checkpoint is complete: the run resumes from it (to a shorter end, to be quick).
    steps = max(int(p.name.split("-")[1]) for p in out.glob("checkpoints/step-*"))
    short = root / "short.yaml"
    short.write_text(long_run.read_text().replace("steps: 4000", f"steps: {steps + 2}"))
    code = main(["train", "sft", "--config", str(short), "--out", str(out), "--resume", "--json"])
    assert code == 0
