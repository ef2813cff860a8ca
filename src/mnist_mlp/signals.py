"""Ctrl-C, `kill` and a closed terminal (SIGINT, SIGTERM, SIGHUP) for the command, training and the server:
every signal handler is installed here. A command stops as Ctrl-C stops it (KeyboardInterrupt: temporary files
removed, a run's checkpoint kept, the way to go on printed), then a killed process ends by its signal (exit
130, 143, 129 in a shell). A signal ignored (nohup) or handled by a caller is left alone. Stdlib only."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator

STOPS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # Ctrl-C, `kill` (a time limit), a closed terminal
received = 0  # the signal that stopped the command, once one came (kept where Python or Keras dropped it)


def interrupt(signum, frame) -> None:
    """The command's handler: KeyboardInterrupt, as Python's own for Ctrl-C, and the signal remembered, since
    one raised where it is dropped (a garbage-collector callback, Keras' pythonify_logs) would be lost."""
    global received
    received = signum
    raise KeyboardInterrupt


def for_command() -> None:
    """Make SIGINT, SIGTERM and SIGHUP stop the command as Ctrl-C does, where they have their defaults."""
    for number, default in zip(STOPS, (signal.default_int_handler, signal.SIG_DFL, signal.SIG_DFL)):
        if signal.getsignal(number) == default:
            signal.signal(number, interrupt)
    # A signal that lands where Python cannot raise it (JAX's garbage-collector callback) is remembered by
    # interrupt, so Python's "Exception ignored" traceback for it is only noise.
    hook = sys.unraisablehook
    sys.unraisablehook = lambda info: None if isinstance(info.exc_value, KeyboardInterrupt) else hook(info)


def end_command(code: int) -> None:
    """Exit with `code`; a command that was stopped exits without finalizing the interpreter (which crashed
    with JAX's threads mid-work: a segmentation fault in 2 of 8 Ctrl-Cs while serve loaded its model), and one
    stopped by `kill` or a closed terminal by that signal. Its files are safe by then."""
    if code != 130 and not received:
        sys.exit(code)
    with contextlib.suppress(OSError):  # a closed terminal takes no more output
        sys.stdout.flush()
        sys.stderr.flush()
    if received in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(received, signal.SIG_DFL)
        os.kill(os.getpid(), received)
    os._exit(code)


@contextlib.contextmanager
def training() -> Iterator[Callable[[], bool]]:
    """A block that trains: a stop signal still raises KeyboardInterrupt where it lands, and also sets a flag,
    which the block's `stopped()` reads at the end of every batch, since Keras' pythonify_logs swallows an
    exception that lands in it (`--engine fit` then trained on to the end, 8 times in 8 here). A signal that
    came before the block, or during it but after the last batch, raises at its ends. Only handlers that are
    Python's or the command's are stood in for, in the main thread."""
    pressed, previous = [], {}

    def press(signum, frame):
        pressed.append(signum)
        previous[signum](signum, frame)  # raises KeyboardInterrupt, as the handler it stands in for

    if received:
        raise KeyboardInterrupt
    if threading.current_thread() is threading.main_thread():
        for number in STOPS:
            if signal.getsignal(number) in (signal.default_int_handler, interrupt):
                previous[number] = signal.signal(number, press)
    try:
        yield lambda: bool(pressed or received)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    if pressed or received:  # swallowed after the last epoch's end
        raise KeyboardInterrupt


@contextlib.contextmanager
def serving(stop: Callable) -> Iterator[None]:
    """A block that serves: `stop(signum, frame)` (uvicorn's graceful shutdown) handles every stop signal that
    is not ignored (SIGHUP under nohup stays ignored; uvicorn alone left SIGHUP to Python, and a
    traceback)."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread has signals
        yield
        return
    kept = [number for number in STOPS if signal.getsignal(number) is not signal.SIG_IGN]
    previous = {number: signal.signal(number, stop) for number in kept}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
