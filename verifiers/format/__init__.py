"""Format verifier: the R1 `<think>`/`<answer>` template, its reward and parser."""

from verifiers.format.r1 import (
    REASONS,
    VERSION,
    FormatResult,
    check_r1_format,
    format_reward,
    parse_r1,
)

__all__ = [
    "REASONS",
    "VERSION",
    "FormatResult",
    "check_r1_format",
    "format_reward",
    "parse_r1",
]
