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

The main thread needs help too. The kernel hands SIGINT to any thread of
the process; when it is not the main one, a main thread blocked on a lock
(waiting for a worker's result) or in a system call is not woken, and
Python runs the handler only when that wait ends, seconds later. So the
watcher also sends the main thread a wake-up signal (`WAKE_SIGNAL`) whose
handler raises the interrupt there, unless the main thread has raised it
already.

Outside `watch_interrupts()` (library use, tests), `check()` never raises.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

# Sent by the watcher to the main thread only, to break it out of a blocking wait.
WAKE_SIGNAL = signal.SIGUSR2

_interrupted = threading.Event()  # SIGINT arrived
_delivered = threading.Event()  # and has been raised somewhere as an Interrupted
_signals = [0]  # SIGINTs the main thread has seen; a second one always raises


class Interrupted(KeyboardInterrupt):
    """Raised by `check()` after SIGINT; a KeyboardInterrupt, so handlers for Ctrl-C catch it."""


def interrupted() -> bool:
    return _interrupted.is_set()


def check() -> None:
    """Raise Interrupted if SIGINT arrived while `watch_interrupts()` is active."""
    if _interrupted.is_set():
        _delivered.set()
        raise Interrupted("interrupted")


def _on_sigint(signum: int, frame: object) -> None:
    """The main thread's handler: raise once per Ctrl-C, not again for the same one.

    When a writer thread has already stopped on this Ctrl-C (`check()`), the
    main thread learns it from that writer's failure; a second
    KeyboardInterrupt arriving late, in the middle of the clean-up, would
    only cut the clean-up short. A second Ctrl-C from the user always raises.
    """
    _interrupted.set()
    _signals[0] += 1
    if _delivered.is_set() and _signals[0] < 2:
        return
    _delivered.set()
    raise Interrupted("interrupted")


def _on_wake(signum: int, frame: object) -> None:
    """The main thread, woken by the watcher: raise the interrupt unless it is raised."""
    if _interrupted.is_set() and not _delivered.is_set():
        _delivered.set()
        raise Interrupted("interrupted")


def _make_unraisable_hook(previous: Callable[[Any], object], main: int) -> Callable[[Any], object]:
    """A hook that takes back an interrupt Python swallowed.

    The handler can fire inside code whose exceptions Python only prints and ignores
    (a weakref or GC callback, a `__del__`): the Ctrl-C would then be lost, with a traceback
    on stderr. Mark it undelivered and wake the main thread to raise it again.
    """

    def hook(unraisable: Any) -> object:
        if isinstance(unraisable.exc_value, Interrupted):
            _delivered.clear()
            signal.pthread_kill(main, WAKE_SIGNAL)
            return None
        return previous(unraisable)

    return hook


@contextlib.contextmanager
def watch_interrupts() -> Iterator[None]:
    """Make SIGINT visible to `check()` on every thread (call from the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    previous_fd = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    previous_handler = signal.signal(signal.SIGINT, _on_sigint)
    previous_wake = signal.signal(WAKE_SIGNAL, _on_wake)
    main = threading.main_thread().ident
    assert main is not None
    previous_unraisable = sys.unraisablehook
    sys.unraisablehook = _make_unraisable_hook(previous_unraisable, main)

    def watch() -> None:
        while data := os.read(read_end, 64):
            if signal.SIGINT in data:
                _interrupted.set()
                if not _delivered.is_set():
                    signal.pthread_kill(main, WAKE_SIGNAL)

    watcher = threading.Thread(target=watch, name="interrupt-watch", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        sys.unraisablehook = previous_unraisable
        signal.signal(signal.SIGINT, previous_handler)
        signal.signal(WAKE_SIGNAL, previous_wake)
        signal.set_wakeup_fd(previous_fd)
        os.close(write_end)  # the watcher reads end-of-file and returns
        watcher.join(timeout=1)
        os.close(read_end)
        _interrupted.clear()
        _delivered.clear()
        _signals[0] = 0
