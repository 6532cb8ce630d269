"""Reinforcement learning for the bundled model: GRPO's math (`core`), rule rewards built on the
verifiers (`rewards`) and rollouts from the cached sampler (`rollout`). See docs/grpo.md."""
