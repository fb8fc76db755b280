"""predict.py --resume: which earlier outputs in --output a run keeps and which it makes again.

A run adds to a folder only when it was made with the same weights and settings
(``check_resume``); an image keeps the output name the earlier run gave it (``inputs_named``);
an image is done when all its outputs exist and its class map was made from this photograph,
the same way up (``plan``); the CSV rows of earlier images not in this run stay
(``rows_kept_by_resume``). A class map of another photograph under the same name is a
conflict, never overwritten.
"""
import json
import os
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image

from scripts.config import ConfigError
from scripts.data import read_image
from scripts.predict_inputs import (Item, find_inputs, fingerprint, image_notes, orientation_note, pages_note,
                                    photo_orientation, read_fov)
from scripts.predict_outputs import (CSV_FIELDS, OUTPUT_FILES, PREDICTIONS_CSV, RUN_RECORD, made_from, output_paths,
                             previous_rows_by_path, printable_path, read_rows, row, statistics)


def check_resume(out_dir: Path, record: dict, precision_note: str = ""):
    """--resume adds to an output folder only when it was made with the same weights and
    settings (paths aside: the same values under another name are the same weights).
    ``precision_note``: why --amp gives fp32 on this machine, said when the precision differs."""
    path = out_dir / RUN_RECORD
    if not path.is_file():
        return
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--resume: cannot read {path} ({exc}); use another --output") from None

    def comparable(rec):  # the weights by their values: not by path, nor by a bundle's --about text
        return {**rec, "weights": [{k: v for k, v in w.items() if k not in ("given", "about")}
                                   for w in rec.get("weights", [])]}
    new, old = comparable(record), comparable(old)
    words = {"tta": "--tta setting", "precision": "precision (--amp)", "masks": "--masks",
             "overlay_alpha": "overlay"}

    def shown(key, value):  # a setting as the options that give it
        if key == "overlay_alpha":
            return "--no-overlay" if value is None else f"--overlay-alpha {value:g}"
        return ("--tta" if value else "no --tta") if key == "tta" else str(value)
    changed = [words.get(k, k) + ("" if k == "weights" else f" ({shown(k, old.get(k))} there, {shown(k, new[k])} now)")
               for k in new if new[k] != old.get(k)]
    if changed:
        why = f" ({precision_note}: resume it on a machine where it pays)" if (
            precision_note and new.get("precision") != old.get("precision")) else ""
        raise ConfigError(f"--resume: {out_dir} was made with other {', '.join(changed)}{why} (see {path}); "
                          f"use another --output, or --overwrite to replace that run")


def invocations(out_dir: Path, resume: bool) -> list:
    """The earlier invocations an output folder's predict_run.json lists, which a --resume keeps
    (none where there are none, or where a version before them wrote it)."""
    if not resume:
        return []
    try:
        earlier = json.loads((out_dir / RUN_RECORD).read_text()).get("invocations")
    except (OSError, ValueError, AttributeError):
        return []
    return earlier if isinstance(earlier, list) else []


def rows_kept_by_resume(out_dir, items):
    """--resume: the earlier CSV rows of images not in this run (their outputs are untouched)."""
    paths, outputs = {it.path for it in items}, {it.rel for it in items}
    return [r for r in read_rows(out_dir / PREDICTIONS_CSV) if r["path"] not in paths and r.get("output") not in outputs]


def source_of(out_dir: Path, output: str) -> Optional[str]:
    """The photograph an earlier output was made from, as its class map names it (an absolute
    path: the CSV's may be relative to another working folder); None where it cannot say."""
    try:
        return made_from(out_dir / (output + OUTPUT_FILES["classes"]))["source"]
    except Exception:  # noqa: BLE001 - missing or unreadable map: the CSV's path then
        return None


def inputs_named(inputs, out_dir: Path, masks: Optional[str], resume: bool):
    """find_inputs; with ``resume``, an image the earlier run segmented keeps the output name it
    had there (the name depends on how the image is given: one photograph of a folder run
    given again alone, or beside a new photograph of the same stem, would get another name
    and be segmented twice, its old outputs left behind)."""
    items, warnings = find_inputs(inputs, output=out_dir, masks=masks)
    if not resume:
        return items, warnings
    rows = read_rows(out_dir / PREDICTIONS_CSV)
    as_before = {(r["path"], r.get("output")) for r in rows}
    strays = [it for it in items if (it.path, it.rel) not in as_before]  # given otherwise than before
    if strays:
        earlier = {}  # the photograph's real path -> its earlier output name
        for r in rows:
            if r.get("output"):  # a relative path may be from another working folder: its map says
                path = os.path.realpath(r["path"]) if os.path.isabs(r["path"]) else source_of(out_dir, r["output"])
                earlier.setdefault(path or os.path.realpath(r["path"]), r["output"])
        taken = {it.rel for it in items}
        for it in strays:
            name = earlier.get(os.path.realpath(it.path))
            if name and name not in taken:
                taken.discard(it.rel)
                it.rel = name
                taken.add(name)
    return items, warnings


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


def plan(items, out_dir, kinds, masks, sizes, resume):
    """(CSV rows of the images an earlier run finished (--resume), [(item, output paths) to do],
    conflicts). With --resume an image is done when all its outputs exist and its class map
    was made from this photograph; a class map of another photograph under the same output
    name is a conflict, never overwritten. Maps of older versions (no fingerprint) count as
    done when the earlier CSV row names this photograph, else they are made again; so are maps
    made the other way up (an EXIF-tagged photograph read as stored by an older version).
    ``kinds``: the outputs written per image (outputs.output_kinds)."""
    previous = previous_rows_by_path(out_dir / PREDICTIONS_CSV) if resume else {}
    done_rows, todo, conflicts = [], [], []
    for it in items:
        paths = output_paths(out_dir, it, kinds)
        if resume and not it.missing and paths["classes"].is_file():
            same = same_photograph(paths["classes"], it)
            if same is False:
                source = made_from(paths["classes"])["source"]
                if source == printable_path(it.path):
                    conflicts.append(f"--resume: {it.path} has changed since {paths['classes']} was made from it "
                                     f"(another SHA-256); delete its outputs ({out_dir / it.rel}_*) to segment it "
                                     f"again, use another --output, or --overwrite to replace the whole earlier run")
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
    conflicts += files_in_the_way(out_dir, todo)
    return done_rows, todo, conflicts


def _written_here(classes_png: Path) -> bool:
    """Whether a class map is one predict.py wrote (it names its photograph)."""
    try:
        return made_from(classes_png)["source"] is not None
    except Exception:  # noqa: BLE001 - missing, or not a map of this program
        return False


def files_in_the_way(out_dir: Path, todo) -> list:
    """One line (a conflict) if a file predict.py did not write has the name of an output this run
    would write or remove as stale: a photograph named like an output (eye_colour.png beside
    eye.jpg, with --output the input folder) or a file of one's own. Never overwritten: an output
    name is predict.py's where its class map names a photograph, or the earlier predictions.csv
    names it (maps of older versions)."""
    earlier = {r.get("output") for r in read_rows(out_dir / PREDICTIONS_CSV)}
    in_the_way = []
    for it, paths in todo:
        classes = paths["classes"]
        stem = classes.name[:-len(OUTPUT_FILES["classes"])]
        taken = [f for f in (classes.parent / (stem + suffix) for suffix in OUTPUT_FILES.values()) if os.path.lexists(f)]
        if taken and it.rel not in earlier and not _written_here(classes):
            in_the_way.append((it, taken[0]))
    if not in_the_way:
        return []
    it, first = in_the_way[0]
    more = f" (and {len(in_the_way) - 1} more image(s) alike)" if len(in_the_way) > 1 else ""
    return [f"--output {out_dir}: {first} is in the way of the outputs of {it.path}, and predict.py did not write it "
            f"(a photograph or a file of your own){more}: move it, or choose another --output"]


def resumed_row(item, paths, previous, masks, sizes):
    """The CSV row of an image done by an earlier run: its old row where it has every column (CSVs
    of older versions lack notes, fov_fraction and sha256; a resume of such a CSV leaves the last two
    empty in the rows of images it was not given), else recomputed: the fractions from the written
    class map, the rest from the photograph and its mask."""
    old = previous.get(item.path)
    if old and old.get("status") == "ok" and "notes" in old and old.get("fov_fraction") and old.get("sha256"):
        return {**{k: old[k] for k in CSV_FIELDS}, "output": item.rel}
    with Image.open(paths["classes"]) as picture:
        cls = np.asarray(picture)
    rgb = read_image(item.path, upright=True)
    turn = photo_orientation(item.path)
    fov, source = read_fov(item, rgb, masks, turn)
    sha256 = made_from(paths["classes"])["source_sha256"] or fingerprint(item.path)  # the map's: checked by plan()
    return row(item, "ok", "", cls.shape[1], cls.shape[0], source, statistics(cls, fov),
               "; ".join(orientation_note(turn, source) + pages_note(item.path)
                         + image_notes(item, rgb, fov, source, sizes, masks)), sha256)
