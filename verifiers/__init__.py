"""Verifiers: math (sympy), code (sandbox), format and language consistency.

Not built yet (issue #5): this package holds no verifiers today.
"""
