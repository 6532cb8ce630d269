"""The deployments of `prefect.yaml`, served by `r1f serve` through `prefect.serve`.

`prefect.yaml` is the one declaration: `prefect deploy --all` registers it against a process
work pool; `deployments_from(path)` reads the same entries (entrypoint, parameters, cron
schedules, event triggers) into `RunnerDeployment`s that `prefect.serve` runs from this
process, with no work pool. `local_server` starts Prefect's server on 127.0.0.1 when no API is
configured: a real server, since the scheduler that makes cron runs does not run in the
embedded one.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import yaml

from store.config import ConfigError

DEFAULT_FILE = "prefect.yaml"
# What a prefect.yaml deployment entry may say that serving understands; the rest (work_pool,
# pull steps, build) is for `prefect deploy` and is left to it.
_SERVED_KEYS = {"name", "entrypoint", "description", "parameters", "schedules", "triggers", "tags"}
_DEPLOY_ONLY_KEYS = {"work_pool", "pull", "build", "push", "version", "concurrency_limit"}


def read_deployments(path: str | Path) -> list[dict[str, Any]]:
    """The `deployments:` entries of a prefect.yaml, checked (ConfigError naming the entry)."""
    file = Path(path)
    try:
        doc = yaml.safe_load(file.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{file}: no such file (the deployments' declaration)") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{file}: not valid YAML ({err})") from None
    entries = doc.get("deployments") if isinstance(doc, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{file}: no deployments: list")
    for i, entry in enumerate(entries):
        where = f"{file}: deployments[{i}]"
        if not isinstance(entry, dict) or not entry.get("name") or not entry.get("entrypoint"):
            raise ConfigError(f"{where}: each deployment needs a name and an entrypoint")
        unknown = set(entry) - _SERVED_KEYS - _DEPLOY_ONLY_KEYS
        if unknown:
            raise ConfigError(f"{where} ({entry['name']}): unknown key {sorted(unknown)[0]!r}")
    return entries


def deployments_from(path: str | Path, *, config: str | None = None) -> list[Any]:
    """`RunnerDeployment`s for every entry of the prefect.yaml at `path`.

    `config` replaces each deployment's `config` parameter (the run config it uses).
    Entrypoints are files of this project, relative to its root.
    """
    import importlib

    from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger
    from prefect.schedules import Cron, Interval

    out = []
    for entry in read_deployments(path):
        name = entry["name"]
        file, _, func = str(entry["entrypoint"]).partition(":")
        # `flows/factory.py:distill` is imported as the module `flows.factory`, so that its
        # tasks pickle by reference into worker processes.
        module = file.removesuffix(".py").replace("/", ".")
        try:
            flow = getattr(importlib.import_module(module), func)
        except (ImportError, AttributeError) as err:
            raise ConfigError(f"{path}: {name}: entrypoint {entry['entrypoint']}: {err}") from None
        parameters = dict(entry.get("parameters") or {})
        if config is not None and "config" in parameters:
            parameters["config"] = config
        schedules = []
        for spec in entry.get("schedules") or []:
            if "cron" in spec:
                schedules.append(Cron(spec["cron"], timezone=spec.get("timezone")))
            elif "interval" in spec:
                schedules.append(Interval(spec["interval"], timezone=spec.get("timezone")))
            else:
                raise ConfigError(f"{path}: {name}: a schedule needs cron: or interval:")
        triggers = []
        for i, spec in enumerate(entry.get("triggers") or [], 1):
            spec = dict(spec)
            if spec.pop("type", "event") != "event":
                raise ConfigError(f"{path}: {name}: only event triggers are served")
            spec.setdefault("name", f"{name}__trigger_{i}")
            triggers.append(DeploymentEventTrigger(**spec))
        out.append(
            flow.to_deployment(
                name=name,
                description=entry.get("description"),
                parameters=parameters,
                schedules=schedules or None,
                triggers=triggers or None,
                tags=entry.get("tags"),
            )
        )
    return out


def serve_deployments(deployments: list[Any], *, ready: Callable[[int], None]) -> None:
    """Serve `deployments` from this process, as `prefect.serve` does, calling `ready(n)` once
    all n are registered with the server (their schedules and triggers in place) and before the
    runner starts polling: a "serving" line then means the server knows every deployment.
    (`prefect.serve` registers them inside, with no hook in between.) Returns on Ctrl-C."""
    import asyncio

    from prefect.exceptions import TerminationSignal
    from prefect.runner import Runner

    runner = Runner(pause_on_shutdown=True)
    for deployment in deployments:
        runner.add_deployment(deployment)  # registers it with the API; returns its id
    ready(len(deployments))
    with suppress(KeyboardInterrupt, TerminationSignal):  # Ctrl-C: stop serving, return
        asyncio.run(runner.start())


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def healthy(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@contextmanager
def local_server(
    port: int | None = None,
    *,
    timeout: float = 120,
    say: Callable[[str], None] = print,
    env: dict[str, str] | None = None,
) -> Iterator[str]:
    """`prefect server start --host 127.0.0.1` on `port` (a free one by default), until the
    block ends; yields its API URL. The server's log goes to PREFECT_HOME/server.log."""
    port = port or _free_port()
    api = f"http://127.0.0.1:{port}/api"
    home = Path((env or os.environ).get("PREFECT_HOME", "work/prefect"))
    home.mkdir(parents=True, exist_ok=True)
    log_file = (home / "server.log").open("ab")
    prefect_cli = [sys.executable, "-m", "prefect"]
    process = subprocess.Popen(
        [*prefect_cli, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {}), "PREFECT_API_URL": ""},
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + timeout
        while not healthy(api):
            if process.poll() is not None:
                raise RuntimeError(
                    f"the Prefect server exited with status {process.returncode}; see {log_file.name}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Prefect server did not answer within {timeout:.0f} s")
            time.sleep(0.5)
        say(f"Prefect server on http://127.0.0.1:{port} (UI and API; log {log_file.name})")
        yield api
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log_file.close()
