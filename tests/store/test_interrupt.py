"""store.interrupt: a Ctrl-C that Python swallowed (raised inside a weakref or GC callback,
where exceptions are only printed) is taken back and raised again in the main thread."""

from __future__ import annotations

import os
import signal
import sys
import time
import types

import pytest

from store.interrupt import Interrupted, watch_interrupts


def test_a_swallowed_interrupt_is_raised_again_in_the_main_thread() -> None:
    with pytest.raises(Interrupted), watch_interrupts():
        os.kill(os.getpid(), signal.SIGINT)  # the handler raises here: delivered once
        raise AssertionError("the handler did not raise")
    with pytest.raises(Interrupted), watch_interrupts():
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
        except Interrupted as err:
            # As Python does with an exception it cannot raise: hand it to the hook.
            sys.unraisablehook(
                types.SimpleNamespace(
                    exc_type=Interrupted, exc_value=err, exc_traceback=None, err_msg="", object=None
                )
            )
        deadline = time.monotonic() + 30  # a hang guard
        while time.monotonic() < deadline:
            time.sleep(0.01)
        raise AssertionError("the swallowed interrupt was never raised again")
