"""predict.py's output folder: the files it writes per image, predictions.csv (a part per
process under torchrun, merged at the end), predict_run.json, and how a later run reads them
(--overwrite deletes exactly an earlier run's files; scripts/predict_resume.py decides what --resume
keeps).
"""
import csv
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from scripts.config import VARIANTS, ConfigError
from scripts.evaluate import full_size_picture
from scripts.files import atomic_write, atomic_write_csv, unescaped, write_png
from scripts.metrics import CLASS_COLOURS, class_map

if TYPE_CHECKING:  # the inputs import this module's names; these are for the annotations only
    from scripts.predict_inputs import Item, Prepared

PREDICTIONS_CSV = "predictions.csv"
CSV_FIELDS = ["path", "output", "status", "reason", "width", "height", "artery_fraction", "vein_fraction",
              "uncertain_fraction", "vessel_density", "av_ratio", "fov_source", "fov_fraction", "sha256", "notes"]
OUTPUT_FILES = {"classes": "_classes.png", "colour": "_colour.png", "overlay": "_overlay.png",
                "uncertainty": "_uncertainty.png", "probs": "_probs.npz"}  # name endings per image
OPTIONAL_OUTPUTS = ("overlay", "uncertainty", "probs")  # not with --no-overlay; ensembles only; --save-probs only
OUTPUT_PICTURES = tuple(v for v in OUTPUT_FILES.values() if v.endswith(".png"))
PARTIAL = ".predictions.rank{}.csv"
RUN_RECORD = "predict_run.json"  # the weights and settings behind an output folder


def output_kinds(ensemble: bool, save_probs: bool, overlay: bool = True) -> list:
    """The keys of OUTPUT_FILES a run writes for each image."""
    return ["classes", "colour"] + ["overlay"] * overlay + ["uncertainty"] * ensemble + ["probs"] * save_probs


def output_paths(out_dir: Path, item: "Item", kinds) -> dict:
    base = out_dir / item.rel
    return {k: base.parent / (base.name + OUTPUT_FILES[k]) for k in kinds}


def remove_stale_outputs(paths):
    """The optional outputs this run does not write, left by an earlier run of other settings
    (removed once this image's new outputs are written, so no file of those settings stays)."""
    classes = paths["classes"]
    stem = classes.name[:-len(OUTPUT_FILES["classes"])]
    for key in OPTIONAL_OUTPUTS:
        if key not in paths:
            (classes.parent / (stem + OUTPUT_FILES[key])).unlink(missing_ok=True)


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
    """Fractions of the FOV pixels (empty strings where undefined), and the FOV's fraction of the
    image: a class's area in pixels is its fraction x fov_fraction x width x height."""
    n_fov = int(fov.sum())
    counts = np.bincount(cls[fov].ravel(), minlength=4) if n_fov else np.zeros(4, np.int64)
    a, v, u = int(counts[1]), int(counts[2]), int(counts[3])
    frac = (lambda k: f"{k / n_fov:.6f}") if n_fov else (lambda k: "")
    return {"artery_fraction": frac(a), "vein_fraction": frac(v), "uncertain_fraction": frac(u),
            "vessel_density": frac(a + v + u), "av_ratio": f"{a / v:.6f}" if v else "",
            "fov_fraction": f"{n_fov / fov.size:.6f}"}


def one_line_reason(exc, path):
    """An exception as the CSV's reason: its message on one line, without the photograph's path it may begin with."""
    text = str(exc).strip() or type(exc).__name__
    prefix = f"{path}: "
    text = text[len(prefix):] if text.startswith(prefix) else text
    return " ".join(text.split())  # one line in the CSV


def write_outputs(prep: "Prepared", probs, std, paths, activation, alpha):
    h, w = prep.rgb.shape[:2]
    pic = full_size_picture(probs, (w, h), prep.fov, activation)
    cls = class_map(pic)  # the decoding rule of the published metrics
    write_classes(paths["classes"], cls, printable_path(prep.item.path), prep.sha256, prep.orientation)
    write_png(paths["colour"], pic)
    if "overlay" in paths:
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
    return row(prep.item, "ok", "", w, h, prep.fov_source, statistics(cls, prep.fov), "; ".join(prep.notes),
               prep.sha256)


def save_npz(path, arrays):
    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
    atomic_write(path, write)


def row(item, status, reason, w="", h="", fov_source="", stats=None, notes="", sha256=""):
    r = {k: "" for k in CSV_FIELDS}
    r.update(path=item.path, output=item.rel, status=status, reason=reason, width=w, height=h, fov_source=fov_source,
             notes=notes, sha256=sha256)
    r.update(stats or {})
    return r


def read_rows(path):
    """predictions.csv's rows, their path and output naming the files again (``unescaped``)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # a BOM, if re-saved by a spreadsheet
            rows = [r for r in csv.DictReader(f) if r.get("path")]
    except (OSError, csv.Error, UnicodeDecodeError):
        return []
    for r in rows:
        r.update({k: unescaped(r[k]) for k in ("path", "output") if r.get(k)})
    return rows


def previous_rows_by_path(path):
    return {r["path"]: r for r in read_rows(path)}


def write_csv(path, rows):
    atomic_write_csv(path, sorted(rows, key=lambda r: r["path"]), CSV_FIELDS)


def earlier_run(out_dir: Path) -> str:
    """What an earlier run left in --output ('' if nothing): a new run must neither drop its CSV
    rows nor leave its pictures beside the new ones unsaid, so it needs --resume or --overwrite.
    A predictions.csv of another program is one line: neither is for it."""
    if (out_dir / PREDICTIONS_CSV).is_file() and not holds_a_run(out_dir):
        raise ConfigError(f"--output {out_dir} holds a {PREDICTIONS_CSV} that predict.py did not write (its columns "
                          f"are not {', '.join(CSV_FIELDS[:2])}, ...): choose another --output")
    rows = read_rows(out_dir / PREDICTIONS_CSV)
    if rows:
        return f"predictions.csv of {len(rows)} image(s)"
    return f"{RUN_RECORD}, no CSV: an interrupted run" if (out_dir / RUN_RECORD).is_file() else ""


def remove_earlier_run(out_dir: Path) -> int:
    """--overwrite: delete the files of the earlier run, nothing else in the folder: the outputs
    of the images its predictions.csv names and of every class map that names its photograph
    (so those of an interrupted run, which wrote no CSV, too), the CSV, its per-process parts
    and predict_run.json. A sub-folder holding a run of its own (its predictions.csv or
    predict_run.json) is left alone. Returns the number of files deleted."""
    inside = out_dir.resolve()
    stems = {r.get("output") or "" for r in read_rows(out_dir / PREDICTIONS_CSV)} - {""}
    for classes in out_dir.rglob("*" + OUTPUT_FILES["classes"]):
        if _in_a_run_of_its_own(classes, out_dir):
            continue
        try:
            if made_from(classes)["source"] is not None:
                stems.add(classes.relative_to(out_dir).as_posix()[:-len(OUTPUT_FILES["classes"])])
        except Exception:  # noqa: BLE001 - not a readable map of this program: not ours to delete
            pass
    files = [out_dir / (stem + suffix) for stem in stems for suffix in OUTPUT_FILES.values()]
    files += [out_dir / PREDICTIONS_CSV, out_dir / RUN_RECORD, *out_dir.glob(PARTIAL.format("*"))]
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


def check_no_other_run_in_the_way(out_dir: Path, items) -> None:
    """One ConfigError line where this run's files would mix with another run's: --output inside
    the output folder of another run that has files there (its CSV names outputs under --output;
    an interrupted one, without a CSV: any class map there), or an image whose outputs would go
    into a sub-folder of --output that holds a run of its own."""
    real = out_dir.resolve()
    for d in real.parents:
        if holds_a_run(d) and _has_files_under(d, real):
            shown = f"{out_dir} ({real})" if Path(os.path.abspath(out_dir)) != real else str(out_dir)
            raise ConfigError(f"--output {shown} lies inside {d}, the output folder of another run with files there: "
                              f"they would mix; choose an --output outside it")
    if not out_dir.is_dir():
        return
    first_of_folder = {}  # each output folder looked at once, however many images go there
    for it in items:
        first_of_folder.setdefault((out_dir / it.rel).parent, it)
    for folder, it in first_of_folder.items():
        if _in_a_run_of_its_own(folder / OUTPUT_FILES["classes"], out_dir):
            raise ConfigError(f"--output {out_dir}: the outputs of {it.path} would go to {folder}, which holds "
                              f"another run (its {PREDICTIONS_CSV} or {RUN_RECORD}); choose another --output")


def _has_files_under(run_dir: Path, folder: Path) -> bool:
    """Whether the run in ``run_dir`` has outputs in ``folder``, a folder below it."""
    prefix = folder.relative_to(run_dir).as_posix() + "/"
    rows = read_rows(run_dir / PREDICTIONS_CSV)
    if rows:
        return any((r.get("output") or "").startswith(prefix) for r in rows)
    return folder.is_dir() and any(folder.rglob("*" + OUTPUT_FILES["classes"]))  # an interrupted run: no CSV


def holds_a_run(folder: Path) -> bool:
    """Whether ``folder`` is a predict.py output folder: its predict_run.json, or a
    predictions.csv of this program's columns (not any file of that common name)."""
    if os.path.isfile(folder / RUN_RECORD):  # no PermissionError from a folder it may not enter
        return True
    try:
        with open(folder / PREDICTIONS_CSV, newline="", encoding="utf-8-sig") as f:  # a BOM, if re-saved
            return next(csv.reader(f), [])[:2] == CSV_FIELDS[:2]  # path, output
    except (OSError, UnicodeDecodeError, csv.Error):
        return False


def _in_a_run_of_its_own(path: Path, out_dir: Path) -> bool:
    """Whether a folder between ``path`` and ``out_dir`` holds another run (``holds_a_run``)."""
    return any(d != Path(".") and holds_a_run(out_dir / d) for d in path.relative_to(out_dir).parents)


def write_predictions_csv(out_dir, rows, failed, ctx) -> int:
    """One predictions.csv for the run: each rank writes its part, rank 0 merges them once all
    are written. Returns the number of failed images over all ranks."""
    if not ctx.enabled:
        write_csv(out_dir / PREDICTIONS_CSV, rows)
        return failed
    write_csv(out_dir / PARTIAL.format(ctx.rank), rows)
    total_failed = ctx.sum(failed)  # also: every rank has written its part
    if ctx.is_main:
        merged = []
        for r in range(ctx.world):
            merged.extend(read_rows(out_dir / PARTIAL.format(r)))
        write_csv(out_dir / PREDICTIONS_CSV, merged)
        for part in out_dir.glob(PARTIAL.format("*")):  # also those of an interrupted earlier run
            part.unlink(missing_ok=True)
    ctx.sum(0)  # nobody leaves before the merged CSV is written
    return total_failed
