"""Score prediction pictures made by anything (another method, predict.py, an earlier test.py)
on a data set's test images, with the published protocol and the segment metric.

    python -m scripts.score --dataset DRIVE_AV --predictions other_method/
    python -m scripts.score --dataset LES-AV --predictions out/ --suffix _colour   # predict.py's

Each test image <name> needs <predictions>/<name><suffix>.png at the photograph's own size:
a colour picture, R artery, G uncertain, B vein (test.py's raw_pre, predict.py's _colour.png
and _classes.png, the original project's pictures), decoded as test.py decodes its own (a
channel is on above 127; README, Metrics), or a single-channel class map 0..3 (0 background,
1 artery, 2 vein, 3 uncertain, as the labels). Every file is read and checked before any is
scored. Only the FOV counts. The probability extras come from the picture's 8-bit values (a
class map's are 0 or 255): they are not those test.py computes from a network's probabilities.

Several folders (a method's seeds, say) are scored as runs: the summary holds the mean ± std over
them, as test.py's over seeds.

Writes metrics.csv, summary.json (as test.py's, a run per predictions folder; `python -m
scripts.compare` reads it) and mixed_segments/<name>.png (per folder when several) to --output,
and prints the table.
"""
import functools
import json
import os
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from . import metrics, segments
from .cli import FRESH_LINE, ArgumentParser, progress_bar
from .config import ConfigError, dataset_names, dataset_spec
from .data import DataError, find_samples, load_truth, open_header, transparent, truth_fingerprint
from .evaluate import default_workers, in_threads, score_image, usable_cores
from .evaluation_outputs import RUNS_BEING_TESTED, STAGING, run_names
from .files import FolderLock, atomic_write, atomic_write_csv, write_png
from .predict_outputs import OUTPUT_FILES, holds_a_run
from .stopping import EXIT_STATUS, StopRequest, Terminated, said_of, signal_of, signals_handled_by

SUMMARY = "summary.json"
IN_PROGRESS = ".scoring_in_progress"  # a new folder's mark until its summary is in: a stopped scoring is ours too
SCORES_STAGING = ".scores_being_written"  # a scoring's files until it is complete (publish_scores)
PICTURE_MODES = ("RGB", "RGBA", "P", "PA")   # colour (transparent pixels background)
CLASS_MAP_MODES = ("L", "LA")                # one channel: classes 0..3
NOT_A_TEST = ("raw_pre", "small_pre", RUNS_BEING_TESTED, STAGING)  # what test.py writes into its folders


def _palette_picture(img, path, hidden) -> np.ndarray:
    """A palette picture as it shows; refused where its indices look like classes 0..3 but its
    colours are not the class colours (a label map saved with some other palette). ``hidden``:
    its transparent pixels (``transparent``), whose indices do not show."""
    indices = np.asarray(img)[..., 0] if img.mode == "PA" else np.asarray(img)
    if hidden is not None:  # the indices that show (a transparent white is black)
        indices = indices[~hidden]
    used = np.flatnonzero(np.bincount(indices.ravel(), minlength=256))
    palette = np.asarray(img.getpalette() or [], dtype=np.uint8).reshape(-1, 3)
    if used.max(initial=0) <= 3 and not (len(palette) > used.max(initial=0)
                                         and (palette[used] == metrics.CLASS_COLOURS[used]).all()):
        raise DataError(f"{path}: a palette picture of indices {used.tolist()} whose colours are not the class "
                        f"colours: save the classes as a one-channel map 0..3 (mode L) or the colours as RGB")
    return np.asarray(img.convert("RGB"))


def _as_background(picture, hidden) -> np.ndarray:
    """``picture`` with its transparent pixels (``hidden``, or None) set to 0, as scripts.labels
    reads a label drawn on a transparent layer."""
    if hidden is not None:
        picture = picture.copy()
        picture[hidden] = 0
    return picture


def read_prediction(path, size) -> np.ndarray:
    """HxWx3 uint8 picture of a prediction file for a photograph of ``size`` (W, H): a colour
    picture as it shows, or a class map 0..3 in the class colours; one line for anything else."""
    img = open_header(path)
    try:
        if img.format != "PNG":  # lossy JPEG data changes the colours at every vessel edge
            raise DataError(f"{path}: {img.format} data in a .png file: save the prediction as a real PNG")
        if img.mode not in PICTURE_MODES + CLASS_MAP_MODES:
            raise DataError(f"{path}: mode {img.mode}: give an 8-bit colour picture (R artery, G uncertain, B vein) "
                            f"or an 8-bit class map 0..3")
        if img.size != tuple(size):
            turned = " (turned by an EXIF orientation?)" if img.size == tuple(size)[::-1] else ""
            raise DataError(f"{path}: {img.size[0]} x {img.size[1]}, but the test image {Path(path).stem} is "
                            f"{size[0]} x {size[1]}{turned}: predictions are scored at the photograph's own size")
        hidden = transparent(img)
        if img.mode in ("RGB", "RGBA"):
            return _as_background(np.asarray(img.convert("RGB")), hidden)
        if img.mode in ("P", "PA"):
            return _as_background(_palette_picture(img, path, hidden), hidden)
        classes = _as_background(np.asarray(img.convert("L")), hidden)
        if classes.max(initial=0) > 3:
            raise DataError(f"{path}: a single-channel picture with values up to {classes.max()}: give a class "
                            f"map 0..3 (0 background, 1 artery, 2 vein, 3 uncertain) or a colour picture (R "
                            f"artery, G uncertain, B vein)")
        return metrics.CLASS_COLOURS[classes]
    except OSError as exc:  # truncated or corrupt pixel data
        raise DataError(f"{path}: cannot decode image ({exc})") from None
    finally:
        img.close()


def default_output(folder) -> Path:
    """<DIR>_scores beside the predictions folder as given ('.' too; a link's name, not its
    target's). For test.py's pictures (Final_pre/raw_pre, Final_pre/<run>/raw_pre) beside the
    test's folder instead (Final_pre_raw_pre_scores): test.py's next test there replaces what its
    summary describes, and scores inside it would outlive the pictures they were made of."""
    given = Path(os.path.abspath(folder))
    for test_dir in (given.parent, given.parent.parent) if given.name == "raw_pre" else ():
        if _written_by_test(test_dir):
            return test_dir.parent / f"{test_dir.name}_{'_'.join(given.relative_to(test_dir).parts)}_scores"
    return given.parent / f"{given.name or 'predictions'}_scores"


def _written_by_test(folder: Path) -> bool:
    """Whether ``folder`` is test.py's output folder (its summary.json, or a test in progress)."""
    if any((folder / name).exists() for name in (RUNS_BEING_TESTED, STAGING)):
        return True
    try:
        summary = json.loads((folder / SUMMARY).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(summary, dict) and "run_details" in summary and "scored" not in summary


def _found_elsewhere(folder: Path, name: str, suffix: str) -> str:
    """Where ``name``'s picture is when it is not at ``folder``'s top level with ``suffix``: in a
    sub-folder (predict.py keeps a data set folder's images/ sub-folder), or with predict.py's
    suffixes; the options that read it ('' when not found)."""
    subs = sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")
                   and p.name not in ("mixed_segments", "small_pre")),  # test.py's that are no predictions
                  key=lambda p: (p.name != "raw_pre", p.name))
    for other in dict.fromkeys([suffix, OUTPUT_FILES["colour"][:-4], OUTPUT_FILES["classes"][:-4]]):
        with_suffix = f" --suffix {other}" if other != suffix else ""
        if other != suffix and (folder / f"{name}{other}.png").is_file():
            return with_suffix.strip()
        for sub in subs:
            if (sub / f"{name}{other}.png").is_file():
                return f"--predictions {sub}{with_suffix}"
    return ""


def _how_to_read(folder: Path, samples, suffix: str) -> str:
    """For a folder holding no <name><suffix>.png at all: what would read the first test image's
    picture (the options, or another file format), or that nothing is named after a test image."""
    name = samples[0].name
    elsewhere = _found_elsewhere(folder, name, suffix)
    if elsewhere:
        return f"{name} is read with {elsewhere}"
    files = sorted(p.name for p in folder.iterdir() if p.is_file())
    other_format = next((f for f in files if Path(f).stem == f"{name}{suffix}"), None)
    if other_format:  # 01_test.jpg, 01_test.PNG, 01_test.tif
        return f"{other_format} is not read: save the pictures as PNG files named <name>{suffix}.png"
    other_suffix = next((f[len(name):-4] for f in files if f.startswith(name) and f.endswith(".png")), None)
    if other_suffix is not None:  # 01_test_pred.png, or 01_test.png under --suffix _colour
        return f"{name} is read with --suffix {other_suffix}" if other_suffix else f"{name} is read without --suffix"
    if not any(f.startswith(s.name) for f in files for s in samples):
        return (f"no file is named after a test image of this data set ({', '.join(s.name for s in samples[:2])}, "
                f"...): another data set's predictions? (--dataset)")
    return "--suffix?"


def prediction_files(samples, folder: Path, suffix: str, workers: int = 1) -> list:
    """The prediction file of each test image, every one read and checked (``read_prediction``)
    before any is scored; those missing named together."""
    if suffix.lower().endswith((".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")):
        raise ConfigError(f"--suffix {suffix}: the part between the image's name and .png (e.g. _colour); only "
                          f"PNG files are read")
    if suffix in (OUTPUT_FILES["overlay"][:-4], OUTPUT_FILES["uncertainty"][:-4]) and holds_a_run(folder):
        raise ConfigError(f"--suffix {suffix}: predict.py's {suffix}.png pictures are not predictions to score "
                          f"(the overlay blends the photograph in; the uncertainty map is a spread): "
                          f"--suffix _colour or _classes")
    paths = [folder / f"{s.name}{suffix}.png" for s in samples]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        more = f" (and {len(missing) - 3} more)" if len(missing) > 3 else ""
        hint = ""
        if len(missing) == len(paths):  # none found: what the folder holds instead
            held = sorted(e.name + ("/" if e.is_dir() else "") for e in folder.iterdir() if not e.name.startswith("."))[:3]
            hint = (f"; it holds e.g. {', '.join(held)}: only <name>{suffix}.png at its top level is read "
                    f"({_how_to_read(folder, samples, suffix)})" if held else "; it is empty")
        raise ConfigError(f"{folder}: no {', '.join(missing[:3])}{more} for {len(missing)} of the {len(samples)} "
                          f"test images (<name>{suffix}.png){hint}")

    def check(i):
        with open_header(samples[i].image) as photograph:
            read_prediction(paths[i], photograph.size)

    for _ in progress_bar(in_threads(check, len(samples), workers), total=len(samples), desc="check", leave=False):
        pass
    return paths


def _recorded_run(run: str, out_dir: Path) -> str:
    """The real path of a prediction folder as an older summary recorded it (as given, perhaps
    relative to another working folder): from here, else beside the scores (the default output,
    <predictions>_scores, lies beside its predictions)."""
    beside = [Path(out_dir).parent / run]
    if Path(out_dir).name == f"{Path(run).name}_scores":  # given as a path from another folder: its name beside
        beside.append(Path(out_dir).parent / Path(run).name)
    if not os.path.isabs(run) and not os.path.exists(run):
        for there in beside:
            if there.exists():
                return os.path.realpath(there)
    return os.path.realpath(run)


def check_output(out_dir: Path, folders, overwrite=False) -> bool:
    """Whether ``out_dir`` holds an earlier scoring of this tool's (its summary.json, or the mark
    of one that was stopped), which is then replaced. Refused: a prediction folder (this one's
    or predict.py's), a folder of test.py's (its summary, pictures or a test in progress), one
    holding a summary.json, metrics.csv or mixed_segments/ this did not write, one inside a test
    of test.py's whose pictures it scores (a next test replaces them), and, unless ``overwrite``,
    the scores of other prediction folders than ``folders``."""
    predictions = {os.path.realpath(f) for f in folders}
    if os.path.realpath(out_dir) in predictions or holds_a_run(out_dir):
        raise ConfigError(f"--output {out_dir}: a folder of predictions; the scores go into a folder of their own "
                          f"(default: <predictions>_scores beside it)")
    try:
        earlier = json.loads((out_dir / SUMMARY).read_text()) if (out_dir / SUMMARY).is_file() else None
    except (OSError, ValueError):
        earlier = None
    ours = (isinstance(earlier, dict) and "scored" in earlier) or (out_dir / IN_PROGRESS).is_file()
    test = next((folder for folder in Path(os.path.realpath(out_dir)).parents[:3] if _written_by_test(folder)), None)
    if test and any(Path(p).name in ("raw_pre", "small_pre") and Path(p).is_relative_to(test) for p in predictions):
        raise ConfigError(f"--output {out_dir} lies inside test.py's folder {test}, whose pictures it scores: a next "
                          f"test there replaces them, and these scores would outlive them; choose an --output "
                          f"outside it (default: beside it)")
    foreign = [name for name in NOT_A_TEST if (out_dir / name).exists()]
    if not ours:
        foreign += [name for name in (SUMMARY, "metrics.csv", "mixed_segments") if (out_dir / name).exists()]
    if foreign:
        raise ConfigError(f"--output {out_dir} holds {', '.join(foreign)}, which this did not write (a test.py "
                          f"test, or files of your own): choose another --output")
    if ours and isinstance(earlier, dict) and not overwrite:
        scored = earlier.get("run_paths") or [_recorded_run(r, out_dir) for r in earlier.get("runs") or ()]
        others = [r for r in scored if r not in predictions]
        if others:
            raise ConfigError(f"--output {out_dir} holds the scores of {', '.join(others)}, which this scoring does "
                              f"not repeat: --overwrite replaces them, or another --output keeps both")
    return ours


def publish_scores(out_dir: Path, stage: Path):
    """Put the complete scoring in ``stage`` in place of an earlier one in ``out_dir``: the
    earlier summary.json first (no summary is ever beside pictures it does not describe), its
    metrics.csv and pictures, then the new pictures, metrics.csv, and summary.json last."""
    for name in (SUMMARY, "metrics.csv"):
        (out_dir / name).unlink(missing_ok=True)
    shutil.rmtree(out_dir / "mixed_segments", ignore_errors=True)
    for name in ("mixed_segments", "metrics.csv", SUMMARY):
        os.replace(stage / name, out_dir / name)


def picture_facts(picture, fov) -> dict:
    """What picture_notes and prediction_kinds read of one picture: whether it holds one class
    per pixel (class colours only), the share of the FOV predicted vessel, and the shares of the
    vessel pixels with R and B on and G off (no A/V decision) and with all three on (grey)."""
    inside = picture[fov]                                       # the FOV's pixels, N x 3
    on = inside >= 128                                          # R, G, B on
    vessel, undecided = on.any(axis=1), on[:, 0] & on[:, 2] & ~on[:, 1]
    one_class = bool(np.isin(inside, (0, 255)).all() and ((inside == 255).sum(axis=1) <= 1).all())
    return {"kind": "one class per pixel" if one_class else "probability colours",
            "vessel_share": float(vessel.mean()) if vessel.size else 0.0,
            "undecided_share": float(undecided.sum() / max(vessel.sum(), 1)),
            "grey_share": float(on.all(axis=1).sum() / max(vessel.sum(), 1))}


def score_one(sample, path, pictures: Path, split_threads=None, settings=segments.DEFAULT_SETTINGS):
    """The metrics of one test image's prediction file (with its ``picture_facts``); its
    picture of the mixed segments written to ``pictures``/<name>.png."""
    label, fov = load_truth(sample)
    picture = read_prediction(path, (label.shape[1], label.shape[0])).copy()
    picture[~fov] = 0  # as test.py's raw_pre: only the FOV counts
    split = segments.split_segments(label, fov, settings.min_length, threads=split_threads)
    result, mixed = score_image(label, picture, fov, split, settings=settings)
    result["picture"] = picture_facts(picture, fov)
    drawing = segments.draw_mixed_segments(picture, split[0], mixed, label)
    write_png(pictures / f"{sample.name}.png", segments.with_legend(drawing, settings.minority))
    return result


def picture_notes(results) -> list:
    """What makes pictures score other than they look: vessel over most of the FOV (a light
    background), vessels mostly white or grey (a vessel map: the uncertain class), and pixels
    with both R and B on, which the protocol counts as artery and vein."""
    notes = []
    light = sum(r["picture"]["vessel_share"] > 0.5 for r in results)
    if light:
        notes.append(f"vessel predicted over more than half the FOV in {light} of {len(results)} image(s): a light "
                     f"background (it must be black, 0, 0, 0), or a network that marks most of the FOV as vessel")
    grey = float(np.mean([r["picture"]["grey_share"] for r in results]))
    if grey > 0.5 and not light:  # (a white background is grey vessel too: said once, above)
        notes.append(f"{100 * grey:.1f} % of the predicted vessel pixels are white or grey (R, G and B on), which the "
                     f"protocol counts as uncertain: a vessel map rather than an A/V prediction?")
    undecided = float(np.mean([r["picture"]["undecided_share"] for r in results]))
    if undecided > 0.05:
        notes.append(f"{100 * undecided:.1f} % of the predicted vessel pixels have R and B on, G off (no A/V decision): "
                     f"the published protocol counts them as artery and as vein, which raises sensitivity; the "
                     f"segment metric gives each the larger of R and B")
    return notes


def _run_name(folder) -> str:
    """A run's name: its folder's, or the folder above for test.py's raw_pre (runA/raw_pre: runA)."""
    path = Path(os.path.abspath(folder))
    return path.parent.name if path.name in ("raw_pre", "small_pre") else path.name


def _score_nth(samples, files, pictures, split_threads, settings, i):
    return score_one(samples[i], files[i], pictures, split_threads, settings)


def score_folder(dataset, predictions, suffix="", data_root="./data", output=None, workers=1,
                 settings=segments.DEFAULT_SETTINGS, overwrite=False, progress=None):
    """Score every test image's prediction in ``predictions`` (a folder, or several: one run
    each, e.g. a method's seeds); write metrics.csv, summary.json (mean ± std over the folders)
    and the pictures of the mixed segments (per folder when several) to ``output``; return the
    summary (percent, as test.py's). ``settings``: the segment metric's. Everything is written
    aside (SCORES_STAGING) and put in place once complete: a scoring stopped or failed on the way
    leaves ``output`` as it was. ``overwrite``: replace the scores of other predictions there.
    ``progress["phase"]``: "publishing" while the scores are put in place, then "complete"."""
    progress = {} if progress is None else progress
    spec = dataset_spec(dataset)
    folders = [Path(p) for p in ([predictions] if isinstance(predictions, (str, os.PathLike)) else predictions)]
    seen = {}
    for folder in folders:
        if not folder.is_dir():
            raise ConfigError(f"--predictions {folder}: not a folder")
        if "mixed_segments" in (folder.name, Path(os.path.abspath(folder)).parent.name):  # (of several runs: <run>/)
            raise ConfigError(f"--predictions {folder}: pictures of the mixed segments, not predictions (test.py's "
                              f"are in raw_pre/)")
        twin = seen.setdefault(os.path.realpath(folder), folder)
        if twin is not folder:
            raise ConfigError(f"--predictions: {twin} and {folder} are the same folder: each run once")
    several = len(folders) > 1
    if several and not output:
        raise ConfigError(f"{len(folders)} prediction folders: name the folder of their scores with --output")
    if output:
        out_dir = Path(output)
    else:
        out_dir = default_output(folders[0])
    pictures_root = Path(os.path.realpath(out_dir / "mixed_segments"))
    inside = [f for f in folders if Path(os.path.realpath(f)).is_relative_to(pictures_root)]
    if inside:
        raise ConfigError(f"--output {out_dir}: its mixed_segments/, which this replaces, holds the predictions "
                          f"{inside[0]}: choose another --output")
    with FolderLock(out_dir, "--output"):  # one scoring at a time in a folder; made here
        replacing = check_output(out_dir, folders, overwrite)  # before the predictions are read: fails at once
        samples = find_samples(data_root, spec, "test")
        paths = [prediction_files(samples, folder, suffix, workers) for folder in folders]  # all checked first
        if replacing:  # an earlier scoring's files (all its own)
            print(f"note: the earlier scores in {out_dir} will be replaced once this scoring is complete (stopped or "
                  f"failed before, it leaves them as they are)", file=sys.stderr)

        def mark_ours():  # while no summary.json says so: a scoring stopped then is taken up again, never refused
            atomic_write(out_dir / IN_PROGRESS, lambda tmp: Path(tmp).write_text(json.dumps({"scored": "in progress"})))
        if not (out_dir / SUMMARY).exists():
            mark_ours()
        stage = out_dir / SCORES_STAGING
        shutil.rmtree(stage, ignore_errors=True)  # (of a scoring killed outright)
        stage.mkdir()
        try:
            summary = _score_into(stage, spec, folders, samples, paths, suffix, workers, settings)
            mark_ours()
            progress["phase"] = "publishing"
            publish_scores(out_dir, stage)
            progress["phase"] = "complete"
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        (out_dir / IN_PROGRESS).unlink(missing_ok=True)
        pictures = f"{out_dir}/mixed_segments/<run>/" if several else f"{out_dir}/mixed_segments/"
        print(f"wrote {out_dir}/metrics.csv, {out_dir}/{SUMMARY} and {pictures}", file=sys.stderr)
        return summary


def _score_into(out_dir, spec, folders, samples, paths, suffix, workers, settings) -> dict:
    """score_folder's scoring proper, written into ``out_dir`` (its staging folder)."""
    several = len(folders) > 1
    names = run_names(_run_name(f) for f in folders)
    started = time.time()
    split_threads = max(1, usable_cores() // workers)  # the k-d tree's share of the cores
    rows, run_summaries, segment_notes, picture_said = [], [], [], []
    for name, files in zip(names, paths, strict=True):
        pictures = out_dir / "mixed_segments" / (name if several else "")
        one = functools.partial(_score_nth, samples, files, pictures, split_threads, settings)
        results = list(progress_bar(in_threads(one, len(samples), workers), total=len(samples),
                                    desc=f"score {name}" if several else "score"))
        rows += [{**({"run": name} if several else {}), "image": s.name, **metrics.percent_row(r)}
                 for s, r in zip(samples, results, strict=True)]
        for note in picture_notes(results):
            picture_said.append(f"{name + ': ' if several else ''}{note}")
            print(f"note: {picture_said[-1]}", file=sys.stderr)
        for note in segments.caveats(results):
            segment_notes.append(f"{name + ': ' if several else ''}{note}")
            print(f"note: segment metric: {segment_notes[-1]}", file=sys.stderr)
        run_summaries.append((metrics.summarize(results), Counter(r["picture"]["kind"] for r in results)))
    summary = metrics.in_percent(metrics.mean_std_over_runs([r for r, _ in run_summaries]))
    summary.update({"runs": [str(f) for f in folders], "run_paths": [os.path.realpath(f) for f in folders],
                    "images": len(samples), "dataset": spec.name,
                    "test_truth_sha256": truth_fingerprint(samples),
                    "per_run": {n: {m: 100.0 * r["average"][m] for m in metrics.TABLE_METRICS}
                                for n, (r, _) in zip(names, run_summaries, strict=True)},
                    "prediction_kinds": dict(sum((k for _, k in run_summaries), Counter())),
                    "segment_settings": settings.as_dict(), "segment_notes": segment_notes,
                    "picture_notes": picture_said,  # (scripts.compare repeats them beside the numbers)
                    "scored": f"pictures <name>{suffix}.png of {', '.join(map(str, folders))} (python -m "
                              f"scripts.score); probability extras from their 8-bit values",
                    "units": "percent (segments/count: a number); mean and std (ddof=0) over the prediction "
                             "folders of the per-folder mean over test images"})
    atomic_write_csv(out_dir / "metrics.csv", rows, rows[0])
    atomic_write(out_dir / SUMMARY, lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=2)))
    print(f"{len(samples)} test images x {len(folders)} folder(s) scored in {time.time() - started:.1f}s, {workers} "
          f"at a time", file=sys.stderr)
    return summary


def main(argv=None):
    p = ArgumentParser(prog="python -m scripts.score", description=__doc__)
    p.add_argument("--dataset", required=True, help=dataset_names())
    p.add_argument("--predictions", required=True, nargs="+",
                   help="folder of <name><suffix>.png, one per test image; several folders (a method's seeds) "
                        "are scored as runs, mean ± std over them (then --output is needed)")
    p.add_argument("--suffix", default="", help="after the image's name in the file names (predict.py: _colour "
                                                "or _classes; default none, as test.py's raw_pre)")
    p.add_argument("--data-root", default="./data", help="folder holding <Dataset>/test (default ./data)")
    p.add_argument("--output", help="default: <predictions>_scores beside the predictions folder")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the scores of other predictions in --output (the same predictions' are replaced "
                        "without it)")
    p.add_argument("--workers", type=int, default=default_workers(),
                   help="images scored at a time, in threads; 0.3-0.5 GB each at HRF-AV's size (default: the "
                        "usable cores, at most 8: %(default)s)")
    segments.add_options(p)
    args = p.parse_args(argv)
    progress = {}  # how far the scoring got, for the line a stop ends with
    with signals_handled_by(StopRequest()):  # Ctrl-C, SIGTERM: one line, at once
        try:
            if args.workers < 1:
                raise ConfigError(f"--workers {args.workers}: must be at least 1")
            try:
                settings = segments.settings_from(args)
            except ValueError as exc:
                raise ConfigError(exc) from None
            summary = score_folder(args.dataset, args.predictions, args.suffix, args.data_root, args.output,
                                   args.workers, settings, args.overwrite, progress)
        except (ConfigError, DataError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
        except (KeyboardInterrupt, Terminated) as exc:
            leaves = {"publishing": " while it put the scores in place: its --output may hold part of them; score "
                                    "again",
                      "complete": " after the scores were written: its --output holds them whole"}.get(
                progress.get("phase"), "; its --output holds what it held before (earlier scores are kept)")
            print(f"{FRESH_LINE}{said_of(exc)}: scripts.score stopped{leaves}", file=sys.stderr)
            sys.exit(EXIT_STATUS[signal_of(exc)])
    print(metrics.summary_table(summary))
    print(metrics.BINARY_AUC_NOTE)


if __name__ == "__main__":
    main()
