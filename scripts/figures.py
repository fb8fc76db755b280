"""Figures for the README, made from the project's own outputs.

    python -m scripts.figures --dataset DRIVE_AV --image 01_test --out imgs/DRIVE_AV_01_test.png
        a test photograph, its truth and test.py's prediction (./<Dataset>/Final_pre/raw_pre)
    python -m scripts.figures --photo photos/224.png --predictions out --out imgs/own.png
        a photograph, its overlay and its colour map as written by predict.py
"""
import glob
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .cli import ArgumentParser
from .config import ConfigError, dataset_spec
from .data import DataError, find_samples, load_sample, read_image
from .files import make_folder
from .metrics import CLASS_COLOURS
from .predict_inputs import fingerprint
from .predict_outputs import OUTPUT_FILES, PREDICTIONS_CSV, made_from, read_rows


def label_picture(label):
    """0..3 label -> artery red, vein blue, uncertain green."""
    return CLASS_COLOURS[label]


def side_by_side(panels, titles, height=400):
    """Panels (HxWx3 uint8) scaled to one height, with a title above each."""
    scaled = [Image.fromarray(p).resize((round(p.shape[1] * height / p.shape[0]), height), Image.BILINEAR)
              for p in panels]
    width = sum(s.width for s in scaled) + 10 * (len(scaled) - 1)
    canvas = Image.new("RGB", (width, height + 24), "white")
    draw, x = ImageDraw.Draw(canvas), 0
    for img, title in zip(scaled, titles, strict=True):
        canvas.paste(img, (x, 24))
        draw.text((x + 4, 6), title, fill="black")
        x += img.width + 10
    return canvas


def save_figure(figure, out):
    """Write the figure, or one error line (a folder that cannot be made or written in, a file
    type PIL does not know)."""
    try:
        make_folder(Path(out).parent, "--out's folder")
        figure.save(out)
    except ConfigError as exc:
        fail(exc)
    except (OSError, ValueError) as exc:
        fail(f"--out {out}: cannot write the figure ({getattr(exc, 'strerror', None) or exc})")
    print(f"wrote {out}")


def fail(message):
    """One error line and exit status 2, like every entry point of the project."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def main(argv=None):
    p = ArgumentParser(prog="python -m scripts.figures", description=__doc__)
    p.add_argument("--dataset", default="DRIVE_AV", help="data set of --image (default %(default)s)")
    p.add_argument("--image", help="test image name, e.g. 01_test (or its file name, 01_test.tif)")
    p.add_argument("--photo", help="with --predictions: a photograph given to predict.py")
    p.add_argument("--predictions", help="predict.py's output folder")
    p.add_argument("--data-root", default="./data", help="data folder (default %(default)s)")
    p.add_argument("--final-pre", default=None,
                   help="test.py's output folder (default ./<Dataset>/Final_pre; a test of several runs: <that>/<run>)")
    p.add_argument("--caption", default="prediction", help="title of the prediction panel")
    p.add_argument("--out", required=True, help="the figure to write (.png)")
    args = p.parse_args(argv)
    if args.photo:
        if not args.predictions:
            fail("--photo needs --predictions, the output folder predict.py wrote for it")
        return own_photo_figure(args)
    if not args.image:
        fail("give --image (a test image) or --photo with --predictions")
    try:
        spec = dataset_spec(args.dataset)
        samples = {s.name: s for s in find_samples(args.data_root, spec, "test")}
        name = args.image if args.image in samples else Path(args.image).stem  # 01_test or 01_test.tif
        if name not in samples:
            raise ConfigError(f"no test image {args.image!r} in {args.data_root}/{spec.name}/test")
        image, label, fov = load_sample(samples[name])
        final_pre = Path(args.final_pre or Path(spec.name) / "Final_pre")
        pred_path = final_pre / "raw_pre" / f"{name}.png"
        if not pred_path.is_file():
            per_run = sorted(p.parent.parent.name for p in final_pre.glob(f"*/raw_pre/{name}.png"))
            if per_run:  # test.py of several runs writes the pictures per run
                raise ConfigError(f"{pred_path} not found; the test of several runs wrote it per run: "
                                  f"--final-pre {final_pre}/RUN, RUN one of {', '.join(per_run)}")
            others = [] if args.final_pre else sorted(  # e.g. test.sh's Final_pre_pretrained
                str(p.parent.parent) for p in Path(spec.name).glob(f"Final_pre*/raw_pre/{name}.png"))
            raise ConfigError(f"{pred_path} not found: " + (f"--final-pre {' or '.join(others)}?" if others
                                                              else "run test.py first"))
        with Image.open(pred_path) as img:
            pred = np.asarray(img.convert("RGB"))
    except ConfigError as exc:
        fail(exc)
    truth = label_picture(label)
    truth[~fov] = 0
    figure = side_by_side([image, truth, pred], ["photograph", "truth (A red, V blue, U green)", args.caption])
    save_figure(figure, args.out)


def output_name(photo: Path, predictions: Path) -> str:
    """The name predict.py gave ``photo``'s outputs in ``predictions`` (``patB/OD`` for
    .../patB/OD.jpg of a cohort): its predictions.csv row, else the class map of its stem that
    names this photograph's content (its SHA-256), never another patient's OD."""
    for row in read_rows(predictions / PREDICTIONS_CSV):
        if row.get("output") and os.path.realpath(row["path"]) == os.path.realpath(photo):
            return row["output"]
    suffix = OUTPUT_FILES["classes"]
    maps = sorted(predictions.rglob(glob.escape(photo.stem) + suffix))
    if not maps:
        fail(f"no outputs named {photo.stem} in {predictions} (run predict.py on {photo} first)")
    sha256, made = fingerprint(photo), {}
    for classes in maps:
        try:
            made[classes] = made_from(classes)["source_sha256"]
        except Exception:  # noqa: BLE001 - an unreadable map is not this photograph's
            made[classes] = ""
        if made[classes] == sha256:
            return classes.relative_to(predictions).as_posix()[:-len(suffix)]
    unnamed = [m for m in maps if made[m] is None]  # an older version's maps name no photograph
    if len(unnamed) == 1:  # the others are known to be other photographs': the one left
        return unnamed[0].relative_to(predictions).as_posix()[:-len(suffix)]
    fail(f"{predictions} holds outputs named {photo.stem} ({', '.join(str(m) for m in maps)}), but none made "
         f"from {photo} (their class maps name another photograph's content, or none: then give --photo as "
         f"predict.py was given it, its predictions.csv path)")


def own_photo_figure(args):
    photo, predictions = Path(args.photo), Path(args.predictions)
    if not photo.is_file():
        fail(f"--photo {photo}: no such file")
    name = output_name(photo, predictions)
    paths = [photo, *(predictions / (name + OUTPUT_FILES[k]) for k in ("overlay", "colour"))]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        fail(f"{', '.join(missing)} not found (the figure needs the overlay: predict.py without --no-overlay)")
    try:  # the photograph as predict.py read it, turned by its EXIF orientation like the outputs
        panels = [read_image(p, upright=p == photo) for p in paths]
    except DataError as exc:
        fail(exc)
    figure = side_by_side(panels, ["photograph", "overlay", args.caption])
    save_figure(figure, args.out)


if __name__ == "__main__":
    main()
