"""Verifiers: the accuracy and format rewards of R1-Zero and the judges of rejection sampling.

- `verifiers.math`: answers against gold with sympy, hang-proof (worker pool, hard deadlines);
- `verifiers.code`: untrusted Python against tests in a bubblewrap sandbox;
- `verifiers.format`: the R1 template check and format reward;
- `verifiers.language`: language consistency and R1's readability rules.
"""
