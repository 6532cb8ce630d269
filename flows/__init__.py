"""Prefect flows and the `r1f` command line: the factory's face. Nothing imports `flows`."""
