"""Ctrl-C during training: finish the step, save, then stop; a second Ctrl-C stops at once."""
import signal
import threading
from contextlib import contextmanager


class StopFlag:
    def __init__(self):
        self.requested = False


@contextmanager
def stop_requests():
    """Yield a flag set by the first SIGINT; the second SIGINT raises KeyboardInterrupt as usual."""
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag.requested:
            raise KeyboardInterrupt
        flag.requested = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)
