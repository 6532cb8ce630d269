"""Events the factory emits to Prefect: a new dataset version, a new model checkpoint.

    dataset.version.created   resource r1f.dataset.TABLE  payload {table, version, content_hash}
    model.checkpoint.created  resource r1f.model.NAME     payload {path, stage, step}

Deployment triggers (`prefect.yaml`, docs/flows.md) react to them: a new mixture version runs
the distillation deployment with that version as its parameter; a new RL checkpoint runs
rejection sampling.

What emission promises:

- **Only when a Prefect API is configured**: `PREFECT_API_URL` in the environment or in the
  active Prefect profile, or Prefect's own settings when the process already imported Prefect
  (a flow run, the test harness). Otherwise nothing happens: a plain `r1f` commit never starts
  a server, and never imports Prefect (2-3 s) to find out.
- **Best-effort and bounded**: one HTTP POST to the API's `/events` route, standard library
  only, with a short timeout; a refused, slow or failing server costs at most that timeout and
  a warning on the `r1f.events` logger. The commit it announces has already landed.
- **Deterministic ids**: an event's id is a UUID derived from what it announces (table,
  version and content hash; model name, path, stage and step), so announcing the same thing
  twice sends the same id. Prefect's server drops an id it has just seen; the flows a trigger
  starts are idempotent per version all the same (a re-sent event after a restart is new to
  the server).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import sys
import tomllib
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

DATASET_VERSION_CREATED = "dataset.version.created"
MODEL_CHECKPOINT_CREATED = "model.checkpoint.created"
# Seconds one POST may take. A local server answers in milliseconds; the bound is for one that
# is down or stuck, so that a commit is never held up for long.
TIMEOUT_S = 2.0
# The namespace of the events' deterministic ids.
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://r1-factory/events")

log = logging.getLogger("r1f.events")


def dataset_resource(table: str) -> str:
    return f"r1f.dataset.{table}"


def model_resource(name: str) -> str:
    return f"r1f.model.{name}"


def event_id(event: str, *parts: object) -> uuid.UUID:
    """The id of an event announcing `parts`: the same parts always give the same id."""
    return uuid.uuid5(_NAMESPACE, "|".join([event, *(str(p) for p in parts)]))


def _profile_api_url() -> str | None:
    """PREFECT_API_URL of the active profile in Prefect's profiles file, read without Prefect."""
    home = Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect").expanduser()
    path = Path(os.environ.get("PREFECT_PROFILES_PATH") or home / "profiles.toml").expanduser()
    try:
        profiles = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return None
    active = os.environ.get("PREFECT_PROFILE") or profiles.get("active")
    section = profiles.get("profiles", {}).get(active or "", {})
    value = section.get("PREFECT_API_URL") if isinstance(section, dict) else None
    return value if isinstance(value, str) and value else None


def api_url() -> str | None:
    """The Prefect API events go to, or None when none is configured (then nothing is sent)."""
    if "prefect.settings" in sys.modules:
        # Prefect is loaded already (a flow run, the test harness): its settings are the truth,
        # temporary settings and profiles included. Asking costs nothing more.
        from prefect.settings import get_current_settings

        url = get_current_settings().api.url
        return str(url) if url else None
    return os.environ.get("PREFECT_API_URL") or _profile_api_url()


def _auth_header() -> str | None:
    key = os.environ.get("PREFECT_API_KEY")
    if key:
        return f"Bearer {key}"
    basic = os.environ.get("PREFECT_API_AUTH_STRING")
    if basic:
        return "Basic " + base64.b64encode(basic.encode()).decode()
    return None


def emit(
    event: str,
    resource: dict[str, str],
    payload: dict[str, Any],
    id: uuid.UUID,
    *,
    url: str | None = None,
) -> bool:
    """POST one event to the configured Prefect API; True when the server took it.

    `resource` holds `prefect.resource.id` and any labels a trigger may match on. Never
    raises: a failure is logged and reported as False.
    """
    url = url or api_url()
    if url is None:
        return False
    body = [
        {
            "id": str(id),
            "occurred": datetime.now(UTC).isoformat(),
            "event": event,
            "resource": resource,
            "related": [],
            "payload": payload,
        }
    ]
    request = urllib.request.Request(
        f"{url.rstrip('/')}/events",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    auth = _auth_header()
    if auth:
        request.add_header("Authorization", auth)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            ok = 200 <= response.status < 300
    except (urllib.error.URLError, OSError, ValueError) as err:
        log.warning("event %s for %s not sent to %s: %s", event, resource, url, err)
        return False
    if not ok:
        log.warning("event %s for %s refused by %s", event, resource, url)
    return ok


def dataset_version_created(
    table: str, version: int, content_hash: str, *, store_root: str | None = None
) -> bool:
    """Announce a committed table version (the store calls this after each commit)."""
    resource = {"prefect.resource.id": dataset_resource(table), "prefect.resource.name": table}
    if store_root is not None:
        resource["r1f.store"] = store_root
    payload = {"table": table, "version": version, "content_hash": content_hash}
    return emit(
        DATASET_VERSION_CREATED,
        resource,
        payload,
        event_id(DATASET_VERSION_CREATED, table, version, content_hash),
    )


def checkpoint_created(name: str, path: str, stage: str, step: int) -> bool:
    """Announce a finished model checkpoint (the trainer calls this when a run has published
    its model). `stage` is also a resource label (`r1f.stage`), so that a trigger can react to
    one stage's checkpoints only (e.g. reasoning RL -> rejection sampling)."""
    resource = {
        "prefect.resource.id": model_resource(name),
        "prefect.resource.name": name,
        "r1f.stage": stage,
    }
    payload = {"path": path, "stage": stage, "step": step}
    return emit(
        MODEL_CHECKPOINT_CREATED,
        resource,
        payload,
        event_id(MODEL_CHECKPOINT_CREATED, name, path, stage, step),
    )
