"""A small synthetic artery/vein fundus data set, so the pipeline can be tried without the real data.

Each picture is a fundus-like disc (orange-red, darker towards the rim, a bright optic disc, a
faint macula and mild noise) on a black border, with an artery tree (lighter, thinner) and a vein
tree (darker, wider) growing from the optic disc as branching random walks. The label follows the
real data sets: 0 background, 1 artery, 2 vein, 3 uncertain (where an artery and a vein cross,
plus a few short vessel stretches left undecided). Everything is drawn with numpy and Pillow and
depends only on the seed.

    python -m scripts.synthetic --out ./data-synthetic --train 8 --test 4 --size 320 288 --seed 0

writes ``./data-synthetic/SYNTHETIC/{training,test}/{images,1st_manual,mask}`` (ids s01, s02, ...: the
training ids first, the test ids continue the numbering), the layout ``config.DATASETS`` expects.
"""
import math
import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .cli import ArgumentParser

BACKGROUND = np.array([205.0, 92.0, 38.0])      # fundus colour at the centre (RGB)
OPTIC_DISC = np.array([250.0, 215.0, 140.0])    # colour of the optic disc's centre
ARTERY_KEEP = np.array([0.86, 0.60, 0.65])      # fraction of each channel a vessel lets through
VEIN_KEEP = np.array([0.58, 0.36, 0.48])
_OWN_FILE = re.compile(r"s\d+(_mask)?\.png")   # files this module writes (and may replace)


def _grow(rng, start, angle, width, steps, step_len, turn, depth, max_depth, fov, segments):
    """Random walk from ``start``; appends (x0, y0, x1, y1, width, undecided) segments and
    spawns narrower side branches until ``depth`` reaches ``max_depth``."""
    cx, cy, radius = fov
    x, y = start
    undecided_left = 0
    for i in range(steps):
        angle += turn + rng.normal(0.0, 0.10)
        turn *= 0.96                                       # arcades bend, then run straight
        nx, ny = x + step_len * math.cos(angle), y + step_len * math.sin(angle)
        if math.hypot(nx - cx, ny - cy) > radius - 1:
            return
        if depth == max_depth and undecided_left == 0 and rng.random() < 0.015:
            undecided_left = int(rng.integers(3, 6))        # a short stretch nobody could label
        segments.append((x, y, nx, ny, width, undecided_left > 0))
        undecided_left = max(undecided_left - 1, 0)
        x, y = nx, ny
        width = max(width * 0.985, 1.0)
        if depth < max_depth and i > 2 and rng.random() < 0.09:
            side = rng.choice([-1.0, 1.0])
            child_angle = angle + side * rng.uniform(0.45, 0.95)
            child_steps = int(max(steps - i, 8) * rng.uniform(0.5, 0.8))
            _grow(rng, (x, y), child_angle, max(width * 0.7, 1.0), child_steps, step_len,
                  rng.normal(0.0, 0.015), depth + 1, max_depth, fov, segments)
            width = max(width * 0.9, 1.0)


def _vessel_tree(rng, disc, temporal, fov, width, scale, offset):
    """Segments of one tree: two arcades curving round the macula and two nasal trunks."""
    segments = []
    dx, dy, disc_r = disc
    for rel, curve in ((1.15, -0.035), (-1.15, 0.035), (2.3, 0.0), (-2.3, 0.0)):
        angle = temporal + rel + offset + rng.normal(0.0, 0.12)
        start = (dx + 0.8 * disc_r * math.cos(angle), dy + 0.8 * disc_r * math.sin(angle))
        steps = int(rng.integers(45, 65) if curve else rng.integers(25, 40))
        _grow(rng, start, angle, width * rng.uniform(0.85, 1.1), steps, 4.0 * scale,
              curve + rng.normal(0.0, 0.005), 0, int(rng.integers(2, 4)), fov, segments)
    return segments


def _draw(segments, size):
    """Hard masks (vessel, undecided) of a list of segments; round joints via end discs."""
    vessel, undecided = Image.new("L", size, 0), Image.new("L", size, 0)
    for x0, y0, x1, y1, w, doubt in segments:
        for img in (vessel, undecided) if doubt else (vessel,):
            draw = ImageDraw.Draw(img)
            d = max(int(round(w)), 1)
            draw.line((x0, y0, x1, y1), fill=255, width=d)
            if d >= 3:
                r = (d - 1) / 2.0
                draw.ellipse((x1 - r, y1 - r, x1 + r, y1 + r), fill=255)
    return vessel, undecided


def _soft(mask_img):
    """A hard vessel mask as a slightly blurred alpha in [0, 1] (anti-aliased edges)."""
    return np.asarray(mask_img.filter(ImageFilter.GaussianBlur(0.7)), dtype=np.float64) / 255.0


def synthetic_sample(size, rng):
    """One synthetic fundus: (image HxWx3 uint8, label HxW uint8 in 0..3, FOV mask HxW bool).

    ``size`` is (W, H); ``rng`` is a ``numpy.random.Generator``.
    """
    w, h = int(size[0]), int(size[1])
    scale = min(w, h) / 288.0
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    cx, cy = w / 2.0 + rng.normal(0, 2 * scale), h / 2.0 + rng.normal(0, 2 * scale)
    radius = 0.48 * min(w, h)
    r = np.hypot(xx - cx, yy - cy) / radius
    fov = r <= 1.0

    # The optic disc sits on one side; the macula lies towards the centre ("temporal").
    side = rng.choice([-1.0, 1.0])
    disc_r = radius * rng.uniform(0.10, 0.13)
    dx = cx + side * radius * rng.uniform(0.45, 0.55)
    dy = cy + radius * rng.normal(0.0, 0.05)
    temporal = math.pi if side > 0 else 0.0
    mx, my = dx - side * radius * 0.75, dy + radius * 0.05

    # Background: radial falloff, low-frequency blotches, optic disc glow, darker macula.
    shade = 1.0 - 0.45 * r ** 2
    blotch = rng.normal(1.0, 0.05, size=(6, 6))
    shade = shade * np.asarray(Image.fromarray(blotch.astype(np.float32), mode="F")
                               .resize((w, h), Image.BICUBIC), dtype=np.float64)
    shade = shade * (1.0 - 0.25 * np.exp(-((xx - mx) ** 2 + (yy - my) ** 2) / (2 * (1.3 * disc_r) ** 2)))
    tint = BACKGROUND * rng.uniform(0.9, 1.08, size=3)
    image = shade[..., None] * tint
    glow = np.exp(-(((xx - dx) ** 2 + (yy - dy) ** 2) / (2 * (0.8 * disc_r) ** 2)) ** 2)
    image = image * (1 - glow[..., None]) + OPTIC_DISC * glow[..., None]

    # Vessels: arteries and veins start from the optic disc, slightly offset from each other.
    disc, fov_circle = (dx, dy, disc_r), (cx, cy, radius)
    arteries = _vessel_tree(rng, disc, temporal, fov_circle, 4.2 * scale, scale, +0.28)
    veins = _vessel_tree(rng, disc, temporal, fov_circle, 6.0 * scale, scale, -0.28)
    a_mask, a_doubt = _draw(arteries, (w, h))
    v_mask, v_doubt = _draw(veins, (w, h))
    image = image * (1 - _soft(a_mask)[..., None] * (1 - ARTERY_KEEP))
    image = image * (1 - _soft(v_mask)[..., None] * (1 - VEIN_KEEP))

    image = image + rng.normal(0.0, 3.0, size=image.shape)
    image = np.clip(image, 0, 255).round().astype(np.uint8)
    image[~fov] = 0

    artery, vein = np.asarray(a_mask) > 0, np.asarray(v_mask) > 0
    undecided = (np.asarray(a_doubt) > 0) | (np.asarray(v_doubt) > 0)
    label = np.zeros((h, w), np.uint8)
    label[artery] = 1
    label[vein] = 2
    label[(artery & vein) | undecided] = 3
    label[~fov] = 0
    return image, label, fov


def make_synthetic_dataset(root, n_train=8, n_test=4, size=(320, 288), seed=0) -> Path:
    """Write ``n_train`` + ``n_test`` samples under ``<root>/SYNTHETIC`` and return that path.

    Sample ``i`` depends only on (seed, i). Files of an earlier run (``s<digits>[_mask].png``) in
    the six folders are removed first, so a smaller rerun leaves no stale ids behind.
    """
    if n_train < 1 or n_test < 0:
        raise ValueError(f"need n_train >= 1 and n_test >= 0, got {n_train} and {n_test}")
    if min(size) < 64:
        raise ValueError(f"size {tuple(size)} is too small (each side must be at least 64)")
    out = Path(root) / "SYNTHETIC"
    digits = max(2, len(str(n_train + n_test)))
    for i in range(n_train + n_test):
        split = "training" if i < n_train else "test"
        if i in (0, n_train):
            for kind in ("images", "1st_manual", "mask"):
                folder = out / split / kind
                folder.mkdir(parents=True, exist_ok=True)
                for old in folder.iterdir():
                    if _OWN_FILE.fullmatch(old.name):
                        old.unlink()
        image, label, fov = synthetic_sample(size, np.random.default_rng([seed, i]))
        name = f"s{i + 1:0{digits}d}"
        Image.fromarray(image, "RGB").save(out / split / "images" / f"{name}.png")
        Image.fromarray(label, "L").save(out / split / "1st_manual" / f"{name}.png")
        Image.fromarray(fov.astype(np.uint8) * 255, "L").save(out / split / "mask" / f"{name}_mask.png")
    if n_test == 0:
        for kind in ("images", "1st_manual", "mask"):
            (out / "test" / kind).mkdir(parents=True, exist_ok=True)
    return out


def main(argv=None):
    parser = ArgumentParser(
        prog="python -m scripts.synthetic",
        description="Write a small synthetic artery/vein fundus data set to <out>/SYNTHETIC "
                    "(labels: 0 background, 1 artery, 2 vein, 3 uncertain).")
    parser.add_argument("--out", default="./data-synthetic",
                        help="data root; SYNTHETIC/ is made in it (default ./data-synthetic, apart from the real "
                             "data in ./data; train and test with --data-root ./data-synthetic)")
    parser.add_argument("--train", type=int, default=8, help="number of training images (default 8)")
    parser.add_argument("--test", type=int, default=4, help="number of test images (default 4)")
    parser.add_argument("--size", type=int, nargs=2, default=(320, 288), metavar=("W", "H"),
                        help="image width and height in pixels (default 320 288)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = parser.parse_args(argv)
    try:
        out = make_synthetic_dataset(args.out, args.train, args.test, tuple(args.size), args.seed)
    except ValueError as exc:
        parser.error(str(exc))
    print(f"wrote {args.train} training and {args.test} test images "
          f"({args.size[0]} x {args.size[1]}) to {out}")


if __name__ == "__main__":
    main()
