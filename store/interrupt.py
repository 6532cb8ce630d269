"""Ctrl-C that also reaches work running on threads Python does not own.

Python runs a signal handler only on the main thread, between two bytecodes.
While the store writes, the main thread sits inside deltalake's native
writer, which pulls our rows on a thread of its own: a KeyboardInterrupt
would wait until the write, commit included, had finished. Inside
`watch_interrupts()` SIGINT is also noted where every thread can see it:
the C-level handler writes the signal number to a pipe the moment it
arrives, a watcher thread reads it and sets an event, and `check()` raises
`Interrupted` in whichever thread calls it. The store's writers call
`check()` between batches, so an interrupted write fails before its commit
and the table stays at its previous version.

Outside `watch_interrupts()` (library use, tests), `check()` never raises.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator

_interrupted = threading.Event()


class Interrupted(KeyboardInterrupt):
    """Raised by `check()` after SIGINT; a KeyboardInterrupt, so handlers for Ctrl-C catch it."""


def interrupted() -> bool:
    return _interrupted.is_set()


def check() -> None:
    """Raise Interrupted if SIGINT arrived while `watch_interrupts()` is active."""
    if _interrupted.is_set():
        raise Interrupted("interrupted")


@contextlib.contextmanager
def watch_interrupts() -> Iterator[None]:
    """Make SIGINT visible to `check()` on every thread (call from the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    previous = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)

    def watch() -> None:
        while data := os.read(read_end, 64):
            if signal.SIGINT in data:
                _interrupted.set()

    watcher = threading.Thread(target=watch, name="interrupt-watch", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        signal.set_wakeup_fd(previous)
        os.close(write_end)  # the watcher reads end-of-file and returns
        watcher.join(timeout=1)
        os.close(read_end)
        _interrupted.clear()
