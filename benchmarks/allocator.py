"""What keeping freed memory is worth (scripts/device.py, keep_freed_memory), on its own.

The same fp32 training step (section 4, random data) and the same fp32 inference, at one size
and width, each in a fresh process of its own (as train.py and test.py run them): once with the
C library's default allocation, once with freed memory kept for reuse. Everything else is the
tuned default of this device (memory layout as train.py and test.py choose it). Prints and
writes seconds, minor page faults (memory the kernel had to hand out and zero) and peak RSS.

Example:  python benchmarks/allocator.py --image-size 592 592 --base-width 32
"""
import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.common import add_network_options, network_size  # noqa: E402
from scripts.bfnet import Networks, Trainer  # noqa: E402
from scripts.cli import ArgumentParser  # noqa: E402
from scripts.config import RunConfig  # noqa: E402
from scripts.device import MEMORY_FORMAT, keep_freed_memory, training_memory_format  # noqa: E402
from scripts.provenance import commit, machine  # noqa: E402


def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def measure(fn, warmup, steps):
    """Mean seconds and minor page faults per call of ``fn``, after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    f0, t0 = faults(), time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - t0) / steps, (faults() - f0) // steps


def worker(args):
    kept = keep_freed_memory() if args.allocation == "kept" else False
    torch.manual_seed(0)
    w, h = args.image_size
    nets = Networks("sigmoid", args.base_width)
    if args.part == "train":
        layout = training_memory_format(torch.device("cpu"), None)
        nets.to(memory_format=layout)
        trainer = Trainer(nets, RunConfig(activation="sigmoid", base_width=args.base_width))
        images = torch.randn(args.batch_size, 3, h, w).contiguous(memory_format=layout)
        labels = torch.randint(0, 4, (args.batch_size, h, w))
        seconds, page_faults = measure(lambda: trainer.step(images, labels), args.warmup, args.steps)
    else:
        nets.eval().to(memory_format=MEMORY_FORMAT)
        image = torch.randn(1, 3, h, w).contiguous(memory_format=MEMORY_FORMAT)
        seconds, page_faults = measure(lambda: nets.predict(image), args.warmup, args.steps)
    return {"freed_memory_kept": kept, "seconds": seconds, "page_faults": page_faults,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main(argv=None):
    p = ArgumentParser(prog="python benchmarks/allocator.py", description=__doc__)
    add_network_options(p)
    p.add_argument("--batch-size", type=int, default=2, help="training batch (default %(default)s, the paper's)")
    p.add_argument("--steps", type=int, default=1, help="timed repetitions (default %(default)s)")
    p.add_argument("--warmup", type=int, default=1, help="untimed repetitions first (default %(default)s)")
    p.add_argument("--out", default=None, help="JSON file (default: print only)")
    p.add_argument("--allocation", choices=["default", "kept"], help=argparse.SUPPRESS)  # the children's
    p.add_argument("--part", choices=["train", "inference"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    network_size(p, args)
    if min(args.steps, args.batch_size) < 1:
        p.error("--steps and --batch-size must be at least 1")
    if args.allocation:
        print(json.dumps(worker(args)))
        return

    results = {"train": {}, "inference": {}}
    for part in results:
        for allocation in ("default", "kept"):
            cmd = [sys.executable, __file__, "--part", part, "--allocation", allocation,
                   "--image-size", *map(str, args.image_size), "--base-width", str(args.base_width),
                   "--batch-size", str(args.batch_size), "--steps", str(args.steps), "--warmup", str(args.warmup)]
            run = subprocess.run(cmd, capture_output=True, text=True)
            if run.returncode:
                sys.exit(f"error: the {part} run with the {allocation} allocation failed:\n{run.stderr[-2000:]}")
            results[part][allocation] = json.loads(run.stdout.splitlines()[-1])
    print(f"{args.image_size[0]} x {args.image_size[1]}, width {args.base_width}, batch {args.batch_size} "
          f"(inference 1), fp32, cpu")
    print(f"{'':<32}{'default':>14}{'kept':>14}{'gain':>8}")
    for part, per_allocation in results.items():
        for key in ("seconds", "page_faults", "peak_rss_mib"):
            d, k = per_allocation["default"][key], per_allocation["kept"][key]
            print(f"{part + ' ' + key:<32}{d:>14.4g}{k:>14.4g}{(d / k if k else float('inf')):>7.2f}x")
    if args.out:
        settings = {k: v for k, v in vars(args).items() if k not in ("allocation", "part", "out")}
        report = {"machine": {**machine(), "commit": commit()}, "settings": settings, "results": results}
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
