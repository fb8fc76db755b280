"""What every entry point shares: its parser, whose errors are one line, and the interval of
its progress bar.
"""
import argparse
import os
import sys

# Seconds between progress bar updates: live in a terminal; into a log file (nohup, PARALLEL=1,
# a batch scheduler) a line a minute at most, not a line per step.
BAR_INTERVAL = 0.1 if sys.stderr.isatty() else 60


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
