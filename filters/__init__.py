"""Rejection filters, dedup, decontamination, CoT routing and mixture assembly.

Not built yet (issue #4): this package holds no steps today.
"""
