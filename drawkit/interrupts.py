"""Ctrl-C or SIGTERM during training: finish the step, save, then stop; a second signal stops at once.

So does the first one before a process's first step has finished (it may be compiling for minutes):
there is nothing new to save then.
"""
import os
import signal
import sys
import threading
from contextlib import contextmanager

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


class StopFlag:
    def __init__(self):
        self.signal = None  # the first stop signal received
        # True while there is nothing new to save (a process's first step, compiling): a signal stops at once
        self.at_once = False

    @property
    def requested(self) -> bool:
        return self.signal is not None

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.signal, 130)


@contextmanager
def stop_requests():
    """Yield a flag set by the first SIGINT/SIGTERM; the second, or the first while ``flag.at_once``, raises
    KeyboardInterrupt at once."""
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        stop_now = flag.requested or flag.at_once
        flag.signal = flag.signal or signum
        if stop_now:
            raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, handler) for sig in EXIT_CODES}
    try:
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def exit_at_once_on_another_signal() -> None:
    """After a stop was saved and reported: a further SIGINT/SIGTERM ends the process at once, quietly.

    Without it, a signal during the interpreter's shutdown prints a KeyboardInterrupt traceback.
    For the ``drawkit`` command only: it ends the interpreter, so library callers never get it.
    """
    def handler(signum, frame):
        for stream in (sys.stderr, sys.stdout):
            try:
                stream.flush()
            except Exception:  # a signal that lands mid-write must still exit
                pass
        os._exit(EXIT_CODES.get(signum, 130))

    for sig in EXIT_CODES:
        signal.signal(sig, handler)
