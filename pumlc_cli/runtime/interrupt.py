"""Ctrl-C and SIGTERM as an exception, so every `finally` runs: temp folders go, worker pools are shut down."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopped(BaseException):
    """A stop signal arrived. A BaseException, so no `except Exception` on the way swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted ({signal.Signals(signum).name})")
        self.signum = signum
        self.code = 128 + signum


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within the block the first SIGINT/SIGTERM raises `Stopped`; later ones are ignored so the clean-up it
    triggers is not itself cut short. The caller's handlers come back afterwards."""

    def handler(signum: int, _frame: object) -> None:
        for sig in SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        raise Stopped(signum)

    previous = {sig: signal.signal(sig, handler) for sig in SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
