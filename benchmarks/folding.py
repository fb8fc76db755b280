"""What folding BatchNorm into the convolutions is worth (Networks.fold_for_inference), on its own.

The same networks (random weights, running statistics away from 0 and 1), once as trained and
once folded as test.py and predict.py use them, predict the same input in fp32 at one size
and width, in turns (A, B, A, B, ...) in one process, so that a machine whose speed drifts
between runs (shared VMs do) slows both alike. Prints and writes the seconds of each turn,
their medians and the largest difference between the two predictions.

Example:  python benchmarks/folding.py --image-size 592 592 --base-width 32 --repeats 7
"""
import copy
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.common import add_network_options, network_size, print_turns, timed_in_turns  # noqa: E402
from scripts.bfnet import Networks  # noqa: E402
from scripts.cli import ArgumentParser  # noqa: E402
from scripts.config import ConfigError  # noqa: E402
from scripts.device import MEMORY_FORMAT, keep_freed_memory, pick_device  # noqa: E402
from scripts.evaluate import predict_probs  # noqa: E402
from scripts.provenance import commit, machine  # noqa: E402


def main(argv=None):
    p = ArgumentParser(prog="python benchmarks/folding.py", description=__doc__)
    add_network_options(p)
    p.add_argument("--activation", choices=["sigmoid", "softmax"], default="sigmoid",
                   help="the variant (default %(default)s)")
    p.add_argument("--device", default="", help="cpu, cuda, cuda:N (default: cuda if available)")
    p.add_argument("--repeats", type=int, default=7, help="timed turns of each (default %(default)s)")
    p.add_argument("--out", default=None, help="JSON file (default: print only)")
    args = p.parse_args(argv)
    w, h = network_size(p, args)
    try:
        device = pick_device(args.device)
    except ConfigError as exc:
        p.error(str(exc))
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    keep_freed_memory()  # as test.py and predict.py run

    torch.manual_seed(0)
    trained = Networks(args.activation, args.base_width).eval()
    for m in trained.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    folded = copy.deepcopy(trained).fold_for_inference().to(device, memory_format=MEMORY_FORMAT)
    trained = trained.to(device, memory_format=MEMORY_FORMAT)
    image = torch.randint(0, 256, (1, 3, h, w), dtype=torch.uint8)
    runs = {"not_folded": lambda: predict_probs(trained, image, 1, device),
            "folded": lambda: predict_probs(folded, image, 1, device)}
    outputs, seconds, medians = timed_in_turns(runs, args.repeats, device)
    difference = (outputs["folded"] - outputs["not_folded"]).abs().max().item()

    print(f"{w} x {h}, width {args.base_width}, {args.activation}, fp32 inference of one image on {device}, "
          f"{args.repeats} turn{'s' if args.repeats > 1 else ''} each")
    print_turns(seconds, medians)
    gain = medians["not_folded"] / medians["folded"]
    print(f"folding: {gain:.2f}x; largest difference between the two predictions {difference:.2e}")
    if args.out:
        settings = {k: v for k, v in vars(args).items() if k != "out"}
        report = {"machine": {**machine(str(device)), "commit": commit()}, "settings": settings,
                  "seconds": seconds, "median_s": medians, "gain": gain, "max_abs_difference": difference}
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
