"""What the small side-by-side benchmarks (allocator.py, folding.py, precision.py) share: the
network-size options, and timing several ways of doing one thing in turns (A, B, A, B, ...)
in one process, so that a machine whose speed drifts between runs (shared VMs do) slows all
of them alike."""
import statistics
import time

import torch

from scripts.config import ConfigError, check_image_size


def add_network_options(p):
    p.add_argument("--image-size", type=int, nargs=2, default=[592, 592], metavar=("W", "H"),
                   help="network input (default 592 592, DRIVE_AV's)")
    p.add_argument("--base-width", type=int, default=32, help="network width (default %(default)s, the paper's)")


def network_size(p, args):
    """(W, H) of --image-size, or the parser's one-line error."""
    try:
        return check_image_size(args.image_size)
    except ConfigError as exc:
        p.error(str(exc))


def timed_in_turns(runs: dict, repeats: int, device="cpu"):
    """Each of ``runs`` (name: function) once untimed (the warm-up, whose results are returned),
    then ``repeats`` timed turns of them all in turn. Returns (warm-up results, seconds of each
    turn by name, their medians)."""
    def sync():
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize(device)

    outputs = {name: fn() for name, fn in runs.items()}
    seconds = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            sync()
            start = time.perf_counter()
            fn()
            sync()
            seconds[name].append(time.perf_counter() - start)
    return outputs, seconds, {name: statistics.median(v) for name, v in seconds.items()}


def print_turns(seconds: dict, medians: dict):
    for name, values in seconds.items():
        print(f"{name:<18} median {medians[name]:8.3f} s   turns {', '.join(f'{v:.3f}' for v in values)}")
