"""test.py's output folder: the per-run names of its pictures, what an earlier test left there
(its summary.json and pictures), whether a new test may replace it, and clearing it so that
the folder only ever holds what its summary.json describes.

A test writes everything into STAGING inside the folder first and replaces the earlier test
with it only once it is complete (``publish_test``): a test stopped (or failed) on the way
leaves the earlier one as it was."""
import json
import os
import shutil
from pathlib import Path

from .config import ConfigError

PICTURE_FOLDERS = ("small_pre", "raw_pre", "mixed_segments")
RESULT_FILES = ("summary.json", "metrics.csv")
# A test of several runs names them here while it writes their per-run pictures, and deletes it
# once its summary.json is written: a test stopped before that still has its pictures cleared by
# the next test in the folder.
RUNS_BEING_TESTED = ".runs_being_tested.json"
STAGING = ".test_being_written"  # a test's pictures, metrics.csv and summary.json until it is complete


def start_staging(out_dir) -> Path:
    """The empty STAGING folder in ``out_dir`` (a test killed outright may have left one)."""
    stage = Path(out_dir) / STAGING
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    return stage


def publish_test(out_dir, names, runs=(), tested=None):
    """Replace the earlier test in ``out_dir`` with the complete one in its STAGING folder: the
    earlier one cleared (``clear_earlier_test``), the new pictures moved in (renames in one file
    system: quick), then metrics.csv, summary.json last. ``runs``: this test's per-run folder
    names (several runs); ``tested``: its record of them, written as RUNS_BEING_TESTED while the
    pictures move, so that even a stop in that moment leaves nothing uncleared."""
    out_dir = Path(out_dir)
    stage = out_dir / STAGING
    clear_earlier_test(out_dir, names, runs)
    if runs:
        (out_dir / RUNS_BEING_TESTED).write_text(json.dumps(tested or {}))
    for picture in sorted(stage.rglob("*.png")):
        target = out_dir / picture.relative_to(stage)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(picture, target)
    for name in RESULT_FILES[::-1]:  # metrics.csv, then summary.json: the summary says the test is whole
        os.replace(stage / name, out_dir / name)
    (out_dir / RUNS_BEING_TESTED).unlink(missing_ok=True)
    shutil.rmtree(stage, ignore_errors=True)


def clear_earlier_test(out_dir, names, runs=()):
    """Delete what an earlier test.py run wrote in this output folder: first its summary.json
    and metrics.csv (so that a test stopped while writing leaves no summary beside pictures it
    does not describe), then its pictures of these test images: at the top level and in the
    per-run sub-folders of the runs its summary (or, stopped before it, its RUNS_BEING_TESTED)
    names, when it was a test of several, and of ``runs`` (this test's per-run folder names).
    No other sub-folder is touched: ``--output DRIVE_AV`` leaves DRIVE_AV/Final_pre and
    DRIVE_AV/<run>, other tests, alone. Folders left empty go too (a test of one run after one of
    several leaves no empty per-run folders, and the other way round); other files are left alone."""
    def per_run_folders(record):
        given, real = recorded_runs(out_dir, record)
        # '..' as its test named it (its real folder), not from this working folder
        earlier = [r if Path(r).name not in ("", ".", "..") else path for r, path in zip(given, real, strict=True)]
        return run_names(earlier) if len(earlier) > 1 else []  # one run's pictures are at the top
    runs = {*per_run_folders("summary.json"), *per_run_folders(RUNS_BEING_TESTED), *runs}
    for name in (*RESULT_FILES, RUNS_BEING_TESTED):
        (out_dir / name).unlink(missing_ok=True)
    for folder_name in PICTURE_FOLDERS:
        for folder in [out_dir / folder_name, *(out_dir / run / folder_name for run in sorted(runs))]:
            for name in names:
                (folder / f"{name}.png").unlink(missing_ok=True)
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
                if folder.parent != out_dir and not any(folder.parent.iterdir()):
                    folder.parent.rmdir()


def read_record(out_dir, record="summary.json") -> dict:
    """An earlier test's summary.json (or other ``record``) in ``out_dir``; {} when there is none
    or it cannot be read."""
    try:
        data = json.loads((out_dir / record).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def recorded_runs(out_dir, record="summary.json", summary=None) -> tuple:
    """(runs as given on its command line, their real paths) of the test whose summary.json (or
    other ``record``; or ``summary``, already read) is in ``out_dir``; ([], []) when there is
    none or it cannot be read. Summaries of older versions record no real paths: the runs as
    given stand for them."""
    summary = read_record(out_dir, record) if summary is None else summary
    given, real = summary.get("runs"), summary.get("run_paths", summary.get("runs"))
    if not (isinstance(given, list) and isinstance(real, list) and len(given) == len(real)):
        return [], []
    return [str(run) for run in given], [str(run) for run in real]


def check_nothing_lost(out_dir, folders):
    """One line, before any prediction, where the test in ``out_dir`` is of runs this test does
    not test: replacing it would lose their results (a sigmoid test after a softmax one in the
    default Final_pre, say). A test of the same runs, or of more seeds, replaces it."""
    now = {os.path.realpath(folder) for folder in folders}
    dropped = [run for run in recorded_runs(out_dir)[1] if os.path.realpath(run) not in now]
    if dropped:
        raise ConfigError(f"--output {out_dir} holds the test of {', '.join(dropped)}, which this test does not "
                          f"repeat: --overwrite replaces it, or --output DIR keeps both")


def earlier_test(out_dir) -> str:
    """What an earlier test left in ``out_dir`` that this one replaces ('' when none), for a note."""
    if not (out_dir / "summary.json").exists():
        return ""
    summary = read_record(out_dir)
    runs, _ = recorded_runs(out_dir, summary=summary)
    precision = summary.get("precision")
    what = f"the test of {', '.join(runs)}" + (f" ({precision})" if isinstance(precision, str) else "")
    return f"{what} in {out_dir}" if runs else f"the summary.json in {out_dir}"


def run_names(folders):
    """A distinct short name per run (its folder or file name without .pth / .index.json, with
    _2, _3, ... where two would be the same): the per-run picture folders and metrics.csv's
    run column."""
    names = []
    for folder in folders:
        base = Path(folder).name
        if base in ("", ".", ".."):  # a run given as '..' or '/': its real folder's name, never a path
            base = Path(folder).resolve().name or "run"
        for suffix in (".index.json", ".pth"):
            base = base[: -len(suffix)] if base.endswith(suffix) else base
        name, k = base, 1
        while name in names:
            k += 1
            name = f"{base}_{k}"
        names.append(name)
    return names
