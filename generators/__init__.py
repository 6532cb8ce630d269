"""Prompt sources, sampling backends and the generation stage.

- `generators.tasks`: seeded toy task sources with gold answers and worked solutions, and the
  toy corpus (`generators.tasks.corpus`) a fresh checkpoint's tokenizer is trained on;
- `generators.templates`: the prompt templates (`chat`, `r1-zero`, `no-reasoning`);
- `generators.backends`: one interface over three ways to sample a model: `local` (this
  repository's decoder), `vllm` (in-process `vllm.LLM`), `openai` (any OpenAI-compatible
  server);
- `generators.generate`: the generation stage, prompts in and samples committed to a store
  table, sharded, resumable and exactly-once, with each shard's cost in its commit.

See docs/generators.md.
"""
