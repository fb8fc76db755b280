"""What every entry point shares: its parser, whose errors are one line, its progress bar,
live in a terminal and a line a minute in a log file, and the names of its stops.
"""
import argparse
import io
import os
import signal
import sys

from tqdm import tqdm

# Seconds between progress bar updates: live in a terminal; into a log file (nohup, PARALLEL=1,
# a batch scheduler) a line a minute at most, not a line per step.
BAR_INTERVAL = 0.1 if sys.stderr.isatty() else 60
# What a stop message starts with: in a terminal a line break, so that it does not follow the
# "^C" the terminal echoed; in a log file nothing (no echo there, and no blank line).
FRESH_LINE = "\n" if sys.stderr.isatty() else ""
TIME_LIMIT_EXIT = 3  # train.py's exit status when --time-limit stopped it, last.pth saved

# A file name that is not valid UTF-8 (Latin-1 from a Windows zip, say) is printed with escapes
# (\udce9), not a traceback, whatever the locale (stderr does so already).
if isinstance(sys.stdout, io.TextIOWrapper):
    sys.stdout.reconfigure(errors="backslashreplace")


def signal_name(signum) -> str:
    """'SIGINT', 'SIGTERM', ... of a signal number."""
    return signal.Signals(signum).name


class LogLines(tqdm):
    """tqdm for a log file: the bar as a line of its own each time it shows (at the start, at
    most every BAR_INTERVAL, and its final count at the end, also for a bar not kept, so that a
    log never ends on a cache's "0%"), never a carriage return;
    the lines written through tqdm.write (notes, failures) are not framed by redraws of the bar,
    and under torchrun one process's lines are never glued onto another's bar.

    tqdm.write (tqdm.external_write_mode) calls clear() on every bar, writes its line, then
    refresh(nolock=True): that pair is what is skipped here; the bar's own updates refresh with
    the lock taken (nolock False) and are shown."""

    def clear(self, nolock=False):
        self._written_over = True  # tqdm.write is about to write a line: nothing to clear

    def refresh(self, nolock=False, lock_args=None):
        if nolock and getattr(self, "_written_over", False):  # tqdm.write's redraw after its line
            self._written_over = False
            return True
        return super().refresh(nolock, lock_args)

    def display(self, msg=None, pos=None):
        self.fp.write((self.__str__() if msg is None else msg) + "\n")
        self.fp.flush()
        self._shown_n = self.n
        return True

    def close(self):
        if getattr(self, "disable", True):
            return
        with self._lock:
            if self.n != getattr(self, "_shown_n", None):
                self._ema_dt = lambda: None  # the overall rate, as tqdm's own close shows it
                self.display()
            self.disable = True
        self._decr_instances(self)


def progress_bar(*args, **kwargs):
    """tqdm in a terminal; LogLines when stderr is a file or a pipe (without tqdm's monitor
    thread's extra refresh every 10 s: one line per BAR_INTERVAL at most)."""
    if sys.stderr.isatty():
        return tqdm(*args, mininterval=BAR_INTERVAL, **kwargs)
    return LogLines(*args, mininterval=BAR_INTERVAL, maxinterval=float("inf"), **kwargs)


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, --help as usual, with a wrong option told in one line as the
    programs' own errors are, exit status 2:
    ``error: argument --image-size: expected 2 arguments (see python train.py --help)``.
    argparse's own way prints the whole usage first, up to 20 lines here, and a terminal
    scrolls the reason away. Under torchrun every process parses the same command line: the
    process of rank 0 alone says it (the others exit 2 silently), so the line is not repeated
    once per process."""

    def __init__(self, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(**kwargs)

    def error(self, message):
        # The rule of scripts.distributed.launched_as_rank_zero (not imported here: it loads torch).
        said_by_another_rank = os.environ.get("RANK", "0") != "0"
        self.exit(2, None if said_by_another_rank else f"error: {message} (see {self.prog} --help)\n")
