"""A run's TensorBoard scalars as one small CSV (tag, step, wall time, value): what the
results/ folders keep of each training run, since the event files also hold a picture per
validation and grow large. ``.gz`` at the end of the name compresses it.

    python -m scripts.scalars runs/DRIVE_AV_sigmoid_seed42 results/sigmoid/DRIVE_AV/<tag>/seed42/scalars.csv.gz
"""
import csv
import gzip
import io
import sys
from pathlib import Path

from .cli import ArgumentParser
from .config import ConfigError
from .files import atomic_write, make_folder


def read_scalars(run_log_dir):
    """{tag: [(step, wall_time, value), ...]} of every event file in the folder."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    folder = Path(run_log_dir)
    if not any(folder.glob("events.out.tfevents.*")):
        raise FileNotFoundError(f"{folder}: no TensorBoard event files (name one run's folder, "
                                f"e.g. runs/DRIVE_AV_sigmoid_seed42)")
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 1, "tensors": 1})
    events.Reload()
    return {tag: [(e.step, e.wall_time, e.value) for e in events.Scalars(tag)]
            for tag in sorted(events.Tags()["scalars"])}


def write_scalars_csv(scalars, path):
    text = io.StringIO()
    out = csv.writer(text, lineterminator="\n")
    out.writerow(["tag", "step", "wall_time", "value"])
    for tag, rows in scalars.items():
        for step, wall_time, value in rows:
            out.writerow([tag, step, f"{wall_time:.3f}", f"{value:.7g}"])
    data = text.getvalue().encode()
    path = Path(path)
    make_folder(path.parent, "the CSV's folder")
    if path.name.endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))
    return path


def main(argv=None):
    p = ArgumentParser(prog="python -m scripts.scalars", description=__doc__)
    p.add_argument("run_log_dir", help="a run's TensorBoard folder, e.g. runs/DRIVE_AV_sigmoid_seed42")
    p.add_argument("out", help="CSV file to write (.csv or .csv.gz)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a CSV already at OUT (without it that is refused: nothing is written)")
    args = p.parse_args(argv)
    out = Path(args.out)
    try:
        if out.is_dir():
            raise ConfigError(f"{out} is a folder; name the CSV file (e.g. {out / 'scalars.csv.gz'})")
        if out.exists() and not args.overwrite:
            raise ConfigError(f"{args.out} exists: --overwrite replaces it, or name another file")
        scalars = read_scalars(args.run_log_dir)
        path = write_scalars_csv(scalars, args.out)
    except (FileNotFoundError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. a read-only file system
        print(f"error: {args.out}: cannot write ({exc.strerror or exc})", file=sys.stderr)
        return 2
    print(f"{path}: {sum(map(len, scalars.values()))} values of {len(scalars)} tags")
    return 0


if __name__ == "__main__":
    sys.exit(main())
