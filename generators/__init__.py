"""Prompt sources and sample generators.

Built: `generators.tasks` (seeded toy task sources with gold answers and worked
solutions) and `generators.backends.local` (the local torch backend over
`trainer.generate`). Not built yet: the vLLM and OpenAI-compatible HTTP
backends and sharded resumable generation into the store.
"""
