"""Prompt sources and sample generators.

Built so far: `generators.tasks`, the seeded toy task sources.
Not built yet: generation backends (local torch, vLLM, OpenAI-compatible HTTP)
and sharded resumable generation (issues #3 and later).
"""
