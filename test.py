"""Evaluate trained runs on a data set's test images with the published protocol (README: Metrics).

Writes into <output-root>/<Dataset>/Final_pre (--pretrained: Final_pre_pretrained; or --output) the pictures
{small_pre,raw_pre,mixed_segments}/<image>.png (with several runs, one sub-folder per run),
metrics.csv (one row per image and run) and summary.json (mean and std over runs, in percent),
and prints the table. A test of the same runs (again, or with more seeds) replaces the earlier one
in that folder; one that would drop the results of runs it does not test needs --overwrite.

Examples:
    python test.py --dataset DRIVE_AV --job_name probe                 # ./DRIVE_AV/probe
    python test.py --dataset DRIVE_AV --job_name sigmoid --seeds 42 40 38  # ./DRIVE_AV/sigmoid_seed42, ...
    python test.py --dataset DRIVE_AV --load path/to/original_checkpoints_folder
    python test.py --dataset DRIVE_AV --pretrained     # the shipped bundle in pretrained/

Exit status: 0 when the test was written, 2 for a bad option or file (one line), 130 / 143 for
Ctrl-C / SIGTERM (the folder as it was, unless the results were being moved in).
"""
import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from scripts import metrics, segments
from scripts.bundle import about_line, load_any, pretrained_bundle
from scripts.checkpoint import LAST_STATE, CheckpointError
from scripts.cli import FRESH_LINE, ArgumentParser, progress_bar
from scripts.config import (VARIANTS, ConfigError, dataset_names, dataset_spec, fusion_or_default,
                            network_input_size, saved_dataset_name, seed_run_name, split_seed_run_name,
                            str2bool)
from scripts.data import find_samples, greyscale_names, load_tensor_set, truth_fingerprint
from scripts.device import (MEMORY_FORMAT, amp_dtype_for, describe_precision, keep_freed_memory, no_amp_reason,
                            pick_device, release_freed_memory)
from scripts.evaluate import default_workers, evaluate_images, predict_probs, usable_cores
from scripts.evaluation_outputs import (PICTURE_FOLDERS, check_nothing_lost, earlier_test, publish_test,
                                       read_record, run_names, start_staging)
from scripts.files import FolderLock, WriteError, atomic_write, atomic_write_csv, check_folder
from scripts.last_state import read_state
from scripts.stopping import EXIT_STATUS, StopRequest, Terminated, said_of, signal_of, signals_handled_by


@dataclass
class TestProgress:
    """How far a test got, for the line a stop prints: what its output folder holds then.
    ``phase``: 'predicting', then 'scoring' (written aside: the folder as it was), 'publishing'
    (moving in: part of it there), 'complete' (moved in)."""
    out_dir: Optional[Path] = None
    replaces: str = ""  # the earlier test in out_dir that this one replaces ('' when none)
    phase: str = "predicting"

    def what_a_stop_leaves(self) -> str:
        """The end of the stop line: '' while predicting (nothing written yet)."""
        if self.phase == "scoring":
            kept = " (the earlier test, kept)" if self.replaces else ""
            return f" before its results were complete; {self.out_dir} holds what it held before{kept}"
        if self.phase == "publishing":
            return (f" while putting its results in {self.out_dir}, which may now hold part of them and no "
                    f"summary.json: run the test again")
        if self.phase == "complete":
            return f" after writing its results to {self.out_dir} (complete)"
        return ""


def fusion_of(saved: dict) -> str:
    """The fusion of a saved configuration; its variant's default where it names none."""
    return fusion_or_default(saved["activation"], saved.get("fusion"))


def check_one_configuration(runs):
    """A mean ± std over runs means seeds of one configuration: runs of different variants,
    widths or fusions, or trained on different data sets or at different input sizes (where
    their files say), are refused (test them apart with --output and set them side by side
    with scripts.compare)."""
    def key(saved):
        return saved["activation"], saved["base_width"], fusion_of(saved)
    if len({key(saved) for _, _, saved in runs}) > 1:
        raise ConfigError("the runs of one test must share variant, width and fusion, to be averaged: " + "; ".join(
            f"{folder} is {saved['activation']}, width {saved['base_width']}, fusion {fusion_of(saved)}"
            for folder, _, saved in runs) + " (test them one by one with --output, then python -m scripts.compare)")
    for what, of in (("data set", lambda saved: saved_dataset_name(saved.get("dataset"))),
                     ("input size", lambda saved: "{} x {}".format(*saved["image_size"]) if saved.get("image_size")
                      else None)):
        if len({of(saved) for _, _, saved in runs} - {None}) > 1:
            raise ConfigError(f"the runs of one test must be trained on one {what}, to be averaged: " + "; ".join(
                f"{folder}: {of(saved) or 'not saved'}" for folder, _, saved in runs)
                + " (test them one by one with --output, then python -m scripts.compare)")


def build_parser():
    p = ArgumentParser(prog="python test.py", description=__doc__)
    p.add_argument("--dataset", default="DRIVE_AV", help=dataset_names())
    p.add_argument("--job_name", "--job-name", dest="job_name", default="default",
                   help="run folder <output-root>/<Dataset>/<job_name> (with --seeds: <job_name>_seed<N>; "
                        "default: the folder named 'default', as train.py's)")
    p.add_argument("--seeds", type=int, nargs="+", action="extend", default=None,
                   help="evaluate one run per seed (a repeated option adds to the list)")
    p.add_argument("--load", nargs="+", action="extend", default=None,
                   help="weights to evaluate instead of --job_name: run folders (ours, or the original "
                        "authors' CP_*.pth files), model bundles (.pth) or bundle index files (.index.json)")
    p.add_argument("--pretrained", action="store_true",
                   help="evaluate the shipped bundle pretrained/<Dataset>_<variant>.index.json (variant: "
                        "--activation, default sigmoid) into <output-root>/<Dataset>/Final_pre_pretrained")
    p.add_argument("--batch-size", "-b", type=int, default=2, dest="batch_size",
                   help="images per forward pass (default %(default)s)")
    p.add_argument("--uniform", type=str2bool, default=None, help="True: 720 x 720 network input")
    p.add_argument("--data-root", default="./data", dest="data_root",
                   help="folder holding <Dataset>/test (default %(default)s)")
    p.add_argument("--image-size", type=int, nargs=2, metavar=("W", "H"), default=None, dest="image_size",
                   help="network input size (default: the one saved in the checkpoint)")
    p.add_argument("--base-width", type=int, default=None, dest="base_width",
                   help="check the checkpoint has this width (default: read from it)")
    p.add_argument("--activation", choices=list(VARIANTS), default=None,
                   help="check the checkpoint is this variant (default: read from it); with --pretrained, "
                        "which shipped bundle")
    p.add_argument("--device", default="", help="cuda, cuda:1, cpu (default: cuda when present)")
    p.add_argument("--workers", type=int, default=default_workers(),
                   help="test images evaluated at a time (full-size resize, metrics, pictures), in threads; "
                        "0.3-0.5 GB each at HRF-AV's size (default: the usable cores, at most 8: %(default)s)")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=False,
                   help="mixed precision where it pays (CUDA; CPUs with AVX512-BF16/AMX where bf16 is measured "
                        "faster): faster, but the metrics then depend on the machine (default: fp32)")
    p.add_argument("--output", default=None,
                   help="default <output-root>/<Dataset>/Final_pre (with --pretrained: .../Final_pre_pretrained)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier test in --output even where it is of runs this test does not "
                        "test (without it that is refused: --output keeps tests apart)")
    p.add_argument("--output-root", default=".", help="run folders are <output-root>/<Dataset>/<job>")
    p.add_argument("--cache-dir", default="./.cache", dest="cache_dir",
                   help="decoded, resized photographs are kept here (default %(default)s)")
    segments.add_options(p)
    return p


def run_folders(args, spec):
    if args.pretrained:
        if args.load or args.seeds or args.job_name != "default":
            raise ConfigError("--pretrained tests the shipped bundle: leave out --load, --job_name and --seeds")
        path = pretrained_bundle(spec.name, args.activation or "sigmoid")
        if not path.is_file():
            raise ConfigError(f"no shipped bundle {path} for {spec.name} yet: train (sh train.sh) and test "
                              f"the runs, or pass --load")
        return [path]
    if args.load:
        if args.seeds or args.job_name != "default":
            raise ConfigError("--load names the weights itself: leave out --job_name and --seeds")
        return [Path(p) for p in args.load]
    base = Path(args.output_root) / spec.name
    if args.seeds:
        folders = [base / seed_run_name(args.job_name, s) for s in args.seeds]
        seeded = split_seed_run_name(args.job_name)
        if seeded and not any(f.exists() for f in folders):  # --job_name sigmoid_seed42 --seeds 42
            raise ConfigError(f"no run folder {folders[0]}: --seeds N reads <job_name>_seedN, so --job_name "
                              f"names the runs without their seed (did you mean --job_name {seeded[0]}?)")
        return folders
    if args.job_name == "default" and not (base / "default").exists():
        raise ConfigError(f"which weights? name a run with --job_name (a folder {base}/<job_name>), or give "
                          f"--load PATH, or --pretrained for the shipped bundle")
    if not (base / args.job_name).exists():  # --job_name sigmoid for train.sh's sigmoid_seed42, ...
        runs = [split_seed_run_name(f.name) for f in (base.iterdir() if base.is_dir() else ()) if f.is_dir()]
        seeds = sorted(seed for job, seed in filter(None, runs) if job == args.job_name)
        if seeds:
            raise ConfigError(f"no run folder {base / args.job_name}, but runs of its seeds: --seeds "
                              f"{' '.join(map(str, seeds))} tests them")
    return [base / args.job_name]


def run_details(folder, saved, size, spec) -> dict:
    """What summary.json records of a run beside its numbers; a note on stderr where the test
    differs from the run's training (another data set, another input size)."""
    trained_on, trained_size = saved_dataset_name(saved.get("dataset")), saved.get("image_size")
    if trained_on and trained_on != spec.name:
        print(f"note: {folder} was trained on {trained_on}; testing it on {spec.name} (a cross-data-set "
              f"test, not the published protocol)", file=sys.stderr)
    if trained_size and tuple(trained_size) != tuple(size):
        print(f"note: {folder} was trained at {trained_size[0]} x {trained_size[1]}; testing it at "
              f"{size[0]} x {size[1]} (--image-size / --uniform)", file=sys.stderr)
    done, planned = epochs_done(folder)  # bundles have no last.pth: their --about text tells
    if done is not None and planned and done < planned:
        print(f"note: {folder} stopped after {done} of its {planned} planned epochs (its last.pth): these numbers "
              f"are of an unfinished run", file=sys.stderr)
    elif Path(folder).is_dir() and saved.get("epochs") and not (Path(folder) / LAST_STATE).exists():
        print(f"note: {folder} has no last.pth (deleted, or a run of an older version killed before it saved one): "
              f"whether it trained all of its {saved['epochs']} planned epochs is unknown (its best networks are of "
              f"epoch {saved.get('best_epoch')})", file=sys.stderr)
    return {"run": str(folder), "trained_on": trained_on, "trained_size": list(trained_size) if trained_size else None,
            "input_size": list(size), "activation": saved["activation"], "base_width": saved["base_width"],
            "fusion": fusion_of(saved), "best_epoch": saved.get("best_epoch"), "best_val_f1": saved.get("best_val_f1"),
            "epochs_done": done, "epochs_planned": planned, "about": saved.get("about"),
            "initialised_from": saved.get("initialised_from")}


def epochs_done(folder):
    """(epochs trained, epochs planned) by a run folder's last.pth (whose plan a resume with
    --epochs may have changed since the best networks were saved); (None, None) without one."""
    last = Path(folder) / LAST_STATE
    if not last.is_file():
        return None, None
    try:
        state = read_state(last, mmap=True)
    except CheckpointError as exc:  # a damaged last.pth does not stop a test of the networks
        print(f"note: {exc}: how many epochs the run trained is unknown", file=sys.stderr)
        return None, None
    return state["epoch"] + 1, state["config"]["epochs"]


def run_test(args, progress: Optional[TestProgress] = None):
    """The whole test: the runs (or weights) read and checked, then predict_and_score.
    ``progress`` follows how far it got (main() reads it when the test is stopped)."""
    progress = progress if progress is not None else TestProgress()
    spec = dataset_spec(args.dataset)
    for option, value in (("--batch-size", args.batch_size), ("--workers", args.workers)):
        if value < 1:
            raise ConfigError(f"{option} {value}: must be at least 1")
    try:
        segment_settings = segments.settings_from(args)
    except ValueError as exc:
        raise ConfigError(exc) from None
    cores = usable_cores()
    if args.workers > cores:
        print(f"note: --workers {args.workers} is more than the {cores} usable cores: each scores one "
              f"test image at a time and holds its full-size arrays (0.3-0.5 GB each at HRF-AV's size), for "
              f"no gain in speed", file=sys.stderr)
    check_folder(args.cache_dir, "--cache-dir")
    device = pick_device(args.device)
    keep_freed_memory()
    amp_dtype = amp_dtype_for(device, args.amp)
    if args.amp and amp_dtype is None:
        print(f"note: --amp: {no_amp_reason(device)}, so this test runs in fp32", file=sys.stderr)
    expected = {"activation": args.activation, "base_width": args.base_width}
    folders, seen = run_folders(args, spec), {}
    for folder in folders:  # a run counted twice would make a mean ± std over runs of one
        twin = seen.setdefault(os.path.realpath(folder), folder)
        if twin is not folder:
            raise ConfigError(f"{twin} and {folder} are the same run: test each run once")
    runs = []
    for folder in folders:
        nets, saved = load_any(folder, expected)
        runs.append((folder, nets.fold_for_inference().to(device, memory_format=MEMORY_FORMAT), saved))
    check_one_configuration(runs)
    sizes = [network_input_size(args.image_size, saved, spec, args.uniform) for _, _, saved in runs]
    samples = find_samples(args.data_root, spec, "test")
    default_out = "Final_pre_pretrained" if args.pretrained else "Final_pre"  # never over a run's own test
    out_dir = Path(args.output) if args.output else Path(args.output_root) / spec.name / default_out
    # One test at a time in --output (made now: a wrong one fails before the predictions; one
    # this test made and left empty, on a stop or a data error, goes again).
    with FolderLock(out_dir, "--output"):
        if not args.overwrite:
            check_nothing_lost(out_dir, [folder for folder, _, _ in runs])
        return predict_and_score(args, spec, runs, sizes, samples, out_dir, device, amp_dtype, segment_settings,
                                 progress)


def predict_and_score(args, spec, runs, sizes, samples, out_dir, device, amp_dtype,
                      segment_settings=segments.DEFAULT_SETTINGS, progress: Optional[TestProgress] = None):
    """The test proper: every run's predictions (at ``sizes``, one per run), then the scoring at
    full size, the pictures, metrics.csv and summary.json in ``out_dir``."""
    progress = progress if progress is not None else TestProgress()
    progress.out_dir, progress.replaces = out_dir, earlier_test(out_dir)
    if progress.replaces:
        print(f"note: this test will replace {progress.replaces} once all of it is written (its summary.json, "
              f"metrics.csv and pictures; one stopped or failed before leaves it as it was; --output keeps tests "
              f"apart)", file=sys.stderr)
        stale = scores_inside(out_dir)
        if stale:
            print(f"note: {', '.join(str(f) for f in stale)} inside it hold{'s' if len(stale) == 1 else ''} "
                  f"scripts.score's scores of the pictures this test replaces (older versions wrote them there): "
                  f"they will describe pictures that are gone; delete, or score again", file=sys.stderr)
    if spec.test_images and len(samples) != spec.test_images:
        print(f"note: {len(samples)} test images in {Path(args.data_root) / spec.name / 'test'}, where the published "
              f"{spec.name} test set has {spec.test_images}: these numbers are not comparable with the published "
              f"table", file=sys.stderr)

    # Network-size probabilities of every run (images decoded once, cached).
    probs, inputs, details = [], {}, []  # network inputs by size: read once for all runs of that size
    for (folder, nets, saved), size in zip(runs, sizes, strict=True):
        details.append(run_details(folder, saved, size, spec))
        if size not in inputs:
            inputs[size] = load_tensor_set(samples, size, Path(args.cache_dir) / spec.name).images
            grey = greyscale_names([s.name for s in samples], inputs[size])
            if grey and len(inputs) == 1:
                print(f"note: {len(grey)} of the {len(samples)} test photographs are greyscale: the networks tell "
                      f"artery from vein mostly by colour (arteries are lighter and redder), so expect poorer A/V "
                      f"maps unless the networks were trained on such photographs (e.g. {grey[0]})", file=sys.stderr)
        images = inputs[size]
        started = time.time()
        desc = f"predict {folder.name}"
        probs.append(predict_probs(nets, images, args.batch_size, device, amp_dtype,
                                   progress=lambda b, desc=desc: progress_bar(b, desc=desc, leave=False)))
        print(f"{folder}: {saved['activation']} variant, width {saved['base_width']}, input "
              f"{size[0]} x {size[1]}, {describe_precision(amp_dtype)} on {device}, {len(samples)} images "
              f"predicted in {time.time() - started:.1f}s", flush=True)
        if saved.get("about"):
            print(f"  about these weights: {about_line(saved['about'], folder)}", flush=True)

    release_freed_memory()  # what the networks freed: the scoring threads allocate elsewhere
    summary = score_and_write(spec, runs, samples, probs, details, out_dir, args.workers,
                              describe_precision(amp_dtype), segment_settings, progress)
    print(metrics.summary_table(summary))
    print(metrics.BINARY_AUC_NOTE)
    pictures = f"{out_dir}/<run>/" if len(runs) > 1 else f"{out_dir}/"
    print(f"wrote {out_dir}/metrics.csv, {out_dir}/summary.json and the pictures in "
          f"{pictures}{{{','.join(PICTURE_FOLDERS)}}}/")
    return summary


def scores_inside(out_dir: Path) -> list:
    """The folders of scripts.score's scores (a summary.json that says 'scored') inside a test's
    folder, or inside one of its runs' folders: older versions' default for the scores of
    <test>/raw_pre and <test>/<run>/raw_pre."""
    return sorted(d for pattern in ("*", "*/*") for d in out_dir.glob(pattern)
                  if d.is_dir() and "scored" in read_record(d))


def score_and_write(spec, runs, samples, probs, details, out_dir, workers, precision,
                    segment_settings=segments.DEFAULT_SETTINGS, progress: Optional[TestProgress] = None):
    """Score every run's predictions at full size (in threads), write the pictures, metrics.csv
    and summary.json into ``out_dir``'s STAGING folder, and once all are written, put them in
    place of an earlier test's (``publish_test``); returns the summary. Stopped or failed on the
    way, it leaves ``out_dir`` as it was (``progress`` says where it stopped)."""
    progress = progress if progress is not None else TestProgress(out_dir)
    progress.phase = "scoring"
    try:
        stage = start_staging(out_dir)
    except OSError as exc:
        raise WriteError(f"cannot write this test into {out_dir} ({exc.strerror or exc})") from exc
    try:
        return _score_and_write(spec, runs, samples, probs, details, out_dir, stage, workers, precision,
                                segment_settings, progress)
    except WriteError as exc:  # a full disk, say, while writing aside: the folder as it was
        if progress.phase != "scoring":  # (its message says what the folder holds)
            raise
        raise WriteError(f"cannot write this test into {out_dir} ({exc.reason}); nothing of it is left there, and "
                         f"what the folder held before is kept") from exc
    finally:
        shutil.rmtree(stage, ignore_errors=True)  # (gone already when the test was published)


def _score_and_write(spec, runs, samples, probs, details, out_dir, stage, workers, precision, segment_settings,
                     progress):
    multi = len(runs) > 1
    names = run_names(folder for folder, _, _ in runs)
    tested = {"runs": [str(f) for f, _, _ in runs], "run_paths": [os.path.realpath(f) for f, _, _ in runs]}
    run_outs = [stage / name if multi else stage for name in names]
    activations = [saved["activation"] for _, _, saved in runs]
    rows, per_run = [], [[] for _ in runs]
    started = time.time()
    results = evaluate_images(samples, probs, activations, run_outs, workers, segment_settings)
    bar = progress_bar(results, total=len(samples), desc="evaluate")
    for image_results, sample in zip(bar, samples, strict=True):
        for r, result in enumerate(image_results):
            per_run[r].append(result)
            rows.append({"run": names[r], "image": sample.name, **metrics.percent_row(result)})
    print(f"{len(samples)} images x {len(runs)} run{'s' if multi else ''} evaluated at full size in "
          f"{time.time() - started:.1f}s, {min(workers, len(samples))} at a time", flush=True)

    segment_notes = [f"{name + ': ' if multi else ''}{note}" for name, results in zip(names, per_run, strict=True)
                     for note in segments.caveats(results)]
    for note in segment_notes:
        print(f"note: segment metric: {note}", file=sys.stderr)
    run_summaries = [metrics.summarize(r) for r in per_run]
    summary = metrics.in_percent(metrics.mean_std_over_runs(run_summaries))
    summary.update(tested)  # run_paths: the same runs from any working folder
    summary["per_run"] = {names[r]: {m: 100.0 * s["average"][m] for m in metrics.TABLE_METRICS}
                          for r, s in enumerate(run_summaries)}  # each run's row of the table (average)
    summary["run_details"] = details
    summary["images"] = len(samples)
    summary["dataset"] = spec.name
    summary["test_truth_sha256"] = truth_fingerprint(samples)  # of its labels and masks (scripts.compare)
    earlier_truth = read_record(out_dir).get("test_truth_sha256")  # of the test this one replaces
    if earlier_truth and earlier_truth != summary["test_truth_sha256"]:  # e.g. a test on an edited copy of the data
        print(f"note: the earlier test in {out_dir} differs from this one in its truth (scored against other test "
              f"labels or masks: another copy of the data?)", file=sys.stderr)
    summary["precision"] = precision  # of the networks' predictions: fp32 unless --amp (and it paid)
    summary["segment_settings"] = segment_settings.as_dict()
    summary["segment_notes"] = segment_notes  # scripts.compare repeats them beside the numbers
    summary["units"] = ("percent (segments/count: a number); mean and std (ddof=0) over runs of the "
                        "per-run mean over test images")
    atomic_write_csv(stage / "metrics.csv", rows, rows[0])
    atomic_write(stage / "summary.json", lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=2)))
    progress.phase = "publishing"
    try:
        publish_test(out_dir, [s.name for s in samples], names if multi else (), tested)
    except (KeyboardInterrupt, Terminated):
        # the earlier test is gone by now; once the summary has moved in (last), the test is complete
        if not (stage / "summary.json").exists() and (out_dir / "summary.json").exists():
            progress.phase = "complete"
        raise
    except OSError as exc:
        raise WriteError(f"cannot put this test's results in {out_dir} ({exc.strerror or exc}): it may now hold "
                         f"part of them and no summary.json; run the test again") from exc
    progress.phase = "complete"
    return summary


def main(argv=None):
    args = build_parser().parse_args(argv)
    progress = TestProgress()
    with signals_handled_by(StopRequest()):  # Ctrl-C, SIGTERM: one line, at once (nothing to resume)
        try:
            run_test(args, progress)
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
        except (KeyboardInterrupt, Terminated) as exc:
            print(f"{FRESH_LINE}{said_of(exc)}: test.py stopped{progress.what_a_stop_leaves()}", file=sys.stderr)
            sys.exit(EXIT_STATUS[signal_of(exc)])


if __name__ == "__main__":
    main()
