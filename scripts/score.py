"""Score prediction pictures made by anything (another method, predict.py, an earlier test.py)
on a data set's test images, with the published protocol and the segment metric.

    python -m scripts.score --dataset DRIVE_AV --predictions other_method/
    python -m scripts.score --dataset LES-AV --predictions out/ --suffix _colour   # predict.py's

Each test image <name> needs <predictions>/<name><suffix>.png at the photograph's own size:
a colour picture, R artery, G uncertain, B vein (test.py's raw_pre, predict.py's _colour.png
and _classes.png, the original project's pictures), decoded as test.py decodes its own (a
channel is on above 127; README, Metrics), or a single-channel class map 0..3 (0 background,
1 artery, 2 vein, 3 uncertain, as the labels). Only the FOV counts. The probability extras
come from the picture's 8-bit values (a class map's are 0 or 255): they are not those test.py
computes from a network's probabilities.

Writes metrics.csv, summary.json (as test.py's, one run: the predictions folder; `python -m
scripts.compare` reads it) and mixed_segments/<name>.png to --output, and prints the table.
"""
import json
import sys
import time
from pathlib import Path

import numpy as np

from . import metrics, segments
from .checkpoint import atomic_write, atomic_write_csv, make_folder
from .cli import ArgumentParser, progress_bar
from .config import ConfigError, dataset_names, dataset_spec
from .data import DataError, find_samples, load_truth, open_header
from .evaluate import score_image, write_png

SCORED = "summary.json"


PICTURE_MODES = ("RGB", "RGBA", "P", "PA")   # colour, as it shows
CLASS_MAP_MODES = ("L", "LA")                # one channel: classes 0..3


def check_prediction(path, size):
    """One line for a file that cannot be a prediction of a photograph of ``size`` (W, H):
    unreadable, of another size, or neither 8-bit colour nor one channel (header only)."""
    with open_header(path) as header:
        if header.mode not in PICTURE_MODES + CLASS_MAP_MODES:
            raise DataError(f"{path}: a {header.mode} picture: give 8-bit colour (R artery, G uncertain, B vein) "
                            f"or a class map 0..3")
        if header.size != tuple(size):
            raise DataError(f"{path}: {header.size[0]} x {header.size[1]}, but the test image {Path(path).stem} is "
                            f"{size[0]} x {size[1]}: predictions are scored at the photograph's own size")


def read_prediction(path) -> np.ndarray:
    """HxWx3 uint8 picture of a prediction file (``check_prediction`` passed): a colour picture as
    it shows, or a class map 0..3 in the class colours."""
    header = open_header(path)
    try:
        if header.mode in PICTURE_MODES:
            return np.asarray(header.convert("RGB"))
        classes = np.asarray(header.convert("L"))
        if classes.max(initial=0) > 3:
            raise DataError(f"{path}: a single-channel picture with values up to {classes.max()}: give a class "
                            f"map 0..3 (0 background, 1 artery, 2 vein, 3 uncertain) or a colour picture (R "
                            f"artery, G uncertain, B vein)")
        return metrics.CLASS_COLOURS[classes]
    except OSError as exc:  # truncated or corrupt pixel data
        raise DataError(f"{path}: cannot decode image ({exc})") from None
    finally:
        header.close()


def prediction_files(samples, folder: Path, suffix: str) -> list:
    """The prediction file of each test image, every one checked (``check_prediction``) before
    any is scored; those missing named together."""
    paths = [folder / f"{s.name}{suffix}.png" for s in samples]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        found = sorted(p.name for p in folder.glob("*.png"))[:3]
        more = f" (and {len(missing) - 3} more)" if len(missing) > 3 else ""
        raise ConfigError(f"{folder}: no {', '.join(missing[:3])}{more} for {len(missing)} of the {len(samples)} "
                          f"test images (<name>{suffix}.png)"
                          + (f"; the folder holds e.g. {', '.join(found)}: --suffix?" if found else ""))
    for sample, path in zip(samples, paths, strict=True):
        with open_header(sample.image) as photograph:
            check_prediction(path, photograph.size)
    return paths


def check_output(out_dir: Path):
    """An earlier scoring in ``out_dir`` is replaced (said); a test.py test there is refused."""
    earlier = out_dir / SCORED
    if not earlier.is_file():
        return
    try:
        scored = "scored" in json.loads(earlier.read_text())
    except (OSError, ValueError):
        scored = False
    if not scored:
        raise ConfigError(f"--output {out_dir} holds a {SCORED} that this did not write (a test.py test?): "
                          f"choose another --output")
    print(f"note: replacing the earlier scores in {out_dir}", file=sys.stderr)


def score_one(sample, path):
    """(metrics result, picture of the mixed segments) of one test image's prediction file."""
    label, fov = load_truth(sample)
    picture = read_prediction(path).copy()
    picture[~fov] = 0  # as test.py's raw_pre: only the FOV counts
    split = segments.split_segments(label, fov)
    result, mixed = score_image(label, picture, fov, split)
    return result, segments.draw_mixed_segments(picture, split[0], mixed, label)


def score_folder(dataset, predictions, suffix="", data_root="./data", output=None):
    """Score every test image's prediction; write metrics.csv, summary.json and the pictures
    of the mixed segments to ``output``; return the summary (percent, as test.py's)."""
    spec = dataset_spec(dataset)
    folder = Path(predictions)
    if not folder.is_dir():
        raise ConfigError(f"--predictions {folder}: no such folder")
    samples = find_samples(data_root, spec, "test")
    paths = prediction_files(samples, folder, suffix)
    out_dir = Path(output) if output else folder.parent / f"{folder.resolve().name}_scores"
    check_output(out_dir)
    make_folder(out_dir, "--output")
    rows, results, started = [], [], time.time()
    for sample, path in zip(progress_bar(samples, desc="score"), paths, strict=True):
        result, drawing = score_one(sample, path)
        results.append(result)
        rows.append({"image": sample.name, **metrics.percent_row(result)})
        write_png(out_dir / "mixed_segments" / f"{sample.name}.png", drawing)
    for note in segments.caveats(results):
        print(f"note: segment metric: {note}", file=sys.stderr)
    summary = metrics.in_percent(metrics.mean_std_over_runs([metrics.summarize(results)]))
    summary.update({"runs": [str(folder)], "images": len(samples), "dataset": spec.name,
                    "scored": f"pictures <name>{suffix}.png of {folder} (python -m scripts.score); probability "
                              f"extras from their 8-bit values",
                    "units": "percent (segments/count: a number); means over test images"})
    atomic_write_csv(out_dir / "metrics.csv", rows, rows[0])
    atomic_write(out_dir / SCORED, lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=2)))
    print(f"{len(samples)} test images scored in {time.time() - started:.1f}s; wrote {out_dir}/metrics.csv, "
          f"{out_dir}/{SCORED} and {out_dir}/mixed_segments/", file=sys.stderr)
    return summary


def main(argv=None):
    p = ArgumentParser(prog="python -m scripts.score", description=__doc__)
    p.add_argument("--dataset", required=True, help=dataset_names())
    p.add_argument("--predictions", required=True, help="folder of <name><suffix>.png, one per test image")
    p.add_argument("--suffix", default="", help="after the image's name in the file names (predict.py: _colour "
                                                "or _classes; default none, as test.py's raw_pre)")
    p.add_argument("--data-root", default="./data", help="folder holding <Dataset>/test (default ./data)")
    p.add_argument("--output", help="default: <predictions>_scores beside the predictions folder")
    args = p.parse_args(argv)
    try:
        summary = score_folder(args.dataset, args.predictions, args.suffix, args.data_root, args.output)
    except (ConfigError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(metrics.summary_table(summary))
    print(metrics.BINARY_AUC_NOTE)


if __name__ == "__main__":
    main()
