"""Ctrl-C or SIGTERM during training: finish the step, save, then stop; a second signal stops at once."""
import signal
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
