"""Training stages wired to the factory: the toy corpus and tokenizer for pretraining, held-out
toy problems for evaluation. The trainer never imports generators; this module does it for it.

    cfg = load_stage_config("configs/pretrain-toy.yaml")
    summary = train_stage(cfg, out_dir=None, resume=False)

`StageConfig` is the trainer's `TrainConfig` plus a `corpus` section (pretraining only): when
present, the corpus is built into the store (or the existing version reused, matched by its
config hash) and the run trains on that version. Without it, `data.source` names the table
version or release directory.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from generators.tasks.corpus import CorpusConfig, PromptSetConfig
from store.config import load_config
from trainer.config import TrainConfig
from trainer.evaluate import EvalProblem
from trainer.rl.config import GRPOConfig
from trainer.train import TrainSummary

if TYPE_CHECKING:
    from trainer.rl.grpo import GRPOSummary

TOKENIZER_DIR = "tokenizer"


@dataclass(frozen=True)
class StageConfig(TrainConfig):
    corpus: CorpusConfig | None = None


def load_stage_config(path: str | os.PathLike[str]) -> StageConfig:
    return load_config(Path(path), StageConfig)


@dataclass(frozen=True)
class GRPOStageConfig(GRPOConfig):
    """The trainer's `GRPOConfig` plus `prompt_set`: when present, the toy RL prompts are
    built into the store (or the existing version reused) and the run samples from that
    version; without it, `prompts.source` names the table version or release."""

    prompt_set: PromptSetConfig | None = None


def load_grpo_stage_config(path: str | os.PathLike[str]) -> GRPOStageConfig:
    return load_config(Path(path), GRPOStageConfig)


def toy_problems(
    families: Sequence[str], per_family: int, seed: int, difficulty: int
) -> list[EvalProblem]:
    """`per_family` problems of each toy family, drawn with task seed `seed` (held out when no
    training data used that seed)."""
    from generators.tasks import SOURCES

    unknown = sorted(set(families) - set(SOURCES))
    if unknown:
        raise ValueError(f"unknown task family {unknown[0]!r}; known: {', '.join(SOURCES)}")
    return [
        EvalProblem(task.prompt, task.gold, task.source, task.track)
        for family in families
        for task in SOURCES[family].generate(per_family, seed=seed, difficulty=difficulty)
    ]


def corpus_tokenizer(
    prompts: Sequence[str], completions: Sequence[str], vocab_size: int, out_dir: Path
) -> Path:
    """Train the toy tokenizer on a corpus: its prompts as the chat template renders them (so
    the system text and role markers compress well), and its completions. Deterministic: a
    rerun writes the same files."""
    from trainer.tokenizer import MIN_VOCAB_SIZE, render_prompt, save_tokenizer, train_tokenizer

    texts = [*(render_prompt(p) for p in prompts), *completions]
    tokenizer = train_tokenizer(texts, vocab_size=max(vocab_size, MIN_VOCAB_SIZE))
    save_tokenizer(tokenizer, out_dir, model_max_length=4096)
    return out_dir


def _rank() -> tuple[int, int]:
    """(rank, world size) of this process in a distributed run; (0, 1) alone."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def train_stage(
    cfg: StageConfig,
    *,
    out_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    say: Callable[[str], None] = print,
) -> TrainSummary:
    """Run one training stage: corpus and tokenizer first when the config has a corpus.
    Under torchrun (`r1f train --nproc N`) every rank calls this inside the process group."""
    from store.lineage import Lineage
    from store.store import Store
    from trainer.recipe import SFT_STAGES
    from trainer.train import run_training

    out = Path(out_dir or cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer_dir: Path | None = None
    if cfg.corpus is not None:
        # Distributed, rank 0 alone writes the corpus version and the tokenizer; the other
        # ranks learn the version from it and read the same files.
        rank, world = _rank()
        source = ""
        if rank == 0:
            from generators.tasks.corpus import corpus_table
            from trainer.init import model_args

            store = Store.from_config(cfg.store)
            ref = corpus_table(store, cfg.corpus, Lineage(writer=f"r1f train {cfg.stage}"))
            say(f"corpus {ref} in {store.root}")
            # Continued pretraining (a checkpoint to start from) keeps the checkpoint's
            # tokenizer; a model from scratch gets one trained on its corpus.
            if cfg.model.checkpoint is None:
                rows = store.read(ref.table, ref.version, ["prompt", "completion"])
                vocab = model_args(cfg.model.preset, cfg.model.args_file).vocab_size
                corpus_tokenizer(
                    rows.get_column("prompt").to_list(),
                    rows.get_column("completion").to_list(),
                    vocab,
                    out / TOKENIZER_DIR,
                )
            source = str(ref)
        if world > 1:
            import torch.distributed as dist

            shared = [source]
            dist.broadcast_object_list(shared, src=0)
            source = shared[0]
        cfg = replace(cfg, data=replace(cfg.data, source=source))
        if cfg.model.checkpoint is None:
            tokenizer_dir = out / TOKENIZER_DIR
    problems = toy_problems(
        cfg.eval.families, cfg.eval.problems, cfg.eval.seed, cfg.eval.difficulty
    )
    if cfg.stage in SFT_STAGES and tokenizer_dir is None:
        # The recipe's SFT stages (cold_start, rejection_sft) check their config first.
        return SFT_STAGES[cfg.stage](
            cfg, eval_problems=problems, out_dir=out, resume=resume, say=say
        )
    return run_training(
        cfg,
        tokenizer_dir=tokenizer_dir,
        out_dir=out,
        resume=resume,
        eval_problems=problems,
        say=say,
    )


def grpo_stage(
    cfg: GRPOStageConfig,
    *,
    out_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    say: Callable[[str], None] = print,
    evaluate: bool = True,
    cpu_budget: float | None = None,
) -> GRPOSummary:
    """Run one GRPO stage (plain GRPO or R1-Zero): the toy prompt table first when the config
    has a `prompt_set`, held-out problems from `eval`, then the trainer's stage function.

    evaluate: score the held-out problems before and after (False: the caller scores the
    model itself; the held-out prompts are still kept out of the RL prompts). cpu_budget:
    `run_grpo`'s, stop once the steps have used this many CPU-seconds."""
    from store.lineage import Lineage
    from store.store import Store
    from trainer.recipe import RL_STAGES, check_rl_stage
    from trainer.rl.grpo import run_grpo

    check_rl_stage(cfg)
    problems = toy_problems(
        cfg.eval.families, cfg.eval.problems, cfg.eval.seed, cfg.eval.difficulty
    )
    if cfg.prompt_set is not None:
        from generators.tasks.corpus import prompt_table

        if cfg.prompt_set.seed == cfg.eval.seed:
            raise ValueError(
                f"prompt_set.seed and eval.seed are both {cfg.eval.seed}: RL would train on the "
                "held-out problems; give them different seeds"
            )
        # A toy family can draw the same small problem under two seeds: keep every held-out
        # prompt out of the RL prompts.
        held_out = sorted({p.prompt for p in problems})
        prompt_set = replace(cfg.prompt_set, exclude_prompts=held_out)
        store = Store.from_config(cfg.store)
        ref = prompt_table(store, prompt_set, Lineage(writer=f"r1f train grpo ({cfg.stage})"))
        say(f"RL prompts {ref} in {store.root}")
        cfg = replace(cfg, prompts=replace(cfg.prompts, source=str(ref)))
    out = Path(out_dir or cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    scored = problems if evaluate else []
    if cfg.stage in RL_STAGES:
        return RL_STAGES[cfg.stage](
            cfg, eval_problems=scored, out_dir=out, resume=resume, say=say, cpu_budget=cpu_budget
        )
    return run_grpo(
        cfg, out_dir=out, resume=resume, eval_problems=scored, say=say, cpu_budget=cpu_budget
    )
