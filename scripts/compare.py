"""Print test summaries side by side, e.g. BF-Net against its ablation without branches.

    python -m scripts.compare DRIVE_AV/Final_pre_sigmoid_bfnet/summary.json \\
        DRIVE_AV/Final_pre_sigmoid_nofusion/summary.json --names BF-Net "no fusion"

A summary.json or the folder that holds it. Values are percent (segments/count: segments per
image), mean ± std over the runs of each summary; a summary of one run shows its plain values.
A note on stderr says where the columns are not like for like: other data sets or input sizes,
another number of runs or other seeds, base width, training data set, number of test images or
test precision (the variant and the fusion are what one compares, so they are not noted), runs
stopped before their planned epochs, columns scored from pictures (python -m scripts.score), the
segment metric's settings where not the defaults, or where a summary does not record these; and of one column, networks trained on another data set
and the weights' own --about text. --markdown prints the table in Markdown; --paired tests two
summaries image by image (their metrics.csv). --all adds the per-class rows and the extras.
"""
import csv
import json
import os
import sys
from pathlib import Path

import numpy as np
from scipy import stats

from .cli import ArgumentParser
from .config import split_seed_run_name
from .metrics import BINARY_AUC_NOTE, SUMMARY_GROUPS, segment_rule_text
from .segments import DEFAULT_SETTINGS

GROUPS = ("average", "segments")  # pixel metrics (weighted average) and segment metrics; --all: SUMMARY_GROUPS


def rows(summary, groups=GROUPS):
    for group in groups:
        values = summary.get(group)
        for key, value in (values.items() if isinstance(values, dict) else ()):
            if isinstance(value, dict) and isinstance(value.get("mean"), (int, float)):
                yield f"{group}/{key}", value


def cell(value, one_run, width=22):
    if one_run or not isinstance(value.get("std"), (int, float)):
        return f"{value['mean']:>{width}.2f}"
    return f"{value['mean']:>{width - 8}.2f} ± {value['std']:<5.2f}"


def _columns(summaries, groups):
    """Each summary's {metric: value}, whether it is of one run, and the metrics all of them have."""
    tables = [dict(rows(s, groups)) for s in summaries]
    one_run = [len(s.get("runs", [])) == 1 for s in summaries]
    return tables, one_run, [k for k in tables[0] if all(k in t for t in tables)]


def table(summaries, names, groups=GROUPS):
    """The side-by-side table as text, for the metrics every summary has; a column is as wide as
    its name needs (at least 22 characters), with a space before it."""
    tables, one_run, keys = _columns(summaries, groups)
    widths = [max(22, len(n) + 1) for n in names]
    lines = [f"{'metric':<36}" + "".join(f"{n:>{w}}" for n, w in zip(names, widths, strict=True))]
    for key in keys:
        lines.append(f"{key:<36}" + "".join(cell(t[key], one, w) for t, one, w in zip(tables, one_run, widths, strict=True)))
    return "\n".join(line.rstrip() for line in lines)


def markdown_table(summaries, names, groups=GROUPS):
    """The same table in Markdown (for a paper's draft or an issue): "mean ± std", or the plain
    value for a summary of one run, two decimals."""
    tables, one_run, keys = _columns(summaries, groups)
    lines = ["| metric | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for key in keys:
        lines.append(f"| {key} | " + " | ".join(cell(t[key], one, 0).strip()
                                               for t, one in zip(tables, one_run, strict=True)) + " |")
    return "\n".join(lines)


MIN_DIFFERING = 6  # fewer differing images and no two-sided signed-rank test can reach p < 0.05


def per_image(summary_path: Path, summary: dict, column: str) -> dict:
    """{image: its value of ``column`` in the CSV written with the summary (``metrics_csv``),
    the mean over the runs when several}; checked to be that summary's: as many runs and
    images, and the column's mean the summary's where it records it."""
    csv_path = metrics_csv(summary_path)
    if not csv_path.is_file():
        raise ValueError(f"{summary_path}: no {csv_path.name} beside it, the per-image CSV written with it")
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "image" not in rows[0] or column not in rows[0]:
        raise ValueError(f"{csv_path}: no column {'image' if rows and 'image' not in rows[0] else repr(column)} "
                         f"(columns as average/f1, segments/mixed_any)")
    values = {}
    for row in rows:
        try:
            value = float(row[column])
        except (TypeError, ValueError):
            value = float("nan")
        if not np.isfinite(value):
            raise ValueError(f"{csv_path}: {column} of {row['image']} is {row[column]!r}, not a number")
        values.setdefault(row["image"], []).append(value)
    means = {image: float(np.mean(v)) for image, v in values.items()}
    runs = len({row.get("run") for row in rows})
    group, _, key = column.partition("/")
    recorded = (summary.get(group) or {}).get(key)
    if (runs != len(summary["runs"]) or len(means) != summary.get("images", len(means))
            or (isinstance(recorded, dict) and isinstance(recorded.get("mean"), (int, float))
                and abs(np.mean(list(means.values())) - recorded["mean"]) > 1e-3)):
        raise ValueError(f"{csv_path} does not hold the test of {summary_path.name} beside it ({runs} run(s), "
                         f"{len(means)} images; the summary: {len(summary['runs'])}, {summary.get('images')})")
    return means


def metrics_csv(summary_path: Path) -> Path:
    """The per-image CSV written with a summary: metrics.csv beside summary.json (test.py,
    scripts.score); for other names the same change (results/'s bundle_summary_cpu.json:
    bundle_metrics_cpu.csv)."""
    name = Path(summary_path).name
    if "summary" not in name:
        raise ValueError(f"{summary_path}: which metrics.csv belongs to it? (name a summary.json)")
    return Path(summary_path).with_name(name.replace("summary", "metrics").removesuffix(".json") + ".csv")


def paired_test(a: dict, b: dict) -> dict:
    """Per-image differences b - a over the images both hold (the same set is required),
    rounded to the CSVs' 6 decimals, and a two-sided Wilcoxon signed-rank test of them (images
    with no difference left out, as scipy does): {images, differing, mean, median, p}; p is
    None with fewer than MIN_DIFFERING differing images."""
    if set(a) != set(b):
        raise ValueError(f"the two tests scored different images ({len(a)} and {len(b)}; "
                         f"e.g. {sorted(set(a) ^ set(b))[0]} in one only): a paired test needs the same ones")
    diffs = np.round(np.array([b[k] - a[k] for k in sorted(a)]), 6)
    differing = int(np.count_nonzero(diffs))
    p = float(stats.wilcoxon(diffs).pvalue) if differing >= MIN_DIFFERING else None
    return {"images": len(diffs), "differing": differing, "mean": float(diffs.mean()),
            "median": float(np.median(diffs)), "p": p}


def tested_sizes(summary):
    """The network input sizes a summary's runs were tested at, as text ('592 x 592'); none for a
    summary of an older test.py, which did not record them."""
    sizes = {tuple(d["input_size"]) for d in summary.get("run_details") or ()
             if isinstance(d, dict) and isinstance(d.get("input_size"), list) and len(d["input_size"]) == 2}
    return [f"{w} x {h}" for w, h in sorted(sizes)]


def alike_or_not(summary):
    """{what: text} of what else than the networks compared makes a summary's numbers; a value
    not recorded (a summary of an older test.py) is left out, so taken as alike."""
    details = [d for d in summary.get("run_details") or () if isinstance(d, dict)]

    def of_runs(key):
        return " and ".join(sorted({str(d[key]) for d in details if d.get(key) is not None}))

    seeds = [split_seed_run_name(Path(str(run)).name) for run in summary["runs"]]
    facts = {"numbers of runs (seeds)": str(len(summary["runs"])),
             "seeds": " ".join(str(seed) for seed in sorted(s[1] for s in seeds)) if all(seeds) else "",
             "base widths": of_runs("base_width"), "training data sets": of_runs("trained_on"),
             "numbers of test images": str(summary.get("images", "")),
             "test precisions": str(summary.get("precision") or ""),
             "segment metric settings": segment_settings(summary),
             "test labels and masks (SHA-256)": str(summary.get("test_truth_sha256") or "")[:12]}
    return {k: v for k, v in facts.items() if v}


def segment_settings(summary) -> str:
    """The segment metric's settings a summary was scored with, as text; a summary older than
    their options (test.py, scripts.score: --segment-*) had the defaults."""
    return segment_rule_text(summary.get("segment_settings") or DEFAULT_SETTINGS.as_dict())


def unfinished_runs(summary) -> list:
    """'<run> <done> of <planned> epochs' for each run of a summary stopped before its planned
    epochs (--time-limit, a stop, or a test while it trains)."""
    return [f"{Path(str(d.get('run'))).name} {d['epochs_done']} of {d['epochs_planned']} epochs"
            for d in summary.get("run_details") or () if isinstance(d, dict)
            and isinstance(d.get("epochs_done"), int) and isinstance(d.get("epochs_planned"), int)
            and d["epochs_done"] < d["epochs_planned"]]


def notes(summaries, names):
    """Lines for stderr where the columns are not like for like: other data sets, input sizes,
    numbers of runs or seeds, widths, training data sets, numbers of test images, test
    precisions (allowed, e.g. one model on two data sets, but rarely what was meant), and runs
    stopped before their planned epochs."""
    said = []
    scored = [n for n, s in zip(names, summaries, strict=True) if s.get("scored")]
    if scored and len(scored) < len(summaries):
        said.append(f"note: {', '.join(scored)} scored pictures (python -m scripts.score): the probability extras "
                    f"come from their 8-bit values, not a network's probabilities")
    one_class = [n for n, s in zip(names, summaries, strict=True) if "one class per pixel" in (s.get("prediction_kinds") or {})]
    if one_class and len(one_class) < len(summaries):
        said.append(f"note: {', '.join(one_class)} scored pictures of one class per pixel: where a probability "
                    f"picture has R and B on, the protocol counts artery and vein both, so the same predictions "
                    f"score a higher sensitivity as probability colours")
    for n, s in zip(names, summaries, strict=True):
        details = [d for d in s.get("run_details") or () if isinstance(d, dict)]
        elsewhere = sorted({str(d["trained_on"]) for d in details if d.get("trained_on") not in (None, s.get("dataset"))})
        if elsewhere and s.get("dataset"):
            said.append(f"note: {n}: networks trained on {' and '.join(elsewhere)}, tested on {s['dataset']}")
        for about in dict.fromkeys(str(d["about"]) for d in details if d.get("about")):
            said.append(f"note: {n}: about its weights: {about if len(about) <= 160 else about[:157] + '...'}")
        for note in s.get("segment_notes") or ():  # what test.py said of its segment shares
            said.append(f"note: {n}: segment metric: {note}")
        for note in s.get("picture_notes") or ():  # what scripts.score said of the pictures (a light background)
            said.append(f"note: {n}: {note}")
    # Notes on one side alone read as that side's problem alone: say which summaries could not have any.
    for kind, key in (("segment metric", "segment_notes"), ("picture", "picture_notes")):
        noted = [n for n, s in zip(names, summaries, strict=True) if s.get(key)]
        silent = [n for n, s in zip(names, summaries, strict=True)
                  if key not in s and (key == "segment_notes" or s.get("scored"))]
        if noted and silent:
            one = len(silent) == 1
            said.append(f"note: {', '.join(silent)} {'was' if one else 'were'} written by an older version, which "
                        f"recorded no {kind} notes: where {', '.join(noted)} {'has' if len(noted) == 1 else 'have'} "
                        f"them, {'it' if one else 'they'} may have had the same")
    unknown = [n for n, s in zip(names, summaries, strict=True) if not s.get("run_details") and not s.get("scored")]
    if unknown and len(summaries) > 1:
        one = len(unknown) == 1
        said.append(f"note: {', '.join(unknown)} record{'s' if one else ''} no run details (a test.py before they "
                    f"were recorded): {'its' if one else 'their'} input size, width and training data set cannot "
                    f"be compared")
    if len({s.get("dataset") for s in summaries}) > 1:
        said.append("note: these summaries are of different data sets: " + ", ".join(
            f"{n} {s.get('dataset', 'unknown')}" for n, s in zip(names, summaries, strict=True)))
    sizes = [tested_sizes(s) for s in summaries]
    if len({tuple(z) for z in sizes if z}) > 1:  # a summary of unknown sizes is taken as alike
        said.append("note: these summaries were tested at different input sizes: " + ", ".join(
            f"{n} {' and '.join(z) or 'unknown'}" for n, z in zip(names, sizes, strict=True)))
    facts = [alike_or_not(s) for s in summaries]
    for what in dict.fromkeys(k for f in facts for k in f):  # known values compared, unknown ones said
        if len({f[what] for f in facts if what in f}) > 1:
            said.append(f"note: these summaries differ in their {what}: " + ", ".join(
                f"{n} {f.get(what, 'unknown')}" for n, f in zip(names, facts, strict=True)))
    rules = {segment_settings(s) for s in summaries}  # where they differ, the note above said so
    if len(rules) == 1 and rules != {segment_settings({})}:
        said.append(f"note: segment metric not at its defaults ({segment_settings({})}) but at "
                    f"{rules.pop()}: mixed_10 keeps its name at any minority")
    for n, s in zip(names, summaries, strict=True):
        stopped = unfinished_runs(s)
        if stopped and len(summaries) > 1:
            said.append(f"note: {n} holds runs stopped before their planned epochs: {', '.join(stopped)}")
    return said


def column_names(paths) -> list:
    """Each summary's folder; where two would share a title, every title takes as many parent
    folders as tell them apart: LES-AV/Final_pre and HRF-AV/Final_pre, not Final_pre twice
    (test.py's default folder). One folder given twice keeps its own name twice."""
    parts = [Path(os.path.abspath(p)).parent.parts[1:] or ("/",) for p in paths]  # '..' resolved, no root
    for k in range(1, max(map(len, parts)) + 1):
        names = ["/".join(q[-k:]) for q in parts]
        if len(set(names)) == len(set(parts)):  # as many titles as folders
            break
    # Two files of one folder (summary.json and bundle_summary.json): the file's name after it.
    files = [os.path.abspath(p) for p in paths]
    return [f"{n}/{Path(f).stem}" if any(n == m and f != g for m, g in zip(names, files, strict=True)) else n
            for n, f in zip(names, files, strict=True)]


def main(argv=None):
    p = ArgumentParser(prog="python -m scripts.compare", description=__doc__)
    p.add_argument("summaries", nargs="*", help="summary.json files written by test.py, or the folders that hold them")
    p.add_argument("--names", nargs="+", action="extend", default=None,
                   help="a column title per summary (default: each summary's folder name; where two would "
                        "be the same, every title takes parent folders until they differ: LES-AV/Final_pre)")
    p.add_argument("--all", action="store_true",
                   help="every row of the summaries: artery, vein and uncertain, and the extras, besides the "
                        "weighted average and the segment metric")
    p.add_argument("--markdown", action="store_true", help="print the table in Markdown")
    p.add_argument("--paired", nargs="?", const="average/f1", metavar="COLUMN",
                   help="two summaries: per-image differences (second - first) of a metrics.csv column "
                        "(default average/f1; each image's mean over the runs) and a two-sided Wilcoxon "
                        "signed-rank test over the test images")
    args = p.parse_args(argv)
    if args.paired and (args.paired.endswith(".json") or Path(args.paired).exists()):
        p.error(f"--paired takes an optional column, not {args.paired}: put the summaries first (A B --paired)")
    if args.paired and len(args.summaries) != 2:
        p.error(f"--paired compares two summaries, not {len(args.summaries)}")
    if not args.summaries:  # --names takes every word after it, the summaries too when they follow it
        p.error("--names takes every word after it: give the summaries first (python -m scripts.compare A B "
                "--names X Y)" if args.names else "give at least one summary.json, or the folder that holds it")
    paths = [Path(s) / "summary.json" if Path(s).is_dir() else Path(s) for s in args.summaries]  # or test.py's folder
    seen = {}
    for path in paths:  # one summary twice: a column of itself, said (a slip, unless meant as a check)
        twin = seen.setdefault(os.path.realpath(path), path)
        if twin is not path:
            print(f"note: {twin} and {path} are the same summary", file=sys.stderr)
    names = args.names or column_names(paths)
    if len(names) != len(args.summaries):
        print(f"error: {len(names)} --names for {len(args.summaries)} summaries: give one per summary",
              file=sys.stderr)
        sys.exit(2)
    summaries = []
    for path in paths:
        try:
            summary = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            print(f"error: {path}: cannot read summary ({exc})", file=sys.stderr)
            sys.exit(2)
        if not (isinstance(summary, dict) and isinstance(summary.get("average"), dict)
                and isinstance(summary.get("runs"), list)):
            print(f"error: {path}: not a test summary (test.py's summary.json has 'average' and 'runs')",
                  file=sys.stderr)
            sys.exit(2)
        summaries.append(summary)
    if args.paired:
        try:
            test = paired_test(*(per_image(path, s, args.paired) for path, s in zip(paths, summaries, strict=True)))
        except (OSError, ValueError) as exc:
            print(f"error: --paired: {exc}", file=sys.stderr)
            sys.exit(2)
    for line in notes(summaries, names):
        print(line, file=sys.stderr)
    text = (markdown_table if args.markdown else table)(summaries, names, SUMMARY_GROUPS if args.all else GROUPS)
    print(text)
    if "/auc_roc " in text or "/auc_pr " in text:  # the binary-map AUCs of the published table
        print(BINARY_AUC_NOTE, file=sys.stderr if args.markdown else sys.stdout)  # Markdown: the table alone
    if args.paired:
        p_value = (f"Wilcoxon signed-rank p = {test['p']:.3g} (two-sided, over the differing images)"
                   if test["p"] is not None else f"no test: fewer than {MIN_DIFFERING} images differ")
        print(f"paired over {test['images']} test images ({test['differing']} differing), {args.paired}, {names[1]} - "
              f"{names[0]}: mean {test['mean']:+.2f}, median {test['median']:+.2f}; {p_value}; each image's value is "
              f"its mean over the runs", file=sys.stderr if args.markdown else sys.stdout)


if __name__ == "__main__":
    main()
