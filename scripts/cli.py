"""What every entry point shares: its parser, whose errors are one line, and the interval of
its progress bar.
"""
import argparse
import sys

# Seconds between progress bar updates: live in a terminal; into a log file (nohup, PARALLEL=1,
# a batch scheduler) a line a minute at most, not a line per step.
BAR_INTERVAL = 0.1 if sys.stderr.isatty() else 60


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, --help as usual, with a wrong option told in one line as the
    programs' own errors are, exit status 2:
    ``error: argument --image-size: expected 2 arguments (see python train.py --help)``.
    argparse's own way prints the whole usage first, up to 20 lines here, and a terminal
    scrolls the reason away."""

    def __init__(self, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(**kwargs)

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")
