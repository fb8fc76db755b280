"""Segment your own fundus photographs into arteries, veins and uncertain vessels.

Inputs (--input, one or more): a folder (searched recursively for .jpg .jpeg .png .tif .tiff
.bmp), a glob ("photos/**/*.jpg", quoted; its extension matches in any case, .JPG too), a list
file (.txt/.lst/.list: one path per line, relative paths from the list's folder, '#'
comments), or single image files. RGB, RGBA, palette, greyscale and 16-bit images are read, as
image viewers show them (an EXIF orientation tag applied; the outputs are made that way up).
A file that cannot be read (missing, empty, truncated, not an image) is recorded in the CSV
and on stderr and the run goes on; the exit status is then 1. When no image is found at all (no input path exists, or none holds an
image), one error line and exit 2, before any network loads.

Weights (--weights, one or more): run folders (ours, or the original authors'
CP_best_F1_*.pth / CP_epoch<N>_*.pth), bundle files or index JSONs of `python -m
scripts.bundle export`. Several weights form an ensemble: the probabilities are averaged and
an uncertainty map (per-pixel standard deviation over the members) is written too. Without
--weights, the project's shipped DRIVE_AV bundle in pretrained/ (when there is one).

Per image, under --output, at the image's own size (the sub-folders of the input are kept):
  <stem>_classes.png      index PNG: 0 background, 1 artery, 2 vein, 3 uncertain (with a palette)
  <stem>_colour.png       artery red, vein blue, uncertain green (test.py's raw_pre picture:
                          sigmoid: channel probabilities x 255; softmax: the likeliest class)
  <stem>_overlay.png      the class colours blended onto the photograph where a vessel is predicted
  <stem>_uncertainty.png  ensembles only: grey = 510 x std over members, the largest over the
                          channels (255: members disagree fully)
  <stem>_probs.npz        --save-probs: "probs" (float16, C x H x W), "channels", "fov"
and one predictions.csv: path, output (the <stem> above), status, reason, width, height,
artery/vein/uncertain fractions and vessel_density (of the FOV pixels), av_ratio (artery / vein
pixels), fov_source, notes (why its maps may be poor: greyscale, enlarged, distorted, blank, no
mask; turned by its EXIF orientation);
and predict_run.json: the weights (with a SHA-256 of their values) and the
settings that made the outputs. --resume refuses to add to a folder made with other ones, and
to overwrite the outputs of another photograph of the same output name (each class map names
its photograph in PNG text fields: "source", the path, and "source_sha256", the content, which
is what is compared); it keeps the CSV rows of earlier images that are not among this run's
inputs. An output folder that holds an earlier run needs --resume (add to it) or --overwrite
(replace it: the earlier run's files are deleted first), so no run silently drops another's
CSV rows or leaves its pictures beside the new ones.

The FOV is the mask in --masks named like the image (<stem>.*, <stem>_mask.*; any non-zero
value is inside; fov_source "mask"), else estimated from the photograph (scripts/fov.py;
"estimated"; "whole image" where no disc is found). Everything outside it is background.

Exit status: 0 when every image was segmented, 1 when some failed (see the CSV), 2 for an
error in the arguments or the weights (one line on stderr), 130 / 143 when Ctrl-C / SIGTERM
stopped it: the batch being predicted is finished and predictions.csv written (a second one
stops at once, the CSV not written); the same command with --resume does the rest.

Examples:
    python predict.py --weights DRIVE_AV/sigmoid_seed42 --input photos --output predictions
    python predict.py --weights bfnet.pth --input "scans/*.jpg" list.txt --output out --tta
    python predict.py --weights run42 run40 run38 --input photos --output out   # ensemble
    python -m torch.distributed.run --standalone --nproc_per_node 2 predict.py --weights ... \\
        --input photos --output out        # two processes (GPUs or CPU), one merged CSV
"""
import argparse
import csv
import datetime
import glob
import hashlib
import json
import os
import signal
import sys
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from tqdm import tqdm

from scripts import distributed, evaluate
from scripts.bundle import load_any, pretrained_bundle
from scripts.checkpoint import atomic_write, atomic_write_csv, describe, make_folder
from scripts.cli import BAR_INTERVAL, ArgumentParser
from scripts.config import DATASETS, VARIANTS, ConfigError, check_image_size
from scripts.data import exif_orientation, open_header, read_image, read_mask
from scripts.device import (MEMORY_FORMAT, amp_dtype_for, describe_precision, keep_freed_memory, pick_device,
                            one_torch_thread_here, thread_count_restored)
from scripts.evaluate import compile_for_inference, full_size_picture, predict_probs, write_png
from scripts.fov import estimate_fov
from scripts.metrics import CLASS_COLOURS, class_map
from scripts.stopping import EXIT_STATUS, StopRequest, Terminated, signal_of, signals_handled_by

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
MASK_EXTS = IMAGE_EXTS + (".gif",)
LIST_EXTS = (".txt", ".lst", ".list")
CSV_FIELDS = ["path", "output", "status", "reason", "width", "height", "artery_fraction", "vein_fraction",
              "uncertain_fraction", "vessel_density", "av_ratio", "fov_source", "notes"]
OUTPUT_FILES = {"classes": "_classes.png", "colour": "_colour.png", "overlay": "_overlay.png",
                "uncertainty": "_uncertainty.png", "probs": "_probs.npz"}  # name endings per image
OPTIONAL_OUTPUTS = ("uncertainty", "probs")  # ensembles only; --save-probs only
OUTPUT_PICTURES = tuple(v for v in OUTPUT_FILES.values() if v.endswith(".png"))
FALLBACK_SIZE = DATASETS["DRIVE_AV"].size  # for checkpoints that do not save their input size
PARTIAL = ".predictions.rank{}.csv"
RUN_RECORD = "predict_run.json"  # the weights and settings behind an output folder
MIN_FOV = 0.05  # an estimated FOV below this share of the image is not trusted
MAX_ENLARGEMENT = 2.0  # a photograph enlarged more than this to the networks' size gets a note
MAX_ASPECT_CHANGE = 1.2  # a photograph whose width/height the networks' input changes more than this gets a note
MIN_FOV_STD = 2.0  # grey levels, per channel: a FOV flatter than this has nothing to segment (a blank frame)


# ----------------------------------------------------------------------------- inputs

@dataclass
class Item:
    path: str                  # as found (shown in the CSV)
    rel: str                   # relative stem under --output, posix ('sub/01_test')
    missing: Optional[str] = None  # an input argument that matched nothing


def _is_image(p: Path):
    return p.suffix.lower() in IMAGE_EXTS and not p.name.startswith(".")


def _in_an_output_folder(f: Path, base: Path, output: Optional[Path]) -> bool:
    """Under --output, or under a folder holding a predictions.csv (up to the searched folder)."""
    rf, base = f.resolve(), base.resolve()
    if output is not None and rf.is_relative_to(output):
        return True
    for d in rf.parents:
        if (d / "predictions.csv").is_file():
            return True
        if d == base:
            return False
    return False


def _not_a_photograph(f: Path, base: Path, output: Optional[Path], masks: Optional[Path]) -> bool:
    """Not a photograph to segment: a mask of --masks (unless the masks lie among the
    photographs themselves), or an output of this program (an output file name in an output
    folder)."""
    if masks is not None and masks != base.resolve() and f.resolve().is_relative_to(masks):
        return True
    return f.name.endswith(OUTPUT_PICTURES) and _in_an_output_folder(f, base, output)


def _rel_stem(p: Path, base: Path) -> str:
    try:
        rel = p.resolve().relative_to(base.resolve())
    except ValueError:
        rel = Path(p.name)
    return rel.with_suffix("").as_posix()


def any_case_extension(pattern: str) -> str:
    """A glob whose file extension matches in any case ('*.jpg' -> '*.[jJ][pP][gG]'), as a
    folder's search does: cameras write .JPG, and a cohort often mixes both."""
    head, dot, ext = pattern.rpartition(".")
    if not dot or not ext.isalnum():  # no plain extension at the end ('x/*', 'a.d/*', '*.t?f', 'x[.ab]')
        return pattern
    return head + dot + "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in ext)


def find_inputs(specs, output=None, masks=None):
    """Items for every input argument (sorted per argument, duplicates dropped) and warnings
    about arguments that matched nothing. Folders and globs skip ``masks`` and the outputs of
    earlier runs (see ``_not_a_photograph``); files named explicitly are always taken."""
    output = Path(output).resolve() if output else None
    masks = Path(masks).resolve() if masks else None
    items, seen, warnings = [], set(), []

    def add(p: Path, base: Path):
        key = str(p.resolve())
        if key not in seen:
            seen.add(key)
            items.append(Item(str(p), _rel_stem(p, base)))

    for spec in specs:
        p = Path(spec)
        if p.is_dir():
            files = [f for f in p.rglob("*") if f.is_file() and not f.name.startswith(".")]
            found = sorted(f for f in files if _is_image(f) and not _not_a_photograph(f, p, output, masks))
            for f in found:
                add(f, p)
            if not found:
                warnings.append(f"{spec}: no images ({' '.join(IMAGE_EXTS)}) in this folder")
            else:  # e.g. .webp or .dcm photographs, which would otherwise vanish unsaid
                other = sorted({f.suffix.lower() or f.name for f in files if not _is_image(f)
                                and not (masks is not None and f.resolve().is_relative_to(masks))
                                and not _in_an_output_folder(f, p, output)})
                if other:
                    warnings.append(f"{spec}: files of other types skipped ({', '.join(other[:8])}"
                                    f"{', ...' if len(other) > 8 else ''}); images are {' '.join(IMAGE_EXTS)}")
        elif p.is_file() and p.suffix.lower() in LIST_EXTS:
            try:
                lines = p.read_text().splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                warnings.append(f"{spec}: cannot read list file ({exc})")
                continue
            paths = [Path(s) if Path(s).is_absolute() else p.parent / s
                     for s in (line.strip() for line in lines) if s and not s.startswith("#")]
            if not paths:
                warnings.append(f"{spec}: empty list file")
                continue
            base = Path(os.path.commonpath([str(q.resolve().parent) for q in paths]))
            for q in paths:
                if q.is_file():
                    add(q, base)
                elif str(q.resolve()) not in seen:
                    why = "a folder; a list names image files" if q.is_dir() else "not found"
                    items.append(Item(str(q), _rel_stem(q, base), missing=f"listed in {spec}, but {why}"))
                    seen.add(str(q.resolve()))
        elif p.is_file() or p.is_symlink():
            add(p, p.parent)
        elif glob.has_magic(spec):
            found = sorted({Path(f) for f in glob.glob(any_case_extension(spec), recursive=True)})
            base = Path(spec)
            while glob.has_magic(str(base)):
                base = base.parent
            found = [f for f in found if f.is_file() and _is_image(f) and not _not_a_photograph(f, base, output, masks)]
            for f in found:
                add(f, base)
            if not found:
                warnings.append(f"{spec}: no images match this pattern")
        else:
            items.append(Item(str(p), p.with_suffix("").name, missing="file or folder not found"))
            seen.add(str(p.resolve()))
    # Two inputs with one output name (a.jpg and a.png, or the same relative path under two
    # input folders): keep the extension, then number them.
    counts = {}
    for it in items:
        counts[it.rel] = counts.get(it.rel, 0) + 1
    taken = set()
    for it in items:
        if counts[it.rel] > 1:
            rel = f"{it.rel}_{Path(it.path).suffix.lstrip('.').lower()}"
            n, candidate = 1, rel
            while candidate in taken or candidate in counts:
                n += 1
                candidate = f"{rel}_{n}"
            it.rel = candidate
        taken.add(it.rel)
    return items, warnings


class MaskFinder:
    """FOV masks in a folder, named like the image: <rel stem>, <stem>, either with _mask."""

    def __init__(self, folder):
        self.folder = Path(folder) if folder else None
        self.by_rel, self.by_stem = {}, {}
        if self.folder is None:
            return
        if not self.folder.is_dir():
            raise ConfigError(f"--masks {folder}: no such folder")
        for f in sorted(self.folder.rglob("*")):
            if f.is_file() and f.suffix.lower() in MASK_EXTS:
                self.by_rel.setdefault(f.relative_to(self.folder).with_suffix("").as_posix(), f)
                self.by_stem.setdefault(f.stem, f)

    def find(self, item: Item):
        if self.folder is None:
            return None
        stem = Path(item.path).stem
        for table, key in ((self.by_rel, item.rel), (self.by_rel, item.rel + "_mask"),
                           (self.by_stem, stem), (self.by_stem, stem + "_mask")):
            if key in table:
                return table[key]
        return None


# ----------------------------------------------------------------------------- outputs

def output_paths(out_dir: Path, item: Item, ensemble: bool, save_probs: bool):
    base = out_dir / item.rel
    keys = ["classes", "colour", "overlay"] + ["uncertainty"] * ensemble + ["probs"] * save_probs
    return {k: base.parent / (base.name + OUTPUT_FILES[k]) for k in keys}


def remove_stale_outputs(paths):
    """The optional outputs this run does not write, left by an earlier run of other settings
    (removed once this image's new outputs are written, so no file of those settings stays)."""
    classes = paths["classes"]
    stem = classes.name[:-len(OUTPUT_FILES["classes"])]
    for key in OPTIONAL_OUTPUTS:
        if key not in paths:
            (classes.parent / (stem + OUTPUT_FILES[key])).unlink(missing_ok=True)


def fingerprint(path) -> str:
    """SHA-256 of a photograph's file: how --resume recognises it, wherever it has moved."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def printable_path(path) -> str:
    """The absolute path as text a PNG can hold (undecodable bytes of a file name replaced)."""
    return str(Path(path).resolve()).encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def write_classes(path, cls, source: str, source_sha256: str, orientation: int = 1):
    """The class map as an index PNG with a palette. Its text fields name the photograph it
    was made from ('source', its path; 'source_sha256', its content) and the EXIF orientation
    it was read with ('orientation'), which --resume checks before it counts an image as done."""
    def write(tmp):
        img = Image.fromarray(cls)  # uint8 HxW: mode L
        img.putpalette(CLASS_COLOURS.ravel().tolist())  # becomes an index ('P') image
        info = PngInfo()
        info.add_text("source", source)
        info.add_text("source_sha256", source_sha256)
        info.add_text("orientation", str(orientation))
        img.save(tmp, format="PNG", compress_level=1, pnginfo=info)
    atomic_write(path, write)


def made_from(classes_png: Path) -> dict:
    """The 'source', 'source_sha256' and 'orientation' of a class map (None in maps of versions
    that did not record them; those read every photograph as stored, orientation 1). The text
    precedes the pixels in the file: nothing is decoded."""
    with Image.open(classes_png) as img:
        return {k: img.info.get(k) for k in ("source", "source_sha256", "orientation")}


def overlay(rgb, cls, alpha):
    out = rgb.copy()
    vessel = cls > 0
    blend = (1 - alpha) * rgb[vessel].astype(np.float32) + alpha * CLASS_COLOURS[cls[vessel]]
    out[vessel] = blend.round().clip(0, 255).astype(np.uint8)
    return out


def statistics(cls, fov):
    """Fractions of the FOV pixels; empty strings where undefined."""
    n_fov = int(fov.sum())
    counts = np.bincount(cls[fov].ravel(), minlength=4) if n_fov else np.zeros(4, np.int64)
    a, v, u = int(counts[1]), int(counts[2]), int(counts[3])
    frac = (lambda k: f"{k / n_fov:.6f}") if n_fov else (lambda k: "")
    return {"artery_fraction": frac(a), "vein_fraction": frac(v), "uncertain_fraction": frac(u),
            "vessel_density": frac(a + v + u), "av_ratio": f"{a / v:.6f}" if v else ""}


def _reason(exc, path):
    text = str(exc).strip() or type(exc).__name__
    prefix = f"{path}: "
    text = text[len(prefix):] if text.startswith(prefix) else text
    return " ".join(text.split())  # one line in the CSV


# ----------------------------------------------------------------------------- work per image

@dataclass
class Prepared:
    item: Item
    rgb: np.ndarray              # HxWx3 uint8, original size
    fov: np.ndarray              # HxW bool
    fov_source: str
    resized: dict                # (W, H) -> 3xHxW uint8 tensor
    sha256: str = ""             # of the photograph's file (written into the class map)
    notes: tuple = ()            # why its maps may be poor, how it was turned: on stderr and in the CSV
    orientation: int = 1         # the EXIF orientation applied (1: as stored)


def read_fov(item, rgb, masks: MaskFinder, turn=1):
    mask_path = masks.find(item)
    if mask_path is None:
        fov = estimate_fov(rgb)
        if fov.mean() < MIN_FOV:  # no disc found (not a fundus photograph?): use everything
            return np.ones_like(fov), "whole image"
        return fov, "estimated"
    fov = read_mask(mask_path, upright=True)
    if fov.shape != rgb.shape[:2]:
        turned = f" as viewers show it (EXIF orientation {turn})" if turn != 1 else ""
        raise ValueError(f"its mask {mask_path} is {fov.shape[1]} x {fov.shape[0]}, the image{turned} "
                         f"{rgb.shape[1]} x {rgb.shape[0]}")
    return fov, "mask"


def prepare(item: Item, sizes, masks: MaskFinder) -> Prepared:
    if item.missing:
        raise FileNotFoundError(item.missing)
    rgb = read_image(item.path, upright=True)
    if rgb.ndim != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ValueError(f"unusable image of shape {rgb.shape}")
    turn = photo_orientation(item.path)
    fov, source = read_fov(item, rgb, masks, turn)
    resized = {s: torch.from_numpy(np.array(Image.fromarray(rgb).resize(s, Image.BILINEAR))).permute(2, 0, 1)
               for s in sizes}
    notes = orientation_note(turn, source) + image_notes(rgb, fov, source, sizes, masks)
    return Prepared(item, rgb, fov, source, resized, fingerprint(item.path), notes, turn)


def photo_orientation(path) -> int:
    """The EXIF orientation a photograph is read with (1: as stored), from its header."""
    with open_header(path) as img:
        return exif_orientation(img)


def orientation_note(turn: int, fov_source: str) -> tuple:
    """Photographs are read as image viewers show them (a phone's or camera's EXIF orientation
    tag applied), and their outputs are made the same way up; so must their masks be."""
    if turn == 1:
        return ()
    mask = ("; its mask is taken as drawn on the photograph as viewers show it" if fov_source == "mask" else "")
    return (f"turned as image viewers show it (EXIF orientation {turn}), as are its outputs{mask}",)


def image_notes(rgb, fov, fov_source, sizes, masks: MaskFinder) -> tuple:
    """photo_notes, and a mask of --masks not found for it."""
    notes = photo_notes(rgb, fov, sizes)
    if masks.folder is not None and fov_source != "mask":
        notes += (f"no mask named like it in --masks {masks.folder}; FOV {fov_source}",)
    return notes


def photo_notes(rgb, fov, sizes) -> tuple:
    """What about a photograph makes poor maps likely; it is segmented all the same."""
    notes = []
    if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
        notes.append("a greyscale photograph; the networks learned from colour ones "
                     "(artery and vein differ in colour), so expect poorer maps")
    h, w = rgb.shape[:2]
    net_w, net_h = max(sizes, key=lambda s: max(s[0] / w, s[1] / h))  # the largest enlargement
    if max(net_w / w, net_h / h) > MAX_ENLARGEMENT:
        notes.append(f"a small photograph ({w} x {h}), enlarged over {MAX_ENLARGEMENT:g}x to the networks' "
                     f"{net_w} x {net_h}: its vessels are blurred, so expect poorer maps")
    for net_w, net_h in sizes:
        change = (net_w / net_h) / (w / h)
        if max(change, 1 / change) > MAX_ASPECT_CHANGE:
            notes.append(f"its {w} x {h} is resized to the networks' {net_w} x {net_h}, which "
                         f"{'stretches' if change > 1 else 'squeezes'} it {max(change, 1 / change):.2f}x "
                         f"horizontally: the networks learned from undistorted photographs, so expect poorer maps")
            break
    every_4th = (slice(None, None, 4), slice(None, None, 4))  # a sample is enough for a spread
    if fov[every_4th].any() and rgb[every_4th][fov[every_4th]].std(axis=0).max() < MIN_FOV_STD:
        notes.append("nearly uniform inside its FOV (a blank or failed capture?): nothing to segment")
    return tuple(notes)


class Ensemble:
    """One or more (Networks, size) members on one device; probabilities at the first
    member's size (others resized bilinearly to it)."""

    def __init__(self, members, device, amp_dtype, tta, batch_size):
        self.members, self.device, self.amp_dtype, self.tta = members, device, amp_dtype, tta
        self.batch_size = batch_size  # a smaller last batch is padded to it for compiled networks
        self.activation = members[0][0].activation
        self.size = members[0][1]

    @property
    def sizes(self):
        return sorted({s for _, s in self.members})

    def _one(self, nets, images):
        p = predict_probs(nets, images, self.batch_size, self.device, self.amp_dtype)
        if self.tta:
            p = (p + predict_probs(nets, images.flip(-1), self.batch_size, self.device, self.amp_dtype).flip(-1)) / 2
        return p

    def __call__(self, batch):
        outs = []
        for nets, size in self.members:
            p = self._one(nets, torch.stack([b.resized[size] for b in batch]))
            if size != self.size:
                p = F.interpolate(p, size=(self.size[1], self.size[0]), mode="bilinear", align_corners=False)
            outs.append(p)
        if len(outs) == 1:
            return outs[0], None
        stacked = torch.stack(outs)
        return stacked.mean(0), stacked.std(0, unbiased=False).amax(1)


def write_outputs(prep: Prepared, probs, std, paths, activation, alpha):
    h, w = prep.rgb.shape[:2]
    pic = full_size_picture(probs, (w, h), prep.fov, activation)
    cls = class_map(pic)  # the decoding rule of the published metrics
    write_classes(paths["classes"], cls, printable_path(prep.item.path), prep.sha256, prep.orientation)
    write_png(paths["colour"], pic)
    write_png(paths["overlay"], overlay(prep.rgb, cls, alpha))
    if "uncertainty" in paths:
        full = F.interpolate(std[None, None], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
        grey = (full * 510).round().clamp(0, 255).to(torch.uint8).numpy()
        grey[~prep.fov] = 0
        write_png(paths["uncertainty"], grey)
    if "probs" in paths:
        full = F.interpolate(probs[None], size=(h, w), mode="bilinear", align_corners=False)[0]
        arrays = {"probs": full.half().numpy(), "channels": np.array(VARIANTS[activation].channels), "fov": prep.fov}
        save_npz(paths["probs"], arrays)
    remove_stale_outputs(paths)
    return row(prep.item, "ok", "", w, h, prep.fov_source, statistics(cls, prep.fov), "; ".join(prep.notes))


def save_npz(path, arrays):
    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
    atomic_write(path, write)


def row(item, status, reason, w="", h="", fov_source="", stats=None, notes=""):
    r = {k: "" for k in CSV_FIELDS}
    r.update(path=item.path, output=item.rel, status=status, reason=reason, width=w, height=h, fov_source=fov_source,
             notes=notes)
    r.update(stats or {})
    return r


def resumed_row(item, paths, previous, masks, sizes):
    """The CSV row of an image done by an earlier run: its old row (with a notes column, which
    CSVs of older versions lack), else recomputed from the written class map."""
    old = previous.get(item.path)
    if old and old.get("status") == "ok" and "notes" in old:
        return {**{k: old.get(k, "") for k in CSV_FIELDS}, "output": item.rel}
    with Image.open(paths["classes"]) as picture:
        cls = np.asarray(picture)
    rgb = read_image(item.path, upright=True)
    turn = photo_orientation(item.path)
    fov, source = read_fov(item, rgb, masks, turn)
    return row(item, "ok", "", cls.shape[1], cls.shape[0], source, statistics(cls, fov),
               "; ".join(orientation_note(turn, source) + image_notes(rgb, fov, source, sizes, masks)))


# ----------------------------------------------------------------------------- CSV

def read_rows(path):
    try:
        with open(path, newline="") as f:
            return [r for r in csv.DictReader(f) if r.get("path")]
    except (OSError, csv.Error, UnicodeDecodeError):
        return []


def previous_rows_by_path(path):
    return {r["path"]: r for r in read_rows(path)}


def write_csv(path, rows):
    atomic_write_csv(path, sorted(rows, key=lambda r: r["path"]), CSV_FIELDS)


# ----------------------------------------------------------------------------- main

def default_weights(activation):
    """The shipped DRIVE_AV bundle of the variant asked for (sigmoid, the paper's, by default)."""
    path = pretrained_bundle("DRIVE_AV", activation or "sigmoid")
    if not path.is_file():
        raise ConfigError(f"no --weights given and no shipped bundle at {path}: train a model (README: Train) "
                          f"or pass --weights")
    return [str(path)]


def compiled(nets, size, batch_size, device, amp_dtype, log):
    """``compile_for_inference`` with the compile done now, on a dummy batch of the real shape
    and precision (autocast is part of what is compiled), so that a machine where it cannot
    work gets one clear error instead of a failure per image."""
    log(f"compiling the networks for {size[0]} x {size[1]} (tens of seconds to a minute on a CPU) ...")
    compile_for_inference(nets)
    try:
        predict_probs(nets, torch.zeros(batch_size, 3, size[1], size[0], dtype=torch.uint8), batch_size, device,
                      amp_dtype)
    except Exception as exc:  # inductor raises many types (no compiler, unsupported device, ...)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"--compile failed ({type(exc).__name__}: {first}); run without --compile") from None
    return nets


@dataclass
class Member:
    """One set of weights of the ensemble (often the only one)."""
    nets: torch.nn.Module
    size: tuple          # network input (W, H)
    cfg: dict            # the configuration saved with the weights
    weights: str         # as given on the command line
    sha256: str          # of the weight values: what --resume compares


def weights_sha256(nets) -> str:
    """A fingerprint of the values of the networks prediction uses (G, and G_A, G_V unless the
    fusion is 'none'; fp32, names included), whatever file held them. D is never loaded."""
    digest = hashlib.sha256()
    for part in nets.generator_names:
        for name, tensor in sorted(getattr(nets, part).state_dict().items()):
            digest.update(f"{part}.{name}".encode())
            digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def load_members(args, device, amp_dtype, log):
    expected = {"activation": args.activation, "base_width": args.base_width}
    members = []
    for w in args.weights or default_weights(args.activation):
        nets, cfg = load_any(w, expected)
        sha256 = weights_sha256(nets)
        if args.image_size:
            size = check_image_size(args.image_size)
        elif cfg.get("image_size"):
            size = check_image_size(cfg["image_size"])
        else:
            size = FALLBACK_SIZE
            log(f"note: {w} saves no input size; using {size[0]} x {size[1]} (DRIVE_AV's): set --image-size")
        nets = nets.to(device, memory_format=MEMORY_FORMAT)
        if args.compile:
            nets = compiled(nets, size, args.batch_size, device, amp_dtype, log)
        members.append(Member(nets, size, cfg, w, sha256))
    for i, m in enumerate(members):
        twin = next((o for o in members[:i] if o.sha256 == m.sha256), None)
        if twin is not None:
            log(f"note: {m.weights} holds the same weights as {twin.weights} (SHA-256 of their values): "
                f"this ensemble counts them twice")
    if len({m.cfg["activation"] for m in members}) > 1:
        raise ConfigError("the weights of an ensemble must be one variant: " + ", ".join(
            f"{m.weights} is {m.cfg['activation']}" for m in members))
    return members


def run_record(args, members, amp_dtype) -> dict:
    """What made the outputs of this run: written to predict_run.json, compared by --resume."""
    return {"weights": [{"given": m.weights, "sha256": m.sha256, "networks": describe(m.cfg),
                         "input_size": list(m.size), "about": m.cfg.get("about", "")} for m in members],
            "tta": args.tta, "precision": describe_precision(amp_dtype),
            "masks": str(Path(args.masks).resolve()) if args.masks else "estimated from each photograph",
            "overlay_alpha": args.overlay_alpha}


def earlier_run(out_dir: Path) -> str:
    """What an earlier run left in --output ('' if nothing): a new run must neither drop its CSV
    rows nor leave its pictures beside the new ones unsaid, so it needs --resume or --overwrite."""
    rows = read_rows(out_dir / "predictions.csv")
    if rows:
        return f"predictions.csv of {len(rows)} image(s)"
    return f"{RUN_RECORD}, no CSV: an interrupted run" if (out_dir / RUN_RECORD).is_file() else ""


def remove_earlier_run(out_dir: Path) -> int:
    """--overwrite: delete the files of the earlier run, nothing else in the folder: the outputs
    of the images its predictions.csv names and of every class map that names its photograph
    (so those of an interrupted run, which wrote no CSV, too), the CSV, its per-process parts
    and predict_run.json. Returns the number of files deleted."""
    inside = out_dir.resolve()
    stems = {r.get("output") or "" for r in read_rows(out_dir / "predictions.csv")} - {""}
    for classes in out_dir.rglob("*" + OUTPUT_FILES["classes"]):
        try:
            if made_from(classes)["source"] is not None:
                stems.add(classes.relative_to(out_dir).as_posix()[:-len(OUTPUT_FILES["classes"])])
        except Exception:  # noqa: BLE001 - not a readable map of this program: not ours to delete
            pass
    files = [out_dir / (stem + suffix) for stem in stems for suffix in OUTPUT_FILES.values()]
    files += [out_dir / "predictions.csv", out_dir / RUN_RECORD, *out_dir.glob(PARTIAL.format("*"))]
    removed, emptied = 0, set()
    for path in files:
        if path.resolve().is_relative_to(inside) and path.is_file():
            path.unlink()
            removed += 1
            emptied.update(out_dir / d for d in path.relative_to(out_dir).parents if d != Path("."))
    for d in sorted(emptied, key=lambda d: len(d.parts), reverse=True):  # sub-folders it leaves empty
        if d.is_dir() and not any(d.iterdir()):
            d.rmdir()
    return removed


def check_resume(out_dir: Path, record: dict):
    """--resume adds to an output folder only when it was made with the same weights and
    settings (paths aside: the same values under another name are the same weights)."""
    path = out_dir / RUN_RECORD
    if not path.is_file():
        return
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--resume: cannot read {path} ({exc}); use another --output") from None

    def comparable(rec):
        return {**rec, "weights": [{k: v for k, v in w.items() if k != "given"} for w in rec.get("weights", [])]}
    new, old = comparable(record), comparable(old)
    words = {"tta": "--tta setting", "precision": "precision (--amp)", "masks": "--masks",
             "overlay_alpha": "--overlay-alpha"}
    changed = [words.get(k, k) for k in new if new[k] != old.get(k)]
    if changed:
        raise ConfigError(f"--resume: {out_dir} was made with other {', '.join(changed)} (see {path}); "
                          f"use another --output, or --overwrite to replace that run")


def default_workers():
    """The usable cores, at most 8, shared among torchrun's processes on this node."""
    return max(1, evaluate.default_workers() // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def build_parser():
    p = ArgumentParser(prog="python predict.py", description=__doc__)
    p.add_argument("--weights", "-w", nargs="+", action="extend", default=None,
                   help="run folder(s), bundle file(s) or index JSON(s); several = an ensemble "
                        f"(default: the shipped bundle pretrained/{pretrained_bundle().name})")
    p.add_argument("--input", "-i", nargs="+", action="extend", required=True,
                   help="folder(s) (recursive), glob(s), list file(s) or image file(s); -i a -i b adds up")
    p.add_argument("--output", "-o", required=True, help="output folder")
    p.add_argument("--masks", default=None, help="folder of FOV masks named like the images "
                                                 "(default: estimate the FOV from each photograph)")
    p.add_argument("--image-size", type=int, nargs=2, metavar=("W", "H"), default=None, dest="image_size",
                   help="network input size, multiples of 16 (default: the one saved with the weights)")
    p.add_argument("--batch-size", "-b", type=int, default=2, dest="batch_size",
                   help="images per forward pass (default %(default)s)")
    p.add_argument("--device", default="", help="cuda, cuda:1, cpu (default: cuda when present)")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=False,
                   help="mixed precision (CUDA, CPUs with AVX512-BF16/AMX): about 2x faster inference on "
                        "such a CPU, outputs then differ slightly between machines (default: fp32)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the networks with their weights frozen, for large cohorts: a compile of "
                        "tens of seconds per member; on a 2-core CPU it gained only 1.03-1.3x (README: Performance)")
    p.add_argument("--tta", action="store_true", help="average with the prediction of the mirrored image")
    p.add_argument("--save-probs", action="store_true", dest="save_probs",
                   help="also write <stem>_probs.npz (float16 probabilities at the original size)")
    p.add_argument("--resume", action="store_true",
                   help="skip images whose outputs all exist and were made from the same photograph (its "
                        "SHA-256 in the class map); refuses a folder whose predict_run.json names other weights or "
                        "settings, and outputs of another photograph under the same name")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the earlier run in --output: its files (those its predictions.csv names or "
                        "whose class map names its photograph, so an interrupted run's too), the CSV and "
                        "predict_run.json are deleted first; nothing else (without --resume or --overwrite, a "
                        "folder holding an earlier run is refused)")
    p.add_argument("--overlay-alpha", type=float, default=0.6, dest="overlay_alpha",
                   help="opacity of the class colours in _overlay.png (default %(default)s)")
    p.add_argument("--workers", type=int, default=default_workers(),
                   help="threads decoding and writing images, while the networks work (default: the usable "
                        "cores, at most 8, shared among the processes of one node under torchrun: %(default)s)")
    p.add_argument("--activation", choices=list(VARIANTS), default=None,
                   help="check the weights are this variant; without --weights, which shipped bundle")
    p.add_argument("--base-width", type=int, default=None, dest="base_width",
                   help="check the weights have this width")
    return p


def run(args, stop_request: Optional[StopRequest] = None) -> int:
    """Segment the inputs; the exit status. ``stop_request``: the handler of Ctrl-C and SIGTERM
    that main() installed (a first one stops after the current batch, with the CSV written)."""
    for option, value in (("--batch-size", args.batch_size), ("--workers", args.workers)):
        if value < 1:
            raise ConfigError(f"{option} {value}: must be at least 1")
    if not 0 <= args.overlay_alpha <= 1:
        raise ConfigError("--overlay-alpha must be in [0, 1]")
    # Each rank waits for the others at the end: up to 12 h, for cohorts split unevenly.
    ctx = distributed.init(pick_device(args.device).type, timeout=datetime.timedelta(hours=12))
    finished = False
    try:
        code = _run(args, ctx, stop_request or StopRequest())
        finished = True
        return code
    finally:
        ctx.close(wait=finished)


def _run(args, ctx: distributed.Context, stop_request: StopRequest) -> int:
    main = ctx.rank == 0
    log = (lambda m: tqdm.write(m, file=sys.stderr)) if main else (lambda m: None)
    out_dir = Path(args.output)
    masks = MaskFinder(args.masks)
    # Inputs first: a wrong path fails in one line, before the networks load.
    items, warnings = ctx.broadcast(find_inputs(args.input, output=out_dir, masks=args.masks) if main else None)
    if all(it.missing for it in items):  # nothing to segment: what each argument lacked, in one line
        missing = [it.path for it in items]
        raise ConfigError("; ".join(([f"file or folder not found: {' '.join(missing)}"] if missing else [])
                                    + warnings) or f"no images found in {' '.join(args.input)}")
    for w in warnings:
        log(f"warning: {w}")
    if args.resume and args.overwrite:
        raise ConfigError("--resume adds to an earlier run, --overwrite replaces it: give one")
    earlier = ctx.broadcast(earlier_run(out_dir) if main and out_dir.is_dir() else "")  # one view for all ranks
    if earlier and not (args.resume or args.overwrite):
        raise ConfigError(f"--output {out_dir} holds an earlier run ({earlier}): --resume adds to it (same weights "
                          f"and settings), --overwrite replaces it (its files are deleted first), or choose another "
                          f"--output")
    device = pick_device(args.device, ctx.local_rank)
    keep_freed_memory()
    amp_dtype = amp_dtype_for(device, args.amp)
    if args.amp and amp_dtype is None:
        log(f"note: --amp: {device.type} has no native bf16/fp16 here, so this runs in fp32")
    members = load_members(args, device, amp_dtype, log)
    ensemble = Ensemble([(m.nets, m.size) for m in members], device, amp_dtype, args.tta, args.batch_size)
    record = run_record(args, members, amp_dtype)
    if args.resume:
        check_resume(out_dir, record)
    mine = [it for i, it in enumerate(items) if i % ctx.world == ctx.rank]
    done_rows, todo, conflicts = plan(mine, out_dir, len(members) > 1, masks, args, ensemble.sizes)
    if ctx.sum(len(conflicts)):
        raise ConfigError(conflicts[0] if conflicts else f"--resume: outputs in {out_dir} were made from other "
                                                         f"photographs (another process says which)")
    make_folder(out_dir, "--output")  # one line for a file of that name, before any image
    for m in members:
        log(f"{m.weights}: {describe(m.cfg)}, input {m.size[0]} x {m.size[1]}")
        if m.cfg.get("about"):
            log(f"  about these weights: {m.cfg['about']}")
    if args.overwrite and earlier:
        if main:
            log(f"--overwrite: deleted the earlier run's {remove_earlier_run(out_dir)} file(s) in {out_dir}")
        ctx.sum(0)  # no rank writes before they are gone
    if main:
        atomic_write(out_dir / RUN_RECORD, lambda tmp: Path(tmp).write_text(json.dumps(record, indent=2)))
        log(f"{len(items)} image(s){f' over {ctx.world} processes' if ctx.enabled else ''}; "
            f"{'ensemble of ' + str(len(members)) if len(members) > 1 else 'one network'}"
            f"{', with flip TTA' if args.tta else ''}; device {device}, {describe_precision(amp_dtype)}")
    kept = rows_kept_by_resume(out_dir, items) if args.resume and main else []
    skipped = ctx.sum(len(done_rows)) if args.resume else 0
    if skipped:
        log(f"--resume: {skipped} image(s) already done, skipped")
    # From here to the end a first Ctrl-C / SIGTERM ends the batch and the CSV is still written:
    # a rank never leaves the others waiting in the collectives below.
    stop_request.graceful = True
    rows, failed = segment(todo, ensemble, masks, args, show_progress=main, stop_request=stop_request)
    total_failed = write_predictions_csv(out_dir, done_rows + rows + kept, failed, ctx)
    handled = ctx.sum(len(done_rows) + len(rows))  # every rank takes part in both sums
    stopped = ctx.sum(stop_request.signum is not None)  # one rank may have been signalled alone
    stop_request.graceful = False
    if stopped and handled < len(items):
        signum = stop_request.signum or signal.SIGTERM  # a rank not signalled itself stops as by SIGTERM
        log(f"{signal_name(signum)}: stopped with {handled - total_failed} of {len(items)} image(s) segmented, "
            f"{total_failed} failed; wrote {out_dir}/predictions.csv; the same command with --resume does the rest")
        return EXIT_STATUS[signum]
    if main:
        log(f"{len(items) - total_failed} of {len(items)} image(s) segmented, {total_failed} failed; "
            f"wrote {out_dir}/predictions.csv")
    return 1 if total_failed else 0


def signal_name(signum) -> str:
    return signal.Signals(signum).name


def same_photograph(classes_png: Path, item: Item) -> Optional[bool]:
    """--resume: whether an existing class map was made from this photograph (by content, so a
    moved input folder still resumes); None when that cannot be told (a map of an older
    version, or an unreadable file)."""
    try:
        recorded = made_from(classes_png)["source_sha256"]
        return None if recorded is None else recorded == fingerprint(item.path)
    except Exception:  # noqa: BLE001 - unreadable map or photograph: predict again (and report)
        return None


def same_way_up(classes_png: Path, item: Item) -> bool:
    """--resume: whether a class map was made with the photograph turned as it is read now."""
    try:
        return int(made_from(classes_png)["orientation"] or 1) == photo_orientation(item.path)
    except Exception:  # noqa: BLE001 - unreadable map or photograph: predict again (and report)
        return False


def plan(items, out_dir, is_ensemble, masks, args, sizes):
    """(CSV rows of the images an earlier run finished (--resume), [(item, output paths) to do],
    conflicts). With --resume an image is done when all its outputs exist and its class map
    was made from this photograph; a class map of another photograph under the same output
    name is a conflict, never overwritten. Maps of older versions (no fingerprint) count as
    done when the earlier CSV row names this photograph, else they are made again; so are maps
    made the other way up (an EXIF-tagged photograph read as stored by an older version)."""
    previous = previous_rows_by_path(out_dir / "predictions.csv") if args.resume else {}
    done_rows, todo, conflicts = [], [], []
    for it in items:
        paths = output_paths(out_dir, it, is_ensemble, args.save_probs)
        if args.resume and not it.missing and paths["classes"].is_file():
            same = same_photograph(paths["classes"], it)
            if same is False:
                source = made_from(paths["classes"])["source"]
                if source == printable_path(it.path):
                    conflicts.append(f"--resume: {it.path} has changed since {paths['classes']} was made from it "
                                     f"(another SHA-256); use another --output, or --overwrite to replace the whole "
                                     f"earlier run")
                else:
                    conflicts.append(f"--resume: {paths['classes']} was made from another photograph ({source}) "
                                     f"than {it.path}, which takes the same output name; use another --output")
                continue
            complete = all(p.is_file() for p in paths.values()) and same_way_up(paths["classes"], it)
            if complete and (same or previous.get(it.path, {}).get("output") == it.rel):
                try:
                    done_rows.append(resumed_row(it, paths, previous, masks, sizes))
                    continue
                except Exception:  # noqa: BLE001 - an unreadable old output: predict again
                    pass
        todo.append((it, paths))
    return done_rows, todo, conflicts


def rows_kept_by_resume(out_dir, items):
    """--resume: the earlier CSV rows of images not in this run (their outputs are untouched)."""
    paths, outputs = {it.path for it in items}, {it.rel for it in items}
    return [r for r in read_rows(out_dir / "predictions.csv") if r["path"] not in paths and r["output"] not in outputs]


def segment(todo, ensemble, masks, args, show_progress=True, stop_request=None):
    """Segment and write every (item, paths): (CSV rows, number failed). Decoding the next
    batch and writing the last one's files run in threads while the networks work; a file
    that fails is recorded and the rest go on. A stop request (Ctrl-C, SIGTERM) ends the loop
    after the current batch, once its files are written."""
    rows, failed = [], []

    def fail(item, exc):
        reason = _reason(exc, item.path)
        rows.append(row(item, "failed", reason))
        failed.append(item)
        tqdm.write(f"failed: {item.path}: {reason}", file=sys.stderr)

    def collect(entry):
        item, fut = entry
        try:
            rows.append(fut.result())
        except Exception as exc:  # noqa: BLE001
            fail(item, exc)

    batches = [todo[i:i + args.batch_size] for i in range(0, len(todo), args.batch_size)]

    def run_batches(pool, bar):
        def submit(k):
            return [pool.submit(prepare, it, ensemble.sizes, masks) for it, _ in batches[k]] if k < len(batches) else []

        ahead = submit(0)
        writes = deque()
        for k, batch in enumerate(batches):
            futures, ahead = ahead, submit(k + 1)  # decode the next batch while this one runs
            ready = []
            for (it, paths), fut in zip(batch, futures):
                try:
                    ready.append((fut.result(), paths))
                except Exception as exc:  # noqa: BLE001 - one bad file never stops the run
                    fail(it, exc)
                    continue
                for note in ready[-1][0].notes:
                    tqdm.write(f"note: {it.path}: {note}", file=sys.stderr)
            if ready:
                try:
                    probs, std = ensemble([p for p, _ in ready])
                except Exception as exc:  # noqa: BLE001 - e.g. out of memory: these images fail
                    for p, _ in ready:
                        fail(p.item, RuntimeError(f"prediction failed: {_reason(exc, '')}"))
                    ready = []
                for j, (p, paths) in enumerate(ready):
                    writes.append((p.item, pool.submit(write_outputs, p, probs[j], None if std is None else std[j],
                                                       paths, ensemble.activation, args.overlay_alpha)))
            while len(writes) > max(2 * args.batch_size, args.workers):  # bounds the memory held
                collect(writes.popleft())
            bar.update(len(batch))
            if stop_request is not None and stop_request.signum is not None:
                for fut in ahead:  # the next batch's decoding: not needed now
                    fut.cancel()
                break
        while writes:
            collect(writes.popleft())

    # The threads work with torch on one thread each, as test.py's scoring: the full-size resize
    # rounds a few pixels differently on other thread counts, and the networks keep the cores.
    # The bar is closed on the way out, also when a second Ctrl-C stops at once (before its message).
    with tqdm(total=len(todo), desc="predict", unit="img", disable=not show_progress, dynamic_ncols=True,
              mininterval=BAR_INTERVAL) as bar, \
            thread_count_restored(), ThreadPoolExecutor(max_workers=args.workers,
                                                        initializer=one_torch_thread_here) as pool:
        try:
            run_batches(pool, bar)
        except BaseException:  # a second Ctrl-C: what is queued is dropped; only what runs is awaited
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return rows, len(failed)


def write_predictions_csv(out_dir, rows, failed, ctx) -> int:
    """One predictions.csv for the run: each rank writes its part, rank 0 merges them once all
    are written. Returns the number of failed images over all ranks."""
    if not ctx.enabled:
        write_csv(out_dir / "predictions.csv", rows)
        return failed
    write_csv(out_dir / PARTIAL.format(ctx.rank), rows)
    total_failed = ctx.sum(failed)  # also: every rank has written its part
    if ctx.is_main:
        merged = []
        for r in range(ctx.world):
            merged.extend(read_rows(out_dir / PARTIAL.format(r)))
        write_csv(out_dir / "predictions.csv", merged)
        for part in out_dir.glob(PARTIAL.format("*")):  # also those of an interrupted earlier run
            part.unlink(missing_ok=True)
    ctx.sum(0)  # nobody leaves before the merged CSV is written
    return total_failed


def main(argv=None):
    args = build_parser().parse_args(argv)
    # Ctrl-C and SIGTERM (kill, a scheduler's stop) end the current batch, write predictions.csv
    # and exit 130 / 143; a second one, or one before the images, stops at once in one line.
    stop_request = StopRequest("after this batch, with its outputs and predictions.csv written")
    with signals_handled_by(stop_request):
        try:
            code = run(args, stop_request)
        except ConfigError as exc:
            if distributed.launched_as_rank_zero():  # under torchrun every process meets it: one line
                print(f"error: {exc}", file=sys.stderr)
            code = 2
        except (KeyboardInterrupt, Terminated) as exc:
            signum = signal_of(exc)
            if distributed.launched_as_rank_zero():
                print(f"\n{signal_name(signum)}: stopped at once; the outputs written so far are kept (not "
                      f"predictions.csv): the same command with --resume does the rest", file=sys.stderr)
            code = EXIT_STATUS[signum]
    sys.exit(code)


if __name__ == "__main__":
    main()
