"""Prefect's environment, set before Prefect is imported (standard library only).

`make` exports the same variables; a command run directly (`r1f demo`, `r1f run`, `r1f serve`)
sets whichever are unset, so Prefect keeps its state inside the project's working area, never
phones home, and gives its embedded server time to start on two busy cores (its first start
here takes 15-30 s).
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    # Nothing is ever fetched from a hub (the demo loads a release with `datasets`).
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
}


def prefect_home(workdir: str | os.PathLike[str] = "work") -> Path:
    return Path(workdir).resolve() / "prefect"


def set_prefect_environment(workdir: str | os.PathLike[str] = "work") -> None:
    """Set Prefect's variables that are unset (a value the user or make set is kept).

    Must run before `import prefect`: Prefect reads its settings when first imported.
    """
    os.environ.setdefault("PREFECT_HOME", str(prefect_home(workdir)))
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
