"""`python -m trainer.parallel.agent NPROC MODULE [ARGS...]`: the elastic agent process that
`trainer.parallel.launch.torchrun` starts (a module of its own: the package imports `launch`,
which `python -m` must not find imported already)."""

from __future__ import annotations

import sys

from trainer.parallel.launch import run_agent

if __name__ == "__main__":
    sys.exit(run_agent(int(sys.argv[1]), sys.argv[2], sys.argv[3:]))
