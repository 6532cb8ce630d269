"""Code verifier: untrusted Python run against tests in a bubblewrap sandbox.

- `verify_code(completion, tests, pool, timeout=...)` judges one completion;
- `batch.verify_jsonl(...)` is `r1f verify code`;
- `SandboxPool` / `Run` run programs in pre-started sandboxed workers.

What the sandbox covers and what it does not: sandbox.py's docstring.
"""

from verifiers.code.check import BadInput, CodeVerdict, extract_code, parse_tests, verify_code
from verifiers.code.compare import first_difference, outputs_match
from verifiers.code.sandbox import (
    Run,
    RunResult,
    SandboxConfig,
    SandboxError,
    SandboxPool,
    SandboxUnavailable,
)

# Stored with every verdict in the sample record; bump it when a verdict can change.
VERSION = "code-1.1"

__all__ = [
    "VERSION",
    "BadInput",
    "CodeVerdict",
    "Run",
    "RunResult",
    "SandboxConfig",
    "SandboxError",
    "SandboxPool",
    "SandboxUnavailable",
    "extract_code",
    "first_difference",
    "outputs_match",
    "parse_tests",
    "verify_code",
]
