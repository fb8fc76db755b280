"""Colour A/V labels to the index labels this project reads (0 background, 1 artery, 2 vein,
3 uncertain).

Public A/V label releases draw their classes in colour: red arteries, blue veins, green
crossings, white vessels of unknown type (RITE's convention, the A/V labels of DRIVE). Each
pixel's class is read from which of its channels are at 128 or more: R alone artery, B alone
vein, G alone or all three uncertain, none background (and transparent pixels, alpha below
128). Any other mix (R and B: purple, R and G: yellow, G and B: cyan) is no class of this
convention: such a file is refused in one line, with its colours and how many pixels have them,
and nothing is written. So are pictures that cannot be such a label: grey ones (a vessel map, an
index label scaled for viewing), ones without a single artery or vein pixel, and ones with
vessels drawn too dark to be read (dark blue, no channel at 128), which would become background;
a JPEG file, whose colours blur at every edge, is refused even inside a folder.

    python -m scripts.labels path/to/av_labels --out data/MySet/training/1st_manual
    python -m scripts.labels a.png b.gif --out labels/

Writes <name>.png (mode L) into --out; an existing file there is never replaced without
--overwrite, and a label is never written over its own source.
"""
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from .cli import ArgumentParser
from .config import ConfigError
from .data import CLASS_OF_CHANNELS, DataError, read_image, transparent
from .files import check_targets, files_in, make_folder, write_png

LABEL_EXTS = (".png", ".gif", ".tif", ".tiff", ".bmp")  # lossless: a JPEG's colours blur at the edges
# A pixel of a colour (its brightest channel at DIM_LEVEL or more) but no channel at 128 is dim.
# Smoothed (anti-aliased) edges are dim beside their bright vessel; dim pixels farther than
# DIM_REACH pixels from any bright one are vessels that would be lost (drawn dark, or thin ones
# smoothed below 128), refused above DIM_SHARE of the vessel pixels drawn bright. Measured on
# the first test label of each data set, drawn in colour and smoothed: a Gaussian of sigma 0.5
# leaves none; sigma 1 leaves 0.14 % (HRF-AV), 0 (LES-AV) and 27 % (DRIVE_AV, whose 1-pixel
# vessels it dims below 128 entirely); veins drawn (0, 0, 110): all of them.
DIM_LEVEL, DIM_REACH, DIM_SHARE = 48, 3, 0.01


def read_colours(path) -> np.ndarray:
    """HxWx3 uint8 of a label file, transparent pixels (alpha below 128) black."""
    rgb = np.array(read_image(path))  # checked and decoded as every photograph is (a writable copy)
    with Image.open(path) as img:
        hidden = transparent(img)
    if hidden is not None:
        rgb[hidden] = 0
    return rgb


def index_label(rgb: np.ndarray, source="") -> np.ndarray:
    """HxWx3 uint8 colour label -> HxW uint8 classes 0..3; DataError for colours of no class,
    and for a picture with nothing drawn (an index label already, whose 0..3 read as black)."""
    on = rgb >= 128
    if not on.any():
        what = ("an index label already (values 0..3), or an empty one" if rgb.max() <= 3 else
                f"its brightest value is {rgb.max()}: drawn too dark for the convention, which reads a channel at "
                f"128 or more")
        raise DataError(f"{source}: no pixel has a channel at 128 or more: {what}; nothing to convert")
    if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
        raise DataError(f"{source}: a grey picture, no colour: a vessel map or an index label scaled for viewing, "
                        f"not an A/V label drawn in colour")
    code = on[..., 0] * 4 + on[..., 1] * 2 + on[..., 2]  # R G B as bits
    table = np.full(8, 255, np.uint8)
    for (r, g, b), cls in CLASS_OF_CHANNELS.items():
        table[r * 4 + g * 2 + b] = cls
    label = table[code]
    if (label == 255).any():
        bad = np.flatnonzero(np.bincount(code[label == 255].ravel(), minlength=8))
        names = {6: "R and G (yellow)", 5: "R and B (purple)", 3: "G and B (cyan)"}
        counts = ", ".join(f"{names[c]} at {int((code == c).sum())} pixels" for c in bad)
        y, x = (int(i[0]) for i in np.nonzero(label == 255))
        counts += f", the first at x {x}, y {y}"
        raise DataError(f"{source}: colours of no class: {counts} (classes: red artery, blue vein, green or white "
                        f"uncertain, black background)")
    if not ((label == 1).any() or (label == 2).any()):
        raise DataError(f"{source}: no artery (red) or vein (blue) pixel: not an A/V label drawn in colour")
    check_nothing_dim(rgb, on.any(axis=2), source)
    return label


def check_nothing_dim(rgb, drawn, source):
    """DataError where vessels were drawn too dark for the convention to read them (a dark blue
    vein, all channels below 128), or smoothed until thin ones are: they would become background."""
    # (grey pixels are no colour: a dark grey background, which the convention reads as background)
    dim = ~drawn & (rgb.max(axis=2) >= DIM_LEVEL) & (rgb.max(axis=2) - rgb.min(axis=2) >= DIM_LEVEL // 2)
    if not dim.any():
        return
    far = dim & ~ndimage.binary_dilation(drawn, iterations=DIM_REACH)
    if far.sum() > DIM_SHARE * drawn.sum():
        y, x = (int(i[0]) for i in np.nonzero(far))
        raise DataError(f"{source}: {int(far.sum())} pixels in dim colours away from any bright vessel (no channel at "
                        f"128 or more; the first at x {x}, y {y}, {tuple(int(c) for c in rgb[y, x])}), against "
                        f"{int(drawn.sum())} vessel pixels drawn bright: vessels drawn too dark or smoothed away, "
                        f"which would become background; give the label drawn in bright colours, unsmoothed")


def convert(paths, out_dir: Path, overwrite=False) -> list:
    """Every colour label of ``paths`` (files, or folders of them) as an index PNG in
    ``out_dir``; all are read and checked before any is written. Returns the files written."""
    files = files_in(paths, LABEL_EXTS + (".jpg", ".jpeg"), "label files")  # (JPEGs found, to be refused)
    jpeg = next((f for f in files if f.suffix.lower() in (".jpg", ".jpeg")), None)
    if jpeg:
        raise ConfigError(f"{jpeg}: a JPEG label's colours blur at the vessel edges; give the lossless original")
    targets = [out_dir / f"{f.stem}.png" for f in files]
    check_targets(files, targets, overwrite, "two labels would both become {target}: convert them into different "
                                             "--out folders")
    labels = [index_label(read_colours(f), f) for f in files]
    make_folder(out_dir, "--out")
    for label, t in zip(labels, targets, strict=True):
        write_png(t, label, compress_level=6)
    return targets


def main(argv=None):
    p = ArgumentParser(prog="python -m scripts.labels", description=__doc__)
    p.add_argument("labels", nargs="+", help="colour label files, or folders of them")
    p.add_argument("--out", required=True, help="folder for the index labels (<name>.png)")
    p.add_argument("--overwrite", action="store_true", help="replace files of the same name in --out")
    args = p.parse_args(argv)
    try:
        written = convert(args.labels, Path(args.out), args.overwrite)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(f"wrote {len(written)} index label(s) to {args.out}")


if __name__ == "__main__":
    main()
