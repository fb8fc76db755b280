"""Print test summaries side by side, e.g. BF-Net against its ablation without branches.

    python -m scripts.compare DRIVE_AV/Final_pre_bfnet/summary.json DRIVE_AV/Final_pre_nofusion/summary.json \
        --names BF-Net "no fusion"
"""
import argparse
import json
import sys
from pathlib import Path

GROUPS = ("average", "segments")  # pixel metrics (weighted average) and segment metrics


def rows(summary):
    for group in GROUPS:
        for key, value in summary.get(group, {}).items():
            if isinstance(value, dict) and "mean" in value:
                yield f"{group}/{key}", value


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("summaries", nargs="+", help="summary.json files written by test.py")
    p.add_argument("--names", nargs="+", action="extend", default=None, help="a column title per summary")
    args = p.parse_args(argv)
    names = args.names or [Path(s).parent.name for s in args.summaries]
    if len(names) != len(args.summaries):
        sys.exit("error: give one --names entry per summary")
    tables = []
    for path in args.summaries:
        try:
            tables.append(dict(rows(json.loads(Path(path).read_text()))))
        except (OSError, ValueError) as exc:
            sys.exit(f"error: {path}: cannot read summary ({exc})")
    keys = [k for k in tables[0] if all(k in t for t in tables)]
    print(f"{'metric (percent, mean ± std over runs)':<36}" + "".join(f"{n:>22}" for n in names))
    for key in keys:
        print(f"{key:<36}" + "".join(f"{t[key]['mean']:>14.2f} ± {t[key]['std']:<5.2f}" for t in tables))


if __name__ == "__main__":
    main()
