"""The bundled trainer: DeepSeek-V3 (MLA, MoE, MTP), tokenizer, checkpoints, generation.

Built: `trainer.model` (the architecture, router balancing, losses),
`trainer.checkpoint` (Hugging Face DeepSeek-V3 layout, safetensors only),
`trainer.tokenizer` (byte-level BPE and the R1 chat template),
`trainer.generate` / `trainer.speculative` (cached batched sampling, MTP
speculative decoding), `trainer.init` (`r1f model init|info`),
`trainer.rl` (GRPO's loss, rule rewards, rollouts; docs/grpo.md) and
`trainer.parallel` (data, expert and pipeline parallelism on one device mesh;
the DualPipe schedule simulator).
Not built yet: FP8 kernels, SFT, the GRPO loop and the R1 stages.
"""
