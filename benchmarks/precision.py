"""Is bf16 faster than fp32 on this CPU? The training step and inference, in both, side by side.

scripts/device.py gives a CPU bf16 autocast only where a small convolution measured on it runs
at least 1.2x faster in bf16 (cpu_bf16_speedup): the CPU flags alone do not tell. This script
checks that choice at the real size: the full training step of DESIGN.md section 4 (random
data, batch 2) and the inference of one image, each in fp32 and under bf16 autocast, in turns
(fp32, bf16, fp32, bf16, ...) in one process, so that a machine whose speed drifts between runs
slows both alike; channels_last, as train.py and test.py run. Prints and writes the seconds of
each turn, their medians, and what cpu_bf16_speedup measured. --fp16 adds inference under fp16
autocast (CPUs with AVX512-FP16 or AMX-FP16; not an option of test.py: a question of whether it
would pay).

Example:  python benchmarks/precision.py --image-size 592 592 --base-width 32 --repeats 2
"""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.common import add_network_options, network_size, print_turns, timed_in_turns  # noqa: E402
from scripts.bfnet import Networks, Trainer  # noqa: E402
from scripts.cli import ArgumentParser  # noqa: E402
from scripts.config import RunConfig  # noqa: E402
from scripts.device import (BF16_MIN_SPEEDUP, MEMORY_FORMAT, cpu_bf16_speedup, cpu_flags, cpu_has_native_bf16,  # noqa: E402
                            keep_freed_memory)
from scripts.evaluate import predict_probs  # noqa: E402
from scripts.provenance import commit, machine  # noqa: E402

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


def main(argv=None):
    p = ArgumentParser(prog="python benchmarks/precision.py", description=__doc__)
    add_network_options(p)
    p.add_argument("--repeats", type=int, default=2, help="timed turns of each (default %(default)s)")
    p.add_argument("--skip-train", action="store_true", help="inference only")
    p.add_argument("--fp16", action="store_true", help="also time inference under fp16 autocast")
    p.add_argument("--out", default=None, help="JSON file (default: print only)")
    args = p.parse_args(argv)
    w, h = network_size(p, args)
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    if not cpu_has_native_bf16():
        p.error("this CPU has no bf16 instructions (AVX512-BF16 or AMX): bf16 would be emulated, and "
                "scripts/device.py never chooses it here")
    if args.fp16 and not {"avx512_fp16", "amx_fp16"} & cpu_flags():
        p.error("--fp16: this CPU has no fp16 instructions (AVX512-FP16 or AMX-FP16): fp16 would be emulated")
    keep_freed_memory()  # as train.py and test.py run
    torch.manual_seed(0)

    cfg = RunConfig(activation="sigmoid", base_width=args.base_width)
    images = torch.randn(2, 3, h, w).contiguous(memory_format=MEMORY_FORMAT)
    labels = torch.randint(0, 4, (2, h, w))
    image = torch.randint(0, 256, (1, 3, h, w), dtype=torch.uint8)
    runs = {}
    for name, dtype in PRECISIONS.items():
        if not args.skip_train:
            trainer = Trainer(Networks("sigmoid", args.base_width).to(memory_format=MEMORY_FORMAT), cfg, dtype)
            runs[f"train_step_{name}"] = lambda t=trainer: t.step(images, labels)
        nets = Networks("sigmoid", args.base_width).eval().to(memory_format=MEMORY_FORMAT)
        runs[f"inference_{name}"] = lambda n=nets, d=dtype: predict_probs(n, image, 1, "cpu", d)
    if args.fp16:
        nets = Networks("sigmoid", args.base_width).eval().to(memory_format=MEMORY_FORMAT)
        runs["inference_fp16"] = lambda n=nets: predict_probs(n, image, 1, "cpu", torch.float16)
    _, seconds, medians = timed_in_turns(runs, args.repeats)
    parts = ["inference"] + ([] if args.skip_train else ["train_step"])
    gains = {part: medians[f"{part}_fp32"] / medians[f"{part}_bf16"] for part in parts}
    fp16_gain = medians["inference_fp32"] / medians["inference_fp16"] if args.fp16 else None
    probe = cpu_bf16_speedup()

    print(f"{w} x {h}, width {args.base_width}, sigmoid, cpu ({torch.get_num_threads()} threads), "
          f"{args.repeats} turn{'s' if args.repeats > 1 else ''} each")
    print_turns(seconds, medians)
    for part, gain in gains.items():
        print(f"{part}: bf16 is {gain:.2f}x as fast as fp32")
    if fp16_gain is not None:
        print(f"inference: fp16 is {fp16_gain:.2f}x as fast as fp32")
    print(f"scripts/device.py's probe (cpu_bf16_speedup): {probe:.2f}x, so train.py's default here is "
          f"{'bf16' if probe >= BF16_MIN_SPEEDUP else 'fp32'} (bf16 needs {BF16_MIN_SPEEDUP}x)")
    if args.out:
        settings = {k: v for k, v in vars(args).items() if k != "out"}
        report = {"machine": {**machine(), "commit": commit()}, "settings": settings, "seconds": seconds,
                  "median_s": medians, "bf16_gain": gains, "probe_speedup": probe}
        if fp16_gain is not None:
            report["fp16_inference_gain"] = fp16_gain
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
