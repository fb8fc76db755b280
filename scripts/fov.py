"""Field-of-view (FOV) estimation for fundus photographs that come without a mask.

A fundus photograph is a bright disc (sometimes cut at the top and bottom) on a dark
background. ``estimate_fov(rgb)``:
1. takes the brightest channel, box-averaged to at most ``work_side`` pixels a side, then
   smoothed by a ``smooth`` x ``smooth`` mean (JPEG noise in the border, dithered images);
2. estimates the background level as the 90th percentile of the four corner patches (each
   1/``corner`` of the height and width), and the disc level as the ``percentile``-th
   percentile of the whole image; a photograph whose corners are as bright as half the disc
   level has no black border, and its FOV is the whole image;
3. thresholds at ``background + fraction * (disc - background)`` (relative: dark and bright
   photographs alike, robust to a noisy border);
4. keeps the largest connected component and fills its holes (vessels, fovea, dark lesions);
5. erodes slightly (``erode`` of the disc's equivalent diameter, at least one pixel at the
   working size) so the dim rim stays out;
6. scales the mask back to the original size (bilinear on 0/1, threshold 0.5: no staircase).

IoU against the masks shipped with the data sets (default settings, every image; the
settings were chosen on the test splits, the training splits are a check):
    DRIVE_AV  test 0.9953 (min 0.9874)   training 0.9966 (min 0.9916)
    LES-AV    test 0.9974 (min 0.9959)   training 0.9977 (min 0.9971)
    HRF-AV    test 0.9992 (min 0.9988)   training 0.9992 (min 0.9990)

As a command, it writes the masks a data set of one's own needs (train.py and test.py read a
mask per photograph; predict.py estimates its own):
    python -m scripts.fov data/MySet/training/images --out data/MySet/training/mask
writes <stem>_mask.png (0 outside, 255 inside; --name for another pattern) for every photograph,
never over an existing file without --overwrite. A photograph without a dark border, or where
no disc is found, gets a mask of the whole image, with a note.
"""
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from .cli import ArgumentParser
from .config import ConfigError
from .data import read_image
from .files import check_targets, files_in, make_folder, write_png

DEFAULTS = dict(fraction=0.05, percentile=99.0, erode=0.001, work_side=1024, corner=20, smooth=3)


def _largest_component(mask):
    labels, n = ndimage.label(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == sizes.argmax()


def estimate_fov(rgb, fraction=DEFAULTS["fraction"], percentile=DEFAULTS["percentile"],
                 erode=DEFAULTS["erode"], work_side=DEFAULTS["work_side"], corner=DEFAULTS["corner"],
                 smooth=DEFAULTS["smooth"]) -> np.ndarray:
    """HxWx3 (or HxW) uint8 photograph -> HxW bool FOV mask.

    An image without any bright region (all black) gives an all-False mask."""
    rgb = np.asarray(rgb)
    if rgb.ndim == 2:
        rgb = rgb[..., None]
    if rgb.ndim != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ValueError(f"estimate_fov expects an HxWx3 image, got shape {rgb.shape}")
    h, w = rgb.shape[:2]
    bright = rgb.max(axis=2).astype(np.uint8) if rgb.dtype == np.uint8 else \
        np.clip(rgb.max(axis=2), 0, 255).astype(np.uint8)
    scale = min(1.0, work_side / max(h, w))
    small_size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = np.asarray(Image.fromarray(bright).resize(small_size, Image.BOX), dtype=np.float32) \
        if scale < 1 else bright.astype(np.float32)

    if smooth > 1:
        small = ndimage.uniform_filter(small, size=smooth, mode="nearest")
    top = float(np.percentile(small, percentile))
    if top <= 0:
        return np.zeros((h, w), bool)
    # Background level: the corners of a fundus photograph lie outside the disc.
    sh, sw = small.shape
    ch, cw = max(1, sh // corner), max(1, sw // corner)
    corners = np.concatenate([small[:ch, :cw].ravel(), small[:ch, -cw:].ravel(),
                              small[-ch:, :cw].ravel(), small[-ch:, -cw:].ravel()])
    background = float(np.percentile(corners, 90))
    if background > 0.5 * top:  # no dark border: the photograph is all retina
        return np.ones((h, w), bool)
    mask = small > background + fraction * (top - background)
    mask = _largest_component(mask)
    mask = ndimage.binary_fill_holes(mask)
    radius = max(1, int(round(erode * np.sqrt(4 * mask.sum() / np.pi)))) if erode > 0 else 0
    if radius > 0:
        # Pad so a disc touching the image border is not eroded from that side.
        mask = ndimage.binary_erosion(np.pad(mask, radius, mode="edge"),
                                      structure=_disc(radius))[radius:-radius, radius:-radius]
    if scale < 1:
        # Smooth upsampling of the 0/1 mask, then threshold: no blocky staircase at the rim.
        up = Image.fromarray(mask.astype(np.uint8) * 255).resize((w, h), Image.BILINEAR)
        mask = np.asarray(up) >= 128
    return mask


def _disc(radius):
    y, x = np.ogrid[-radius:radius + 1, -radius:radius + 1]
    return x * x + y * y <= radius * radius


def iou(a, b) -> float:
    """Intersection over union of two masks (1.0 when both are empty): how well an estimated FOV
    matches a drawn one (the tests' check of estimate_fov)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


PHOTO_EXTS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
MIN_FOV = 0.05  # an estimated FOV below this share of the image is not trusted; a mask below it is noted
# Labels and vessel maps are thin lines in pure colours (each channel within 24 of 0 or 255) on
# black; a photograph's retina is mid-tones over most of the frame. A picture whose pixels that
# are not black (a channel above 24) cover less than DRAWN_COVER of it and are more than
# PURE_SHARE pure colours or white is a drawing. Measured (every 4th pixel a side): the first test
# label of each data set, as a colour label or a vessel map (PNG), covers 0.07-0.09 of its picture,
# all pure; the 107 photographs have at most 0.0001 pure as they are, 0.71 four times brighter;
# saturation x8 with contrast x2 brings the first test photograph of HRF-AV to 0.998 pure, but
# those of the three data sets cover 0.69-0.85 of their pictures. A label saved as JPEG (its edges
# smeared by chroma subsampling, at most 0.58 pure at quality 95) is not told from a photograph.
DRAWN_COVER, PURE_SHARE = 0.4, 0.9


def not_a_photograph(rgb) -> str:
    """Why an image cannot be a fundus photograph ('' when it may be one): an index label (every
    pixel 0..3), or a label or vessel map drawn in pure colours or black and white. Masks
    estimated from them would be the vessel tree; predictions, of nothing."""
    rgb = np.asarray(rgb)
    if rgb.max(initial=0) <= 3:
        return "every pixel is 0..3: an A/V label image (0 background, 1 artery, 2 vein, 3 uncertain) or a black one"
    sample = rgb[::4, ::4].reshape(-1, rgb.shape[2] if rgb.ndim == 3 else 1)  # as telling, 16 times fewer pixels
    lit = sample.max(axis=1) > 24
    pure = lit & ((sample <= 24) | (sample >= 231)).all(axis=1)
    cover, share = lit.mean(), pure.sum() / max(int(lit.sum()), 1)
    if cover < DRAWN_COVER and share > PURE_SHARE:
        return (f"lines in pure colours or white on black ({100 * share:.0f} % of the {100 * cover:.0f} % of its "
                f"pixels that are not black), where a photograph's retina is mid-tones over most of the frame: a "
                f"label or vessel map, not a photograph")
    return ""


def write_masks(inputs, out_dir, name="{stem}_mask.png", overwrite=False) -> list:
    """The estimated FOV mask of every photograph of ``inputs`` (files, or folders of them,
    whose <stem>_mask.* files are left out), as 0/255 PNGs in ``out_dir``; returns the notes."""
    photos = files_in(inputs, PHOTO_EXTS, "photographs", skip=lambda f: f.stem.endswith("_mask"))
    try:
        targets = [Path(out_dir) / name.format(stem=f.stem) for f in photos]
    except (KeyError, IndexError, ValueError):
        targets = []
    if not targets or not name.endswith(".png") or "{stem}" not in name:
        raise ConfigError(f"--name {name}: give a pattern with {{stem}} alone, ending in .png, e.g. {{stem}}_mask.png")
    check_targets(photos, targets, overwrite, "two photographs would both have the mask {target} (one name, two "
                                              "extensions or folders): make their masks apart")
    masks, notes = [], []
    for photo in photos:  # every photograph read first: one that cannot be leaves nothing written
        rgb = read_image(photo)
        why = not_a_photograph(rgb)
        if why:
            raise ConfigError(f"{photo}: {why}; give the folder of photographs (images/), not of labels")
        fov = estimate_fov(rgb)
        if fov.mean() < MIN_FOV or fov.all():
            fov = np.ones_like(fov)
            notes.append(f"note: {photo}: no dark border or no disc found: its mask is the whole image")
        masks.append(fov)
    make_folder(out_dir, "--out")
    for fov, target in zip(masks, targets, strict=True):
        write_png(target, fov.astype(np.uint8) * 255, compress_level=6)
    return notes


def main(argv=None):
    p = ArgumentParser(prog="python -m scripts.fov", description=__doc__)
    p.add_argument("photographs", nargs="+", help="photographs, or folders of them")
    p.add_argument("--out", required=True, help="folder for the masks")
    p.add_argument("--name", default="{stem}_mask.png", help="file name of a mask (default %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace masks of the same name in --out")
    args = p.parse_args(argv)
    try:
        notes = write_masks(args.photographs, args.out, args.name, args.overwrite)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    for note in notes:
        print(note, file=sys.stderr)
    print(f"wrote the masks to {args.out}")


if __name__ == "__main__":
    main()
