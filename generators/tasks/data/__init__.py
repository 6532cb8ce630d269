"""Bundled tables for the non-reasoning task sources (read with importlib.resources)."""
