"""Ctrl-C or SIGTERM during training: finish the step, save, then stop; a second signal stops at once."""
import os
import signal
import sys
import threading
from contextlib import contextmanager

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


class StopFlag:
    def __init__(self):
        self.signal = None  # the first stop signal received

    @property
    def requested(self) -> bool:
        return self.signal is not None

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.signal, 130)


@contextmanager
def stop_requests():
    """Yield a flag set by the first SIGINT/SIGTERM; the second raises KeyboardInterrupt at once."""
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag.requested:
            raise KeyboardInterrupt
        flag.signal = signum

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
