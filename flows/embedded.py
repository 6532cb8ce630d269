"""One Prefect API for a one-shot run: the configured server, or an embedded one.

`r1f run` and `r1f demo` need nothing started by hand. With no `PREFECT_API_URL` configured,
Prefect would start a temporary server in every process that talks to it: the flow's, and
each process-pool worker's (measured here: about 40 s each on two busy cores). So the command
starts Prefect's temporary server once (`SubprocessASGIServer`, on 127.0.0.1 at a free port,
its database in PREFECT_HOME), points this process and every child at it through
`PREFECT_API_URL`, and stops it at the end. The store's events then have an API to go to as
well (store.events).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from flows.environment import set_prefect_environment


@contextmanager
def prefect_api(say: Callable[[str], None] = print) -> Iterator[str]:
    """The API URL for the run: the configured one, else an embedded server's (stopped at
    the end of the block)."""
    set_prefect_environment()
    from store.events import api_url

    configured = api_url()
    if configured is not None:
        yield configured
        return
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL, temporary_settings

    timeout = int(os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"])
    say(f"starting Prefect's embedded server (database in {os.environ['PREFECT_HOME']})")
    server = SubprocessASGIServer()
    server.start(timeout=timeout)
    os.environ["PREFECT_API_URL"] = server.api_url
    try:
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            yield server.api_url
    finally:
        # Logs and events still queued go out before their server goes away.
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=10)
        EventsWorker.drain_all(timeout=10)
        os.environ.pop("PREFECT_API_URL", None)
        server.stop()
