"""`r1f model init`, `r1f model info` and `r1f generate`: a round trip on a small checkpoint."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from flows.cli import main as r1f


@pytest.fixture(autouse=True)
def restore_threads() -> Iterator[None]:
    before = torch.get_num_threads()  # `r1f generate --threads` sets it process-wide
    yield
    torch.set_num_threads(before)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = r1f(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ckpt") / "tiny-s3"
    # A smaller `tiny`, given as a config file on top of the preset.
    config = out.parent / "small.yaml"
    config.write_text("preset: tiny\ndim: 64\ninter_dim: 128\nn_layers: 2\nmax_seq_len: 512\n")
    assert r1f(["model", "init", "--config", str(config), "--seed", "3", "--out", str(out)]) == 0
    return out


def test_init_writes_a_loadable_checkpoint_with_tokenizer(checkpoint: Path) -> None:
    from trainer.checkpoint import load_checkpoint
    from trainer.tokenizer import R1Tokenizer

    _, args = load_checkpoint(checkpoint)
    assert (args.dim, args.n_layers, args.n_mtp_depth, args.max_seq_len) == (64, 2, 1, 512)
    config = json.loads((checkpoint / "config.json").read_text())
    assert (config["bos_token_id"], config["eos_token_id"], config["init_seed"]) == (0, 1, 3)
    tok = R1Tokenizer.from_dir(checkpoint)
    assert tok.vocab_size <= args.vocab_size == 1024
    assert "chat_template" in json.loads((checkpoint / "tokenizer_config.json").read_text())


def test_init_is_deterministic_and_refuses_to_overwrite(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = checkpoint.parent / "small.yaml"
    again = tmp_path / "again"
    assert (
        run(capsys, "model", "init", "--config", str(config), "--seed", "3", "--out", str(again))[0]
        == 0
    )
    assert (again / "model.safetensors").read_bytes() == (
        checkpoint / "model.safetensors"
    ).read_bytes()
    code, _, err = run(capsys, "model", "init", "--preset", "tiny", "--out", str(again))
    assert code == 2 and "--force" in err
    code, _, err = run(capsys, "model", "init", "--preset", "huge", "--out", str(tmp_path / "x"))
    assert code == 2 and "unknown preset 'huge'" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("preset: tiny\nwidth: 3\n")
    code, _, err = run(capsys, "model", "init", "--config", str(bad), "--out", str(tmp_path / "y"))
    assert code == 2 and "unknown key 'width'" in err


def test_info_reports_shapes_parameters_and_cache(
    checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "model", "info", str(checkpoint), "--json")
    assert code == 0
    info = json.loads(out)
    assert info["config"]["dim"] == 64 and info["config"]["kv_lora_rank"] == 64
    assert info["parameters"]["activated"] < info["parameters"]["total"]
    assert info["parameters"]["total_with_mtp"] > info["parameters"]["total"]
    kv = info["kv_cache"]
    assert (kv["mla_values_per_layer"], kv["mha_values_per_layer"]) == (64 + 16, 4 * (32 + 32))
    assert kv["mla_bytes_per_token"] == 80 * 2 * 4
    assert "model.layers.1.mlp.experts.*.gate_proj.weight" in info["tensors"]
    assert len(info["model_hash"]) == 64
    code, out, _ = run(capsys, "model", "info", str(checkpoint))
    assert code == 0 and "KV cache per token" in out and "3.2x" in out


def test_generate_round_trip(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts = tmp_path / "in.jsonl"
    rows = [{"prompt": "Compute 12+4.", "id": "a"}, {"prompt": "Hello!", "id": "b"}]
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out.jsonl"
    base = ["generate", "--model", str(checkpoint), "--prompts", str(prompts), "--output", str(out)]
    sampled = [*base, "--n", "2", "--temperature", "0.8", "--top-p", "0.9", "--max-tokens", "6"]
    code, stdout, _ = run(capsys, *sampled, "--seed", "5", "--logprobs", "--json")
    assert code == 0
    summary = json.loads(stdout)
    assert summary["samples"] == 4 and summary["model"].startswith("local:tiny-s3@")
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(g["id"], g["sample_index"]) for g in got] == [("a", 0), ("a", 1), ("b", 0), ("b", 1)]
    for g in got:
        assert set(g) >= {"prompt", "completion", "token_ids", "logprobs", "finish_reason"}
        assert len(g["logprobs"]) == len(g["token_ids"]) == g["completion_tokens"] <= 6
        assert g["finish_reason"] in ("stop", "length")
    # Same seed, same output; the MTP path samples the same distribution but not the same draws.
    assert run(capsys, *sampled, "--seed", "5", "--logprobs")[0] == 0
    assert [json.loads(line) for line in out.read_text().splitlines()] == got

    greedy = [*base, "--temperature", "0", "--max-tokens", "8"]
    assert run(capsys, *greedy)[0] == 0
    plain = [json.loads(line) for line in out.read_text().splitlines()]
    assert "logprobs" not in plain[0]
    code, stdout, _ = run(capsys, *greedy, "--mtp")
    assert code == 0 and "MTP acceptance" in stdout
    spec = [json.loads(line) for line in out.read_text().splitlines()]
    assert [s["token_ids"] for s in spec] == [p["token_ids"] for p in plain]

    # --raw: the prompt is encoded as it is, without the chat template.
    assert run(capsys, *greedy, "--raw", "--json")[0] == 0
    raw = [json.loads(line) for line in out.read_text().splitlines()]
    assert raw[0]["prompt_tokens"] < plain[0]["prompt_tokens"]


def test_generate_errors_are_one_line(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"text": "no prompt"}\n')
    out = str(tmp_path / "o.jsonl")
    code, _, err = run(
        capsys, "generate", "--model", str(checkpoint), "--prompts", str(bad), "--output", out
    )
    # A bad prompt row is reported and left out; the other prompts are generated.
    assert code == 0 and f"{bad}:2: each row needs a non-empty string field 'prompt'" in err
    assert len((tmp_path / "o.jsonl").read_text().splitlines()) == 1
    good = tmp_path / "good.jsonl"
    good.write_text('{"prompt": "ok"}\n')
    argv = ["generate", "--model", str(tmp_path), "--prompts", str(good), "--output", out]
    code, _, err = run(capsys, *argv)
    assert code == 2 and "tokenizer.json" in err
    argv = ["generate", "--model", str(checkpoint), "--prompts", str(good), "--output", out]
    code, _, err = run(capsys, *argv, "--temperature", "-1")
    assert code == 2 and "temperature" in err


def test_generate_output_imports_and_an_over_long_prompt_is_skipped(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kind = {"domain": "math", "track": "reasoning", "source": "toy-arithmetic"}
    rows = [
        {"prompt": "Compute 12+4.", "gold": "16", **kind},
        {"prompt": "word " * 2000, "gold": "0", **kind},  # far beyond max_seq_len 512
        {"prompt": "Compute 2+2.", "gold": "4", **kind},
    ]
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "samples.jsonl"
    argv = ["generate", "--model", str(checkpoint), "--prompts", str(prompts), "--output", str(out)]
    code, _, err = run(capsys, *argv, "--n", "2", "--max-tokens", "4", "--logprobs")
    assert code == 0 and "Traceback" not in err
    assert f"{prompts}:2: prompt is " in err and "the model's context is 512" in err
    samples = [json.loads(line) for line in out.read_text().splitlines()]
    assert [s["gold"] for s in samples] == ["16", "16", "4", "4"]

    root = tmp_path / "store"
    code, text, err = run(
        capsys, "datasets", "import", str(out), "--table", "gen", "--store", str(root)
    )
    assert code == 0, err
    assert "4 valid (4 new, 0 already in gen), 0 quarantined" in text
    assert "Not stored: logprobs, token_ids" in text
    from store.store import Store

    stored = Store(root).read("gen")
    assert stored["sample_id"].n_unique() == 4  # sample_index keeps the two samples apart
    assert sorted(stored["gold"].to_list()) == ["16", "16", "4", "4"]
    assert set(stored["model_id"].to_list()) == {"tiny-s3"}
    assert stored["sampling"][0]["max_tokens"] == 4


def test_a_corrupt_checkpoint_is_one_line(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(checkpoint, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    for argv in (
        ["model", "info", str(broken)],
        [
            "generate",
            "--model",
            str(broken),
            "--prompts",
            str(tmp_path / "p.jsonl"),
            "--output",
            str(tmp_path / "o.jsonl"),
        ],
    ):
        (tmp_path / "p.jsonl").write_text('{"prompt": "hi"}\n')
        code, _, err = run(capsys, *argv)
        assert code == 2 and "Traceback" not in err and len(err.splitlines()) == 1, err
        assert f"{broken}: not a readable checkpoint" in err
    assert not (tmp_path / "o.jsonl").exists()
    (broken / "config.json").write_text("{ broken")
    code, _, err = run(capsys, "model", "info", str(broken))
    assert code == 2 and len(err.splitlines()) == 1 and str(broken) in err
