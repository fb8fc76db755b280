"""Ctrl-C and SIGTERM as a request to stop at the next safe point, shared by train.py (the end
of the epoch, with last.pth saved) and predict.py (the end of the batch, with its outputs and
predictions.csv written), so that --resume loses nothing.

The first signal while the work runs (``graceful``) only records the request; the program
checks ``signum`` at its safe points. A second one, or one outside that stretch, stops at
once: KeyboardInterrupt for Ctrl-C, Terminated for SIGTERM. A SIGTERM that follows the first
within ``SAME_REQUEST_S`` is the same request, not a second one: a scheduler that signals every
process of a job (reproduce.py's phases, SLURM) reaches train.py directly and through train.sh,
which passes its own on.
"""
import signal
import sys
import time
from contextlib import contextmanager

from tqdm import tqdm

from . import distributed
from .cli import FRESH_LINE, signal_name

EXIT_STATUS = {signal.SIGINT: 130, signal.SIGTERM: 143}  # the shell's 128 + signal number
SAME_REQUEST_S = 1.0  # a SIGTERM this soon after the first is the same request, delivered twice


class Terminated(BaseException):
    """SIGTERM (kill, a batch scheduler's time limit) arrived: stop like Ctrl-C. A BaseException,
    as KeyboardInterrupt is, so that no ``except Exception`` (one image's failure) takes it."""


class StopRequest:
    """The signal handler; ``when`` says where the program stops, in the message of the first
    signal ('at the end of this epoch, with last.pth saved')."""

    def __init__(self, when="at the next safe point"):
        self.when = when
        self.signum = None      # the signal that asked for a stop
        self.graceful = False   # True while the work runs
        self.began = False      # set by the program once its work began (a stop before: nothing to resume)
        self.last_sigterm = -float("inf")  # when (time.monotonic) the last SIGTERM acted on came

    def __call__(self, signum, frame):
        if signum == signal.SIGTERM:
            now = time.monotonic()
            if now - self.last_sigterm < SAME_REQUEST_S:
                return  # the same SIGTERM, delivered twice (see the module's docstring), in any phase
            self.last_sigterm = now  # (only one acted on: the window runs from it, it does not slide)
        if self.graceful and self.signum is None:
            self.signum = signum
            if distributed.launched_as_rank_zero():  # under torchrun every rank gets the signal; one says so
                tqdm.write(f"{FRESH_LINE}{signal_name(signum)}: stopping {self.when} (again to stop at once)",
                           file=sys.stderr)
            return
        raise KeyboardInterrupt() if signum == signal.SIGINT else Terminated()


def signal_of(exc: BaseException) -> signal.Signals:
    """The signal behind a stop at once: SIGTERM for Terminated, SIGINT for KeyboardInterrupt."""
    return signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT


def said_of(exc: BaseException) -> str:
    """How a program's last line names a stop at once ('interrupted', 'terminated (SIGTERM)')."""
    return "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"


@contextmanager
def signals_handled_by(stop_request: StopRequest):
    """Ctrl-C and SIGTERM go to ``stop_request`` inside the block. SIGINT stays ignored where it
    was (a background job of a non-interactive shell)."""
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in previous:
        if previous[s] is not signal.SIG_IGN or s == signal.SIGTERM:
            signal.signal(s, stop_request)
    try:
        yield stop_request
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def run_main(main):
    """Run a script's ``main()``; once it has ended (its exit status set), a late Ctrl-C, the second
    of a quick double press, is ignored, so that it cannot break into the interpreter's clean-up
    with a traceback after the program's last line."""
    try:
        main()
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
