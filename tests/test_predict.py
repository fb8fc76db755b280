"""predict.py on a folder of real and broken photographs with tiny untrained checkpoints:
outputs at the original size, failures recorded (not fatal), --resume, ensembles, --tta,
--masks, a 2-process torchrun; and the FOV estimate against the data sets' own masks."""
import contextlib
import csv
import glob
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance
from PIL.PngImagePlugin import PngInfo

import predict
from scripts import predict_inputs as inputs, predict_outputs as outputs, stopping
from scripts.bfnet import Networks
from scripts.bundle import export_bundle, load_any
from scripts.checkpoint import save_best
from scripts.config import DATASETS, ConfigError, RunConfig
from scripts.data import find_samples, read_image, read_label, read_mask, to_rgb8
from scripts.evaluate import full_size_picture, predict_probs
from scripts.fov import estimate_fov, iou
from scripts.metrics import class_map
from tests.conftest import ROOT

DRIVE_SIZE = (565, 584)
GOOD = ["01_test.tif", "sub/02_test.tif", "sub/grey.png", "rgba.png", "sub/deeper/grey16.tif"]
BAD = {"sub/trunc.jpg": "cannot decode image", "empty.png": "empty file",
       "label.png": "every pixel is 0..3: an A/V label image",
       "colour_label.png": "lines in pure colours or white on black (100 % of the 9 % of its pixels that are not "
                           "black), where a photograph's retina is mid-tones over most of the frame: a label or "
                           "vessel map, not a photograph: not segmented"}
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # tiny networks: one thread is fastest on a shared CPU


pytestmark = pytest.mark.usefixtures("one_thread")


def make_run(folder, seed, activation="sigmoid"):
    torch.manual_seed(seed)
    nets = Networks(activation, 4)
    save_best(folder, nets, RunConfig(activation=activation, base_width=4, image_size=(64, 64)), 1, 0.5)
    return folder


@pytest.fixture(scope="module")
def setup(real_data, tmp_path_factory):
    base = tmp_path_factory.mktemp("predict")
    images = real_data / "DRIVE_AV" / "test" / "images"
    inp = base / "in"
    (inp / "sub" / "deeper").mkdir(parents=True)
    shutil.copy(images / "01_test.tif", inp / "01_test.tif")
    shutil.copy(images / "02_test.tif", inp / "sub" / "02_test.tif")
    photo = Image.open(images / "01_test.tif")
    photo.convert("L").save(inp / "sub" / "grey.png")
    photo.convert("RGBA").save(inp / "rgba.png")
    grey16 = np.asarray(photo.convert("L")).astype(np.uint16) * 257
    Image.fromarray(grey16).save(inp / "sub" / "deeper" / "grey16.tif")
    with Image.open(inp / "sub" / "deeper" / "grey16.tif") as written:
        assert written.mode.startswith("I;16")
    photo.convert("RGB").save(base / "full.jpg", quality=90)
    data = (base / "full.jpg").read_bytes()
    (inp / "sub" / "trunc.jpg").write_bytes(data[: len(data) // 3])
    (inp / "empty.png").write_bytes(b"")
    shutil.copy(real_data / "DRIVE_AV" / "test" / "1st_manual" / "01_test.png", inp / "label.png")
    Image.fromarray(outputs.CLASS_COLOURS[read_label(inp / "label.png")]).save(inp / "colour_label.png")
    return {"base": base, "input": inp, "run_a": make_run(base / "run_a", 0),
            "run_b": make_run(base / "run_b", 1), "real_data": real_data}


def cli(*args, torchrun=False, fresh=False):
    """predict.py with these arguments: in this process (predict.main; a fresh start imports torch,
    seconds each), or in fresh processes (``fresh``; ``torchrun``: two of them)."""
    argv = [*map(str, args)]
    if not (torchrun or fresh):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), pytest.raises(SystemExit) as info:
            predict.main(argv)
        return subprocess.CompletedProcess(argv, info.value.code, out.getvalue(), err.getvalue())
    cmd = [sys.executable] + (["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
                              if torchrun else []) + ["predict.py", *argv]
    return subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)


def read_rows(out):
    with open(out / "predictions.csv", newline="") as f:
        return list(csv.DictReader(f))


def outputs_of(out, rel, extra=()):
    stem = rel.rsplit(".", 1)[0]
    return {k: out / f"{stem}_{k}.{'npz' if k == 'probs' else 'png'}"
            for k in ("classes", "colour", "overlay", *extra)}


@pytest.fixture(scope="module")
def first(setup):
    out = setup["base"] / "out"
    proc = cli("--weights", setup["run_a"], "--input", setup["input"], "--output", out, fresh=True)  # a real start
    return proc, out


def test_every_good_image_gets_all_outputs_at_its_size(setup, first):
    proc, out = first
    for rel in GOOD:
        paths = outputs_of(out, rel)
        photo = to_rgb8(Image.open(setup["input"] / rel))
        classes = Image.open(paths["classes"])
        assert classes.mode == "P" and classes.size == DRIVE_SIZE, rel
        cls = np.asarray(classes)
        assert cls.max() <= 3
        colour = np.asarray(Image.open(paths["colour"]))
        overlay = np.asarray(Image.open(paths["overlay"]))
        assert colour.shape == overlay.shape == (DRIVE_SIZE[1], DRIVE_SIZE[0], 3), rel
        # The class map is the colour picture decoded by the rule of the brief.
        assert np.array_equal(cls, class_map(colour))
        # The overlay is the photograph wherever no vessel is predicted.
        assert np.array_equal(overlay[cls == 0], photo[cls == 0])
    assert not list(out.rglob(".*"))  # no temporary files left (atomic writes)
    umask = os.umask(0)
    os.umask(umask)
    assert (out / "01_test_classes.png").stat().st_mode & 0o777 == 0o666 & ~umask  # not 0600


def test_failures_are_recorded_and_the_exit_status_is_non_zero(setup, first):
    proc, out = first
    assert proc.returncode == 1, proc.stderr
    rows = {os.path.relpath(r["path"], setup["input"]).replace(os.sep, "/"): r for r in read_rows(out)}
    assert set(rows) == set(GOOD) | set(BAD)
    assert [r["path"] for r in read_rows(out)] == sorted(r["path"] for r in read_rows(out))
    for rel, reason in BAD.items():
        assert rows[rel]["status"] == "failed" and reason in rows[rel]["reason"], rows[rel]
        assert rows[rel]["sha256"] == hashlib.sha256((setup["input"] / rel).read_bytes()).hexdigest()
        assert f"failed: {setup['input'] / rel}: {reason}" in proc.stderr
        assert not outputs_of(out, rel)["classes"].exists()
    noted = {rel for rel in GOOD if f"note: {setup['input'] / rel}: a greyscale photograph" in proc.stderr}
    assert noted == {"sub/grey.png", "sub/deeper/grey16.tif"}  # colour is what tells artery from vein
    assert {rel for rel in GOOD if rows[rel]["notes"].startswith("a greyscale photograph")} == noted  # in the CSV too
    for rel in GOOD:
        r = rows[rel]
        assert r["status"] == "ok" and r["reason"] == "" and r["fov_source"] == "estimated"
        assert (int(r["width"]), int(r["height"])) == DRIVE_SIZE
        assert r["sha256"] == hashlib.sha256((setup["input"] / rel).read_bytes()).hexdigest()  # duplicates share it
        assert 0.5 < float(r["fov_fraction"]) < 0.9  # DRIVE_AV's FOV: about 69 % of the frame
        fractions = [float(r[k]) for k in ("artery_fraction", "vein_fraction", "uncertain_fraction")]
        assert all(0 <= f <= 1 for f in fractions)
        assert abs(sum(fractions) - float(r["vessel_density"])) < 1e-5
        cls = np.asarray(Image.open(outputs_of(out, rel)["classes"]))
        if (cls == 2).any():
            assert abs(float(r["av_ratio"]) - (cls == 1).sum() / (cls == 2).sum()) < 1e-5
        else:
            assert r["av_ratio"] == ""


def test_resume_skips_done_images(setup, first):
    _, done = first
    out = setup["base"] / "resumed"
    shutil.copytree(done, out)
    (out / "sub" / "grey_colour.png").unlink()  # one image is incomplete: done again
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    proc = cli("--weights", setup["run_a"], "--input", setup["input"], "--output", out, "--resume")
    assert proc.returncode == 1, proc.stderr
    assert "4 image(s) already done" in proc.stderr
    for p, stamp in stamps.items():
        changed = p.stat().st_mtime_ns != stamp
        assert changed == p.name.startswith("grey_"), p  # only the incomplete image was redone
    assert (out / "sub" / "grey_colour.png").is_file()
    assert read_rows(out) == read_rows(done)
    # predict_run.json lists each invocation: when, the options, the working folder (relative
    # paths in the CSV start there), the code; a resume adds its own.
    first_run, resumed = (json.loads((d / "predict_run.json").read_text())["invocations"] for d in (done, out))
    assert len(first_run) == 1 and resumed[0] == first_run[0] and len(resumed) == 2
    assert resumed[1]["options"]["resume"] is True and first_run[0]["options"]["resume"] is False
    assert resumed[1]["options"]["input"] == [str(setup["input"])] and resumed[1]["working_folder"] == os.getcwd()
    assert resumed[1]["date"] >= first_run[0]["date"] and resumed[1]["commit"] and resumed[1]["processes"] == 1
    assert {r["output"] for r in read_rows(out)} == {rel.rsplit(".", 1)[0] for rel in GOOD + list(BAD)}


def test_ctrl_c_ends_the_batch_writes_the_csv_and_resume_does_the_rest(setup, tmp_path, monkeypatch, capsys,
                                                                       request):
    """A first Ctrl-C (or SIGTERM) finishes the batch being predicted, writes its outputs and
    predictions.csv, exits 130 (143); a second one stops at once in one line, keeping what is
    written. The same command with --resume then does the rest, once each."""
    import signal
    inp = tmp_path / "in"
    inp.mkdir()
    for name in ("a", "b", "c", "d", "e"):
        shutil.copy(setup["input"] / "01_test.tif", inp / f"{name}.tif")
    out = tmp_path / "out"
    argv = ["--weights", str(setup["run_a"]), "--input", str(inp), "--output", str(out), "--batch-size", "2"]
    real_call = predict.Ensemble.__call__

    def signalled_in_the_first_batch(*signals):
        sent = []

        def call(self, batch):
            if not sent:  # the signals, through the handlers predict.main installed
                for signum in signals:
                    sent.append(signum)
                    os.kill(os.getpid(), signum)
            return real_call(self, batch)
        return call

    # As in a terminal (a job started in the background of a script, as CI may be, ignores SIGINT).
    sigint_before = signal.signal(signal.SIGINT, signal.default_int_handler)
    request.addfinalizer(lambda: signal.signal(signal.SIGINT, sigint_before))
    monkeypatch.setattr(predict.Ensemble, "__call__", signalled_in_the_first_batch(signal.SIGINT))
    with pytest.raises(SystemExit) as info:
        predict.main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 130, err
    assert "SIGINT: stopping after this batch, with its outputs and predictions.csv written" in err
    assert "SIGINT: stopped with 2 of 5 image(s) segmented, 0 failed" in err and "--resume does the rest" in err
    assert [r["output"] for r in read_rows(out)] == ["a", "b"] and not (out / "c_classes.png").exists()

    monkeypatch.setattr(stopping, "SAME_REQUEST_S", 0.0)  # a second SIGTERM, not the first delivered twice
    monkeypatch.setattr(predict.Ensemble, "__call__", signalled_in_the_first_batch(signal.SIGTERM, signal.SIGTERM))
    with pytest.raises(SystemExit) as info:
        predict.main([*argv, "--resume"])
    said = [line for line in capsys.readouterr().err.splitlines() if line.startswith("SIGTERM")]
    assert info.value.code == 143 and len(said) == 2, said  # the first one's note, then the stop
    assert said[1].startswith("SIGTERM: stopped at once; the outputs written so far are kept")
    assert [r["output"] for r in read_rows(out)] == ["a", "b"]  # the CSV of the first stop, untouched

    monkeypatch.setattr(predict.Ensemble, "__call__", real_call)
    with pytest.raises(SystemExit) as info:
        predict.main([*argv, "--resume"])
    assert info.value.code == 0 and "2 image(s) already done, skipped" in capsys.readouterr().err
    assert [r["output"] for r in read_rows(out)] == ["a", "b", "c", "d", "e"]
    assert all(r["status"] == "ok" for r in read_rows(out))


def test_a_stop_before_the_first_image_says_so(setup, tmp_path, monkeypatch):
    def interrupted(*args):
        raise KeyboardInterrupt
    monkeypatch.setattr(predict, "load_members", interrupted)  # while the networks load
    proc = cli("--weights", setup["run_a"], "--input", setup["input"] / "rgba.png", "--output", tmp_path / "o")
    assert proc.returncode == 130 and proc.stderr.strip().splitlines()[-1] == "SIGINT: stopped before the first image"


def test_resume_refuses_an_output_folder_made_with_other_weights_or_settings(setup, first):
    """predict_run.json records the weights (SHA-256 of their values) and settings; --resume
    with other ones would mix two models in one CSV: one line, exit 2, nothing touched."""
    _, done = first
    record = json.loads((done / "predict_run.json").read_text())
    (member,) = record["weights"]
    assert member["given"] == str(setup["run_a"]) and len(member["sha256"]) == 64
    assert member["sha256"] == predict.weights_sha256(load_any(setup["run_a"])[0])
    assert record["tta"] is False and record["precision"] == "fp32"
    stamps = {p: p.stat().st_mtime_ns for p in done.rglob("*")}
    for extra, what in ((["--weights", setup["run_b"]], "weights"), (["--weights", setup["run_a"], "--tta"], "--tta setting (no --tta there, --tta now)"),
                        (["--weights", setup["run_a"], "--no-overlay"],
                         "overlay (--overlay-alpha 0.6 there, --no-overlay now)")):
        proc = cli(*extra, "--input", setup["input"], "--output", done, "--resume")
        assert proc.returncode == 2
        assert proc.stderr.strip().splitlines()[-1].startswith(f"error: --resume: {done} was made with other {what}")
    assert {p: p.stat().st_mtime_ns for p in done.rglob("*")} == stamps


def test_resume_takes_the_same_weights_as_a_bundle_with_a_text_of_its_own(setup, first, tmp_path):
    """The weights are their values: the run's networks exported as a bundle (with an --about
    text the run folder has not) resume its output folder."""
    _, done = first
    out = tmp_path / "copy"
    shutil.copytree(done, out)
    bundle = export_bundle(setup["run_a"], tmp_path / "a.pth", about="the lab's model of run a")
    proc = cli("--weights", bundle, "--input", setup["input"] / "01_test.tif", "--output", out, "--resume")
    assert proc.returncode == 0 and "1 image(s) already done" in proc.stderr, proc.stderr


def test_resume_never_counts_another_photographs_outputs_as_done(setup, first):
    """Each class map names its photograph (path, and SHA-256 of its content); --resume with
    another photograph of the same output name is one line and exit 2, nothing touched. The
    same photograph in a moved folder still resumes; a resume with fewer inputs keeps the CSV
    rows of the others."""
    _, done = first
    out = setup["base"] / "resumed_other"
    shutil.copytree(done, out)
    photo = setup["input"] / "01_test.tif"
    assert outputs.made_from(out / "01_test_classes.png") == {"source": str(photo.resolve()),
                                                              "source_sha256": inputs.fingerprint(photo),
                                                              "orientation": "1"}
    other = setup["base"] / "other_in"
    other.mkdir()
    shutil.copy(setup["input"] / "sub" / "02_test.tif", other / "01_test.tif")  # another photograph, same name
    (out / "01_test_overlay.png").unlink()  # incomplete outputs are checked too
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    proc = cli("--weights", setup["run_a"], "--input", other / "01_test.tif", "--output", out, "--resume")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: --resume: {out / '01_test_classes.png'} was made from another photograph ({photo.resolve()}) "
        f"than {other / '01_test.tif'}, which takes the same output name; use another --output")
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == stamps
    shutil.copy(done / "01_test_overlay.png", out / "01_test_overlay.png")
    moved = setup["base"] / "moved_in"
    moved.mkdir()
    shutil.copy(photo, moved / "01_test.tif")  # the same photograph, its folder moved
    proc = cli("--weights", setup["run_a"], "--input", moved / "01_test.tif", "--output", out, "--resume")
    assert proc.returncode == 0 and "1 image(s) already done" in proc.stderr, proc.stderr
    # A photograph replaced in place (same path, other content): said as such.
    changed_out = setup["base"] / "changed_out"
    assert cli("--weights", setup["run_a"], "--input", moved / "01_test.tif", "--output", changed_out).returncode == 0
    shutil.copy(setup["input"] / "sub" / "02_test.tif", moved / "01_test.tif")
    proc = cli("--weights", setup["run_a"], "--input", moved / "01_test.tif", "--output", changed_out, "--resume")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1] == (
        f"error: --resume: {moved / '01_test.tif'} has changed since {changed_out / '01_test_classes.png'} was made "
        f"from it (another SHA-256); delete its outputs ({changed_out / '01_test'}_*) to segment it again, use "
        f"another --output, or --overwrite to replace the whole earlier run")


def test_resume_reads_class_maps_of_older_versions_by_the_csv(setup, first):
    """A map without the text fields counts as done when the earlier CSV row names this
    photograph; the CSV rows of images not in this run are kept."""
    _, done = first
    out = setup["base"] / "resumed_old"
    shutil.copytree(done, out)
    old = Image.open(out / "01_test_classes.png")
    plain = Image.fromarray(np.asarray(old))
    plain.putpalette(old.getpalette())
    plain.save(out / "01_test_classes.png")  # as versions before the fields wrote it
    assert outputs.made_from(out / "01_test_classes.png") == {"source": None, "source_sha256": None,
                                                              "orientation": None}
    proc = cli("--weights", setup["run_a"], "--input", setup["input"] / "01_test.tif", "--output", out, "--resume")
    assert proc.returncode == 0 and "1 image(s) already done" in proc.stderr, proc.stderr
    assert read_rows(out) == read_rows(done)
    # A CSV of a version before the notes, fov_fraction and sha256 columns: a resume given one
    # photograph recomputes its row; the rows of the others are kept, the new columns empty there;
    # a later resume given them all fills those in too.
    rows = read_rows(out)
    with open(out / "predictions.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[k for k in rows[0] if k not in ("notes", "fov_fraction", "sha256")],
                                extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    proc = cli("--weights", setup["run_a"], "--input", setup["input"] / "01_test.tif", "--output", out, "--resume")
    assert proc.returncode == 0 and "1 image(s) already done" in proc.stderr, proc.stderr
    rows = {r["output"]: r for r in read_rows(out)}
    assert rows["01_test"]["sha256"] and rows["01_test"]["fov_fraction"] and not rows["sub/grey"]["sha256"]
    proc = cli("--weights", setup["run_a"], "--input", setup["input"], "--output", out, "--resume")
    assert proc.returncode == 1 and "5 image(s) already done" in proc.stderr, proc.stderr  # the 2 bad ones fail again
    grey = next(r for r in read_rows(out) if r["output"] == "sub/grey")
    assert grey["notes"].startswith("a greyscale photograph") and grey["status"] == "ok"
    assert read_rows(out) == read_rows(done)  # every column as the first run wrote it


def test_a_file_name_that_is_not_utf8_is_written_with_escapes_and_resumed(setup, tmp_path):
    """Latin-1 names (a Windows zip): segmented, their CSV row escaped (the CSV stays UTF-8),
    and --resume finds that row again, also where the photograph is given otherwise (its folder
    alone): no second row, no second set of outputs."""
    inp = tmp_path / "in"
    (inp / "sub").mkdir(parents=True)
    latin1 = os.fsdecode(b"caf\xe9")
    shutil.copy(setup["input"] / "01_test.tif", inp / "sub" / f"{latin1}.tif")
    out = tmp_path / "out"
    proc = cli("--weights", setup["run_a"], "--input", inp, "--output", out, "--no-overlay")
    assert proc.returncode == 0, proc.stderr
    assert (out / "sub" / f"{latin1}_classes.png").is_file()  # the outputs keep the name's bytes
    (row,) = read_rows(out)  # as any CSV reader sees it, and as predict.py reads it back:
    assert (row["path"], row["output"]) == (f"{inp}/sub/caf\\xe9.tif", "sub/caf\\xe9")
    (row,) = outputs.read_rows(out / "predictions.csv")
    assert (row["path"], row["output"]) == (f"{inp}/sub/{latin1}.tif", f"sub/{latin1}")
    shutil.copy(setup["input"] / "01_test.tif", inp / "sub" / "plain.tif")
    proc = cli("--weights", setup["run_a"], "--input", inp / "sub", "--output", out, "--no-overlay", "--resume")
    assert proc.returncode == 0 and "1 image(s) already done" in proc.stderr, proc.stderr
    assert [r["output"] for r in read_rows(out)] == ["sub/caf\\xe9", "plain"]  # by path
    assert sorted(p.name for p in out.rglob("*_classes.png")) == sorted(["plain_classes.png", f"{latin1}_classes.png"])


def test_an_earlier_run_in_the_output_folder_is_resumed_or_replaced_never_mixed(setup):
    """Without --resume or --overwrite a folder holding an earlier run is refused in one line,
    nothing touched; --overwrite deletes the files of that run (and only those) first, so the
    folder holds one run: no pictures of images it did not predict, no optional outputs of
    other settings."""
    out = setup["base"] / "rerun"
    two = ["--weights", setup["run_a"], "--input", setup["input"] / "rgba.png", setup["input"] / "01_test.tif",
           "--output", out, "--save-probs"]
    assert cli(*two).returncode == 0
    (out / "my_notes.txt").write_text("kept")
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    one = ["--weights", setup["run_b"], "--input", setup["input"] / "rgba.png", "--output", out]
    proc = cli(*one)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"error: --output {out} holds an earlier run (predictions.csv of 2 image(s)): --resume adds to it (same "
        "weights and settings), --overwrite replaces it (its files are deleted first), or choose another --output"]
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == stamps
    assert cli(*one, "--resume", "--overwrite").returncode == 2
    proc = cli(*one, "--overwrite")
    assert proc.returncode == 0 and "--overwrite: deleted the earlier run's 10 file(s)" in proc.stderr, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["my_notes.txt", "predict_run.json", "predictions.csv",
                                                     "rgba_classes.png", "rgba_colour.png", "rgba_overlay.png"]
    assert [r["output"] for r in read_rows(out)] == ["rgba"]
    # An interrupted run (pictures and predict_run.json, no CSV yet): refused too, and replaced whole.
    (out / "predictions.csv").unlink()
    proc = cli(*one)
    assert proc.returncode == 2 and "holds an earlier run (predict_run.json, no CSV: an interrupted run)" in proc.stderr
    proc = cli("--weights", setup["run_a"], "--input", setup["input"] / "01_test.tif", "--output", out, "--overwrite")
    assert proc.returncode == 0 and "--overwrite: deleted the earlier run's 4 file(s)" in proc.stderr, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["01_test_classes.png", "01_test_colour.png", "01_test_overlay.png",
                                                     "my_notes.txt", "predict_run.json", "predictions.csv"]


def test_overwrite_leaves_a_run_of_its_own_in_a_sub_folder_alone(tmp_path):
    """--overwrite deletes the earlier run's files, found by its CSV and by the class maps that
    name their photograph; a sub-folder that holds another run (its predictions.csv) is not
    part of it, whatever its maps say."""
    def class_map_of(path, source):
        path.parent.mkdir(parents=True, exist_ok=True)
        info = PngInfo()
        info.add_text("source", source)
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(path, pnginfo=info)

    out = tmp_path / "out"
    class_map_of(out / "a_classes.png", "/photos/a.jpg")
    class_map_of(out / "site" / "b_classes.png", "/photos/site/b.jpg")
    class_map_of(out / "nested" / "c_classes.png", "/photos/c.jpg")
    (out / "predict_run.json").write_text("{}")
    (out / "nested" / "predictions.csv").write_text("path,output\n/photos/c.jpg,c\n")
    assert outputs.remove_earlier_run(out) == 3
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
        "nested", "nested/c_classes.png", "nested/predictions.csv"]


def test_output_folders_inside_each_other_are_refused_before_any_file_is_written(setup, tmp_path):
    """A run into a sub-folder of another run's output where that run has files, or one whose
    outputs would land in a sub-folder holding a run of its own, would overwrite files the other
    run's CSV names: one line, nothing written (the folders' times aside: the refused run's lock
    file comes and goes). Runs whose files do not meet are allowed."""

    def files_and_times():
        return {p: p.stat().st_mtime_ns if p.is_file() else "folder" for p in tmp_path.rglob("*")}

    sub = setup["input"] / "sub"
    outer, inner = tmp_path / "outer", tmp_path / "other" / "deeper"
    assert cli("--weights", setup["run_a"], "--input", sub, "--output", outer).returncode == 1  # one bad image
    stamps = files_and_times()
    proc = cli("--weights", setup["run_b"], "--input", sub / "deeper", "--output", outer / "deeper")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"error: --output {outer / 'deeper'} lies inside {outer}, the output folder of another run with files "
        f"there: they would mix; choose an --output outside it"]
    assert files_and_times() == stamps  # nothing written
    assert cli("--weights", setup["run_b"], "--input", sub / "deeper", "--output", inner).returncode == 0
    stamps = files_and_times()
    proc = cli("--weights", setup["run_a"], "--input", sub, "--output", tmp_path / "other")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"error: --output {tmp_path / 'other'}: the outputs of {sub / 'deeper' / 'grey16.tif'} would go to {inner}, "
        f"which holds another run (its predictions.csv or predict_run.json); choose another --output"]
    assert files_and_times() == stamps  # nothing written
    # Around a run of its own, with no file there: allowed, and that run resumes as before.
    assert cli("--weights", setup["run_a"], "--input", sub / "grey.png", "--output", tmp_path / "other").returncode == 0
    proc = cli("--weights", setup["run_b"], "--input", sub / "deeper", "--output", inner, "--resume")
    assert proc.returncode == 0 and "1 image(s) already done" in proc.stderr, proc.stderr
    (tmp_path / "project").mkdir()  # a predictions.csv of another program is no run of this one
    (tmp_path / "project" / "predictions.csv").write_text("id,label\n1,0\n")
    assert cli("--weights", setup["run_a"], "--input", sub / "deeper", "--output",
               tmp_path / "project" / "av").returncode == 0
    proc = cli("--weights", setup["run_a"], "--input", sub / "deeper", "--output", tmp_path / "project")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [  # neither --resume nor --overwrite is for it
        f"error: --output {tmp_path / 'project'} holds a predictions.csv that predict.py did not write (its columns "
        f"are not path, output, ...): choose another --output"]
    assert (tmp_path / "project" / "predictions.csv").read_text() == "id,label\n1,0\n"
    bom = tmp_path / "resaved"  # predict.py's CSV re-saved by a spreadsheet, with a byte-order mark
    bom.mkdir()
    (bom / "predictions.csv").write_bytes(b"\xef\xbb\xbf" + b"path,output,status\n/photos/a.jpg,a,ok\n")
    assert outputs.earlier_run(bom) == "predictions.csv of 1 image(s)"


def test_an_output_that_is_a_file_and_a_mask_not_found_are_said(setup, tmp_path, capsys):
    a_file = tmp_path / "taken.png"
    a_file.write_bytes(b"x")
    with pytest.raises(SystemExit) as info:
        predict.main(["--weights", str(setup["run_a"]), "--input", str(setup["input"] / "rgba.png"),
                      "--output", str(a_file)])
    assert info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: --output {a_file}: a file of that name exists; give a folder"]
    masks = tmp_path / "masks"
    masks.mkdir()
    Image.new("L", DRIVE_SIZE, 255).save(masks / "someone_else.png")
    args = predict.build_parser().parse_args(["--weights", str(setup["run_a"]), "--input",
                                              str(setup["input"] / "rgba.png"), "--output", str(tmp_path / "o"),
                                              "--masks", str(masks)])
    assert predict.run(args) == 0
    assert f"note: {setup['input'] / 'rgba.png'}: no mask named like it in --masks {masks}; FOV estimated" in \
        capsys.readouterr().err


def test_ensemble_writes_an_uncertainty_map_and_probabilities(setup):
    out = setup["base"] / "ensemble"
    proc = cli("--weights", setup["run_a"], setup["run_b"], "--input", setup["input"] / "sub",
               "--output", out, "--save-probs", "--batch-size", "3")
    assert proc.returncode == 1 and "ensemble of 2" in proc.stderr, proc.stderr
    for rel in ("02_test.tif", "grey.png", "deeper/grey16.tif"):
        paths = outputs_of(out, rel, ("uncertainty", "probs"))
        assert all(p.is_file() for p in paths.values()), rel
        unc = np.asarray(Image.open(paths["uncertainty"]))
        assert unc.shape == (DRIVE_SIZE[1], DRIVE_SIZE[0]) and unc.dtype == np.uint8
        assert unc.max() > 0  # two different random networks disagree somewhere
        probs = np.load(paths["probs"])
        assert probs["probs"].dtype == np.float16 and probs["probs"].shape == (3, DRIVE_SIZE[1], DRIVE_SIZE[0])
        assert list(probs["channels"]) == ["artery", "uncertain", "vein"]
        assert (unc[~probs["fov"]] == 0).all()


def test_no_overlay_writes_the_maps_without_a_copy_of_the_photograph(setup, tmp_path):
    out = tmp_path / "out"
    proc = cli("--weights", setup["run_a"], "--input", setup["input"] / "rgba.png", "--output", out, "--no-overlay")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["predict_run.json", "predictions.csv", "rgba_classes.png",
                                                     "rgba_colour.png"]
    assert json.loads((out / "predict_run.json").read_text())["overlay_alpha"] is None
    proc = cli("--weights", setup["run_a"], "--input", setup["input"] / "rgba.png", "--output", out, "--no-overlay",
               "--resume")
    assert proc.returncode == 0 and "1 image(s) already done" in proc.stderr, proc.stderr


def test_an_input_size_other_than_the_trained_one_is_noted(setup, tmp_path):
    proc = cli("--weights", setup["run_a"], "--input", setup["input"] / "rgba.png", "--output", tmp_path / "o",
               "--image-size", "32", "48")
    assert proc.returncode == 0, proc.stderr
    assert (f"note: {setup['run_a']} was trained at 64 x 64; --image-size 32 x 48 shows it vessels of other widths "
            f"than it learned from: expect other maps") in proc.stderr
    proc = cli("--weights", setup["run_a"], "--input", setup["input"] / "rgba.png", "--output", tmp_path / "p",
               "--image-size", "64", "64")
    assert proc.returncode == 0 and "was trained at" not in proc.stderr


def test_the_same_weights_twice_are_noted(setup, tmp_path, capsys):
    """An ensemble that names one set of weights twice (here a run folder and its bundle) is
    run as asked, with a note: it is no ensemble."""
    bundle = export_bundle(setup["run_a"], tmp_path / "a.pth")
    args = predict.build_parser().parse_args(["--weights", str(setup["run_a"]), str(bundle), "--input",
                                              str(setup["input"] / "rgba.png"), "--output", str(tmp_path / "out")])
    assert predict.run(args) == 0
    assert (f"note: {bundle} holds the same weights as {setup['run_a']} (SHA-256 of their values): this ensemble "
            "counts them twice") in capsys.readouterr().err
    args.weights, args.overwrite = [str(bundle), str(bundle)], True  # one path twice: said so
    assert predict.run(args) == 0
    assert f"note: {bundle} is given twice: this ensemble counts it twice" in capsys.readouterr().err
    les = tmp_path / "les_run"  # members of other data sets: allowed, and said
    save_best(les, Networks("sigmoid", 4), RunConfig(dataset="LES-AV", base_width=4, image_size=(64, 64)), 1, 0.5)
    args.weights = [str(setup["run_a"]), str(les)]
    assert predict.run(args) == 0
    assert (f"note: the members of this ensemble were trained on different data sets ({setup['run_a']}: DRIVE_AV, "
            f"{les}: LES-AV); their maps are averaged") in capsys.readouterr().err


@pytest.mark.parametrize("native, speedup, why", [
    (False, None, "cpu has no native bf16/fp16 here"),
    (True, 0.6, "bf16 runs at 0.60x the speed of fp32 on this CPU (measured; mixed precision needs 1.2x)"),
])
def test_amp_where_the_machine_has_no_mixed_precision_that_pays_is_said(setup, tmp_path, capsys, monkeypatch,
                                                                         native, speedup, why):
    from scripts import device as dev
    monkeypatch.setattr(dev, "cpu_has_native_bf16", lambda flags=None: native)
    monkeypatch.setattr(dev, "cpu_bf16_speedup", lambda: speedup)
    args = predict.build_parser().parse_args(["--weights", str(setup["run_a"]), "--input",
                                              str(setup["input"] / "rgba.png"), "--output", str(tmp_path), "--amp",
                                              "--device", "cpu"])
    assert predict.run(args) == 0
    assert f"note: --amp: {why}, so this runs in fp32" in capsys.readouterr().err
    assert json.loads((tmp_path / "predict_run.json").read_text())["precision"] == "fp32"


def test_a_note_shared_by_a_cohort_is_printed_for_its_first_images_and_then_counted(setup, tmp_path):
    """A cohort (here 5 photographs of HRF-AV's 3:2 shape in five sizes, squeezed to the
    networks' 64 x 64) shares its notes: printed for the first NOTES_SHOWN images, then one line
    saying on how many more, the numbers left out; the CSV keeps every image's notes."""
    cohort = tmp_path / "cohort"
    cohort.mkdir()
    photo = Image.open(setup["input"] / "01_test.tif")
    sizes = [(876 - 6 * k, 584 - 4 * k) for k in range(5)]
    for k, size in enumerate(sizes):
        photo.resize(size).save(cohort / f"{k}.png")
    photo.resize((876, 584)).convert("L").convert("RGB").save(cohort / "grey.png")
    proc = cli("--weights", setup["run_a"], "--input", cohort, "--output", tmp_path / "out")

    def squeezed(w="...", h="...", net="...", by="..."):
        return (f"its {w} x {h} is resized to the networks' {net} x {net}, which squeezes it {by}x horizontally: the "
                f"networks learned from undistorted photographs, so expect poorer maps")
    notes = [line for line in proc.stderr.splitlines() if line.startswith("note:")]
    assert notes == [f"note: {cohort / f'{k}.png'}: {squeezed(*sizes[k], 64, '1.50')}"
                     for k in range(predict.NOTES_SHOWN)] + [
        f"note: {cohort / 'grey.png'}: a greyscale photograph; the networks learned from colour ones (artery and "
        f"vein differ in colour), so expect poorer maps",
        f"note: and 3 more image(s): {squeezed()} (each image's notes, with its numbers: predictions.csv, column "
        f"notes)"], proc.stderr
    rows = {r["path"]: r["notes"] for r in read_rows(tmp_path / "out")}
    assert all(squeezed(*sizes[k], 64, "1.50") in rows[str(cohort / f"{k}.png")] for k in range(5))


def test_tta_is_flip_equivariant(setup):
    """With --tta the prediction of the mirrored photograph is the mirrored prediction."""
    inp = setup["base"] / "tta_in"
    inp.mkdir()
    photo = Image.open(setup["input"] / "01_test.tif")
    photo.save(inp / "a.png")
    photo.transpose(Image.FLIP_LEFT_RIGHT).save(inp / "b.png")
    out = setup["base"] / "tta"
    args = predict.build_parser().parse_args(["--weights", str(setup["run_a"]), "--input", str(inp),
                                              "--output", str(out), "--tta", "--save-probs"])
    assert predict.run(args) == 0
    a, b = (np.load(out / f"{n}_probs.npz")["probs"].astype(np.float32) for n in "ab")
    assert np.abs(a - b[..., ::-1]).max() < 2e-3


def test_masks_and_the_test_py_picture(setup):
    """--masks: the DRIVE masks (01_test_mask.gif) are found by name; the colour map is
    exactly test.py's raw_pre picture of the same network."""
    out = setup["base"] / "masked"
    masks = setup["real_data"] / "DRIVE_AV" / "test" / "mask"
    args = predict.build_parser().parse_args(["--weights", str(setup["run_a"]), "--input",
                                              str(setup["input"] / "01_test.tif"), "--output", str(out),
                                              "--masks", str(masks)])
    args.input, args.output = [setup["input"] / "01_test.tif"], out  # paths, from a script of one's own
    assert predict.run(args) == 0
    options = json.loads((out / "predict_run.json").read_text())["invocations"][0]["options"]
    assert options["input"] == [str(setup["input"] / "01_test.tif")] and options["output"] == str(out)
    row = read_rows(out)[0]
    assert row["fov_source"] == "mask"
    nets, cfg = load_any(setup["run_a"])
    image = read_image(setup["input"] / "01_test.tif")
    fov = read_mask(masks / "01_test_mask.gif")
    assert float(row["fov_fraction"]) == pytest.approx(fov.mean(), abs=1e-6)  # area = fraction x width x height
    small = np.asarray(Image.fromarray(image).resize(tuple(cfg["image_size"]), Image.BILINEAR))
    probs = predict_probs(nets, torch.from_numpy(small.copy()).permute(2, 0, 1)[None])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # test.py scores on one torch thread (evaluate_images)
    try:
        expected = full_size_picture(probs[0], DRIVE_SIZE, fov, "sigmoid")
    finally:
        torch.set_num_threads(threads)
    assert np.array_equal(np.asarray(Image.open(out / "01_test_colour.png")), expected)
    assert torch.get_num_threads() == threads  # predict.run gave the process its thread count back


def test_bundle_weights_and_one_line_errors(setup, capsys):
    index = export_bundle(setup["run_a"], setup["base"] / "bundle" / "w.pth", shard_mib=0.25)
    out = setup["base"] / "from_bundle"
    args = predict.build_parser().parse_args(["--weights", str(index), "--input", str(setup["input"] / "rgba.png"),
                                              "--output", str(out)])
    assert predict.run(args) == 0
    first_out = setup["base"] / "out" / "rgba_colour.png"
    if first_out.exists():  # same weights as run_a: same picture
        assert np.array_equal(np.asarray(Image.open(first_out)), np.asarray(Image.open(out / "rgba_colour.png")))
    capsys.readouterr()
    for extra in (["--activation", "softmax"], ["--image-size", "60", "64"]):
        with pytest.raises(SystemExit) as info:
            predict.main(["--weights", str(setup["run_a"]), "--input", str(setup["input"]),
                          "--output", str(out), "--overwrite", *extra])
        assert info.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:"), err
        assert (out / "rgba_colour.png").is_file() and (out / "predictions.csv").is_file()  # --overwrite lost nothing
    softmax = make_run(setup["base"] / "run_softmax", 2, "softmax")
    with pytest.raises(SystemExit):
        predict.main(["--weights", str(setup["run_a"]), str(softmax), "--input", str(setup["input"]),
                      "--output", str(setup["base"] / "not_made")])
    assert "must be one variant" in capsys.readouterr().err
    missing = setup["base"] / "no_such_folder"  # nothing to do: one line before any network loads
    with pytest.raises(SystemExit) as info:
        predict.main(["--weights", str(setup["run_a"]), "--input", str(missing), "--output", str(out)])
    assert info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"error: file or folder not found: {missing}"]
    listing = setup["base"] / "list_of_missing.txt"  # a list of paths none of which exists: the same
    listing.write_text(f"{missing}.jpg\n")
    with pytest.raises(SystemExit) as info:
        predict.main(["--weights", str(setup["run_a"]), "--input", str(listing), "--output", str(out)])
    assert info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"error: file or folder not found: {missing}.jpg"]
    empty = setup["base"] / "empty_folder"  # an empty folder beside it: still the one line, saying both
    empty.mkdir()
    with pytest.raises(SystemExit) as info:
        predict.main(["--weights", str(setup["run_a"]), "--input", str(empty), str(missing), "--output", str(out)])
    assert info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: file or folder not found: {missing}; {empty}: no images (.jpg .jpeg .png .tif .tiff .bmp) in this folder"]


def test_a_photograph_stored_sideways_is_read_and_segmented_as_viewers_show_it(setup, tmp_path):
    """A phone's or camera's EXIF orientation tag is applied: the outputs are the same way up,
    and the same maps, as those of the photograph stored upright; the CSV row says so."""
    upright = Image.open(setup["input"] / "01_test.tif").convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned 90 degrees counter-clockwise: viewers turn it back clockwise
    (tmp_path / "in").mkdir()
    upright.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "in" / "side.png", exif=exif.tobytes())
    upright.save(tmp_path / "in" / "plain.png")
    assert np.array_equal(read_image(tmp_path / "in" / "side.png", upright=True), np.asarray(upright))
    args = predict.build_parser().parse_args(["--weights", str(setup["run_a"]), "--input", str(tmp_path / "in"),
                                              "--output", str(tmp_path / "out")])
    assert predict.run(args) == 0
    side, plain = (np.asarray(Image.open(tmp_path / "out" / f"{n}_classes.png")) for n in ("side", "plain"))
    assert side.shape == (DRIVE_SIZE[1], DRIVE_SIZE[0]) and np.array_equal(side, plain)
    notes = {r["output"]: r["notes"] for r in read_rows(tmp_path / "out")}
    assert notes["side"].startswith("turned as image viewers show it (EXIF orientation 6)") and not notes["plain"]
    # --resume over maps of a version that read every photograph as stored (no 'orientation'
    # recorded): the tagged photograph's is made again, upright; the other's is kept.
    for name in ("side", "plain"):
        classes = tmp_path / "out" / f"{name}_classes.png"
        with Image.open(classes) as img:
            old = img.convert("L") if name == "plain" else img.convert("L").transpose(Image.Transpose.ROTATE_90)
            source, sha = img.info["source"], img.info["source_sha256"]
        text = PngInfo()  # as the older version wrote it: no 'orientation'
        text.add_text("source", source)
        text.add_text("source_sha256", sha)
        old.save(classes, pnginfo=text)
        assert outputs.made_from(classes)["orientation"] is None
    stamps = {n: (tmp_path / "out" / f"{n}_colour.png").stat().st_mtime_ns for n in ("side", "plain")}
    args.resume = True
    assert predict.run(args) == 0
    assert (tmp_path / "out" / "side_colour.png").stat().st_mtime_ns != stamps["side"]
    assert (tmp_path / "out" / "plain_colour.png").stat().st_mtime_ns == stamps["plain"]
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / "side_classes.png")), plain)


def test_inputs_from_globs_and_list_files(setup, tmp_path):
    inp = setup["input"]
    items, warnings = inputs.find_inputs([str(inp / "**" / "*.tif")])
    assert sorted(i.rel for i in items) == ["01_test", "sub/02_test", "sub/deeper/grey16"] and not warnings
    # A glob's extension matches in any case, as a folder's search does (cameras write .JPG).
    (tmp_path / "cam").mkdir()
    for name in ("x.JPG", "y.jpg", "z.Jpg", "w.jpeg"):
        shutil.copy(inp / "rgba.png", tmp_path / "cam" / name)
    items, _ = inputs.find_inputs([str(tmp_path / "cam" / "*.jpg")])
    assert [i.rel for i in items] == ["x", "y", "z"]
    listing = tmp_path / "list.txt"
    listing.write_text(f"# photographs\n{inp / 'rgba.png'}\n\n{os.path.relpath(inp / 'sub' / 'grey.png', tmp_path)}\n"
                       f"{inp / 'missing.jpg'}\n")
    items, _ = inputs.find_inputs([str(listing), str(tmp_path / "nothing_here")])
    assert [i.rel for i in items] == ["rgba", "sub/grey", "missing", "nothing_here"]
    assert [bool(i.missing) for i in items] == [False, False, True, True]
    assert items[2].missing == f"listed in {listing}, but not found"
    listing.write_text(f"{inp / 'sub'}\n")
    (item,), _ = inputs.find_inputs([str(listing)])
    assert item.missing == f"listed in {listing}, but a folder; a list names image files"
    # Same stem twice (a.png, a.jpg): distinct output names.
    (tmp_path / "d").mkdir()
    for name in ("a.png", "a.jpg"):
        shutil.copy(inp / "rgba.png", tmp_path / "d" / name)
    items, warnings = inputs.find_inputs([str(tmp_path / "d")])
    assert sorted(i.rel for i in items) == ["a_jpg", "a_png"] and not warnings
    for name in ("notes.txt", "c.webp", ".DS_Store"):  # other files are said (not hidden ones)
        (tmp_path / "d" / name).write_text("x")
    items, warnings = inputs.find_inputs([str(tmp_path / "d")])
    assert sorted(i.rel for i in items) == ["a_jpg", "a_png"]
    assert warnings == [f"{tmp_path / 'd'}: files of other types skipped (.txt, .webp); images are "
                        ".jpg .jpeg .png .tif .tiff .bmp"]
    for name in ("notes.txt", "c.webp", ".DS_Store"):
        (tmp_path / "d" / name).unlink()
    # Outputs of earlier runs inside the searched folder are not photographs to segment.
    (tmp_path / "d" / "old").mkdir()
    (tmp_path / "d" / "old" / "predictions.csv").write_text("path\n")
    shutil.copy(inp / "rgba.png", tmp_path / "d" / "old" / "a_colour.png")
    shutil.copy(inp / "rgba.png", tmp_path / "d" / "a_overlay.png")  # in --output itself
    items, _ = inputs.find_inputs([str(tmp_path / "d")], output=tmp_path / "d")
    assert sorted(i.rel for i in items) == ["a_jpg", "a_png"]


def test_a_file_predict_py_did_not_write_is_never_overwritten_by_an_output(setup, tmp_path):
    """A photograph named like another's output (eye_colour.png beside eye.tif, --output the
    input folder), or a file of one's own where an output (or a stale optional output) would
    go: one line, exit 2, nothing written or removed. predict.py's own outputs there are
    replaced as before."""
    folder = tmp_path / "eyes"
    folder.mkdir()
    shutil.copy(setup["input"] / "01_test.tif", folder / "eye.tif")
    shutil.copy(setup["input"] / "rgba.png", folder / "eye_colour.png")
    before = {f.name: f.read_bytes() for f in folder.iterdir()}
    proc = cli("--weights", setup["run_a"], "--input", folder, "--output", folder)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1] == (
        f"error: --output {folder}: {folder / 'eye_colour.png'} is in the way of the outputs of {folder / 'eye.tif'}, "
        f"and predict.py did not write it (a photograph or a file of your own): move it, or choose another --output")
    assert {f.name: f.read_bytes() for f in folder.iterdir()} == before
    out = tmp_path / "out"  # a file of one's own where --no-overlay would remove a stale overlay
    out.mkdir()
    (out / "eye_overlay.png").write_bytes(b"mine")
    proc = cli("--weights", setup["run_a"], "--input", folder / "eye.tif", "--output", out, "--no-overlay")
    assert proc.returncode == 2 and "eye_overlay.png is in the way of the outputs of" in proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["eye_overlay.png"]
    (folder / "eye_colour.png").rename(tmp_path / "moved.png")  # moved away: outputs beside the photograph
    assert cli("--weights", setup["run_a"], "--input", folder, "--output", folder).returncode == 0
    for again in ("--resume", "--overwrite"):  # its own outputs are no file in the way
        proc = cli("--weights", setup["run_a"], "--input", folder, "--output", folder, again)
        assert proc.returncode == 0, proc.stderr


def test_masks_beside_photographs_and_interrupted_runs_are_not_photographs(setup, tmp_path):
    """Clinical exports keep <stem>_mask.* beside <stem>.*: such a mask is the FOV of its
    photograph, never a photograph in the CSV; an interrupted run's folder (predict_run.json,
    no predictions.csv yet) holds outputs, not photographs."""
    inp = setup["input"]
    cohort = tmp_path / "c"
    cohort.mkdir()
    shutil.copy(inp / "01_test.tif", cohort / "14_test.tif")
    Image.fromarray(np.full((584, 565), 255, np.uint8)).save(cohort / "14_test_mask.png")
    shutil.copy(inp / "rgba.png", cohort / "lonely_mask.png")  # no photograph 'lonely': a photograph
    items, warnings = inputs.find_inputs([str(cohort)])
    assert sorted(i.rel for i in items) == ["14_test", "lonely_mask"]
    assert warnings == [f"1 file(s) named like a photograph's mask (<stem>_mask.*) beside it, not segmented "
                        f"(e.g. {cohort / '14_test_mask.png'}); --masks on their folder uses them as FOV masks"]
    items, warnings = inputs.find_inputs([str(cohort / "*.png"), str(cohort / "*.tif")], masks=cohort)
    assert sorted(i.rel for i in items) == ["14_test", "lonely_mask"] and len(warnings) == 1  # over two globs too
    assert not warnings[0].endswith("FOV masks")  # --masks given: nothing to advise
    for order in ([str(cohort / "14_test_mask.png"), str(cohort)], [str(cohort), str(cohort / "14_test_mask.png")]):
        items, _ = inputs.find_inputs(order)  # named itself: taken, whatever the order
        assert sorted(i.rel for i in items) == ["14_test", "14_test_mask", "lonely_mask"], order
    # --masks on that folder: each photograph's FOV is its _mask file, never the photograph itself.
    (photo_item,) = [i for i in inputs.find_inputs([str(cohort)], masks=cohort)[0] if i.rel == "14_test"]
    assert inputs.MaskFinder(cohort).find(photo_item) == cohort / "14_test_mask.png"
    (cohort / "_mask.png").write_bytes((cohort / "lonely_mask.png").read_bytes())  # no stem at all: a photograph
    assert "_mask" in [i.rel for i in inputs.find_inputs([str(cohort)])[0]]
    (cohort / "_mask.png").unlink()
    # An interrupted run: outputs and predict_run.json, no CSV.
    (cohort / "run").mkdir()
    (cohort / "run" / "predict_run.json").write_text("{}")
    shutil.copy(inp / "rgba.png", cohort / "run" / "14_test_colour.png")
    items, warnings = inputs.find_inputs([str(cohort)])
    assert sorted(i.rel for i in items) == ["14_test", "lonely_mask"] and len(warnings) == 1
    items, warnings = inputs.find_inputs([str(cohort / "run")])
    assert items == [] and warnings == [f"{cohort / 'run'}: only the outputs of an earlier predict.py run or masks "
                                        f"in this folder, no photographs"]


def test_a_data_sets_folder_gives_its_photographs_not_its_labels_and_masks(setup):
    """--input data/LES-AV/test (or data/LES-AV): images/ only, and a line saying so; the labels
    folder named itself is searched, and each label then fails as one (the previous test)."""
    real = setup["real_data"]
    items, warnings = inputs.find_inputs([str(real / "LES-AV" / "test")])
    assert len(items) == 11 and all(Path(i.path).parent.name == "images" for i in items)
    assert warnings == [f"{real / 'LES-AV' / 'test'}: a data set's layout ({real / 'LES-AV' / 'test'}): its images/ "
                        f"are segmented, not the files of its 1st_manual/; --masks {real / 'LES-AV' / 'test' / 'mask'} "
                        f"uses its FOV masks"]
    items, warnings = inputs.find_inputs([str(real / "LES-AV" / "test")], masks=real / "LES-AV" / "test" / "mask")
    assert len(items) == 11 and warnings[0].endswith("not the files of its 1st_manual/")  # --masks given: no hint
    items, warnings = inputs.find_inputs([str(real / "LES-AV")])
    assert len(items) == 22 and "--masks on a split's mask/ folder" in warnings[0]
    items, warnings = inputs.find_inputs([str(real / "LES-AV" / "test" / "1st_manual")])
    assert len(items) == 11 and warnings == []


def test_linked_cohorts_keep_their_names_and_list_files_are_read_as_written(setup, tmp_path):
    inp = setup["input"]
    linked = tmp_path / "linked"
    for patient, photo in (("patient1", "01_test.tif"), ("patient2", "sub/02_test.tif")):
        (linked / patient).mkdir(parents=True)
        (linked / patient / "left.tif").symlink_to(inp / photo)
    (linked / "site").symlink_to(inp / "sub", target_is_directory=True)  # a linked folder is searched
    (linked / "up").symlink_to(tmp_path, target_is_directory=True)  # a link back up: not searched
    (tmp_path / "sibling").mkdir()
    shutil.copy(inp / "rgba.png", tmp_path / "sibling" / "x.png")
    (linked / ".ipynb_checkpoints").mkdir()  # hidden folders are not searched
    shutil.copy(inp / "rgba.png", linked / ".ipynb_checkpoints" / "a-checkpoint.png")
    (linked / "site" / "deeper" / "loop").symlink_to(linked, target_is_directory=True)  # ... once
    try:
        items, warnings = inputs.find_inputs([str(linked)])
        # A recursive glob walks as the folder search does (Python's glob would follow the links back up).
        globbed, _ = inputs.find_inputs([str(linked / "**" / "*.*")])
    finally:
        (inp / "sub" / "deeper" / "loop").unlink()
    assert [i.rel for i in globbed] == [i.rel for i in items]
    assert warnings == [f"1 input(s) the same file as another one (a link), segmented once: "
                        f"{linked / 'site' / '02_test.tif'} as {linked / 'patient2' / 'left.tif'}"]
    # (site/02_test.tif is patient2/left.tif: one photograph, segmented once)
    assert sorted(i.rel for i in items) == ["patient1/left", "patient2/left", "site/deeper/grey16", "site/grey",
                                            "site/trunc"]
    # A list written by Notepad (byte-order mark, CRLF) loses no entry; names under the entries'
    # common folder as listed (links not resolved).
    listing = tmp_path / "bom.txt"
    listing.write_bytes(b"\xef\xbb\xbf" + f"{linked / 'patient1' / 'left.tif'}\r\n{linked / 'site' / 'grey.png'}\r\n".encode())
    items, _ = inputs.find_inputs([str(listing)])
    assert [(i.rel, i.missing) for i in items] == [("patient1/left", None), ("site/grey", None)]
    with open(listing, "a") as f:  # a mistyped line elsewhere renames nothing
        f.write("/no/such/folder/a.png\r\n")
    items, _ = inputs.find_inputs([str(listing)])
    assert [i.rel for i in items] == ["patient1/left", "site/grey", "a"] and items[2].missing
    # One name in three input folders (a patient's each): the folder's name before it; where
    # the folders share a name too, the extension and a number after it.
    for k in ("patA", "patB", "patC", "x/patC"):
        (tmp_path / "same" / k).mkdir(parents=True)
        shutil.copy(inp / "rgba.png", tmp_path / "same" / k / "OD.png")
    items, _ = inputs.find_inputs([str(tmp_path / "same" / k) for k in ("patA", "patB", "patC")])
    assert [i.rel for i in items] == ["patA/OD", "patB/OD", "patC/OD"]
    items, _ = inputs.find_inputs([str(tmp_path / "same" / k) for k in ("patA", "patC", "x/patC")])
    assert [i.rel for i in items] == ["OD_png", "OD_png_2", "OD_png_3"]
    # A file named explicitly that is not an image by its name is read, with a word on list files.
    (tmp_path / "list.csv").write_text("a.png\n")
    items, warnings = inputs.find_inputs([str(tmp_path / "list.csv")])
    assert [i.rel for i in items] == ["list"] and warnings == [
        f"{tmp_path / 'list.csv'}: not an image file name (.jpg .jpeg .png .tif .tiff .bmp); read as one all the "
        f"same (a list of images is a .txt .lst .list file)"]


def test_an_empty_mask_fails_its_image_and_a_tiny_one_is_noted(setup, tmp_path):
    photo = read_image(setup["input"] / "01_test.tif")
    masks = tmp_path / "masks"
    masks.mkdir()
    mask = np.zeros((584, 565), np.uint8)
    Image.fromarray(mask).save(masks / "a.png")
    mask[:10, :10] = 255
    Image.fromarray(mask).save(masks / "b.png")
    finder = inputs.MaskFinder(masks)
    with pytest.raises(ValueError, match=r"its mask .*a.png is empty \(no non-zero pixel\): nothing to segment"):
        inputs.read_fov(inputs.Item("a.tif", "a"), photo, finder)
    fov, source = inputs.read_fov(inputs.Item("b.tif", "b"), photo, finder)
    notes = inputs.image_notes(inputs.Item("b.tif", "b"), photo, fov, source, [(592, 592)], finder)
    assert "its mask covers only 0.0 % of the photograph: is it the mask of this one?" in notes
    with pytest.raises(ConfigError, match="a file; --masks is a folder of masks named like the images"):
        inputs.MaskFinder(masks / "a.png")


@pytest.mark.parametrize("pattern", ["**/*.jpg", "**", "a/**/*.jpg", "**/b/*", "a/**/[!]]*.jpg", "**/[]]*.jpg",
                                     "**/[^]*.jpg", "**/[!y]*.jpg", "a/**/[xy]?.jpg", "*/*.jpg"])
def test_a_recursive_glob_finds_what_pythons_glob_finds(tmp_path, monkeypatch, pattern):
    """On a tree without links (where Python's glob cannot loop) the project's walk of a
    recursive glob finds exactly what glob.glob finds."""
    for name in ("x.jpg", "a/y.jpg", "a/yz.jpg", "a/b/z.jpg", "a/]x.jpg", "a/^q.jpg", "c/w.png", "a/b/deep/v.jpg"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    base = Path(pattern)
    while glob.has_magic(str(base)):
        base = base.parent
    expected = sorted(f for f in glob.glob(pattern, recursive=True) if os.path.isfile(f))
    assert sorted(map(str, inputs._recursive_glob(pattern, base))) == expected


def test_masks_of_patients_with_photographs_of_one_name(tmp_path):
    """OD.png of every patient: each photograph takes the mask of its own folder, never another
    patient's; a mask in the top folder fits any photograph of its name, and one mask taken by
    several photographs of a run is noted."""
    masks = tmp_path / "masks"
    for patient in ("patA", "patB"):
        (masks / patient).mkdir(parents=True)
        (masks / patient / "OD.png").write_bytes(b"")
    finder = inputs.MaskFinder(masks)
    photos = {p: inputs.Item(str(tmp_path / "cohort" / p / "OD.jpg"), "OD") for p in ("patA", "patB", "patC")}
    assert finder.find(photos["patB"]) == masks / "patB" / "OD.png"
    assert finder.find(photos["patA"]) == masks / "patA" / "OD.png"
    assert finder.find(photos["patC"]) is None  # no mask of its own: estimated, and noted
    (masks / "OD_mask.png").write_bytes(b"")  # one for all: taken where no nearer one exists
    finder = inputs.MaskFinder(masks)
    assert finder.find(photos["patC"]) == masks / "OD_mask.png"
    assert finder.find(photos["patB"]) == masks / "patB" / "OD.png"
    finder.note_shared([photos["patC"], inputs.Item(str(tmp_path / "cohort" / "patD" / "OD.jpg"), "OD_2")])
    rgb, fov = np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8), np.ones((64, 64), bool)
    assert inputs.image_notes(photos["patC"], rgb, fov, "mask", [(64, 64)], finder) == (
        f"its mask {masks / 'OD_mask.png'} is the mask of 2 photographs of this run (named like each, in no folder "
        f"of its own): check it is this one's",)


def test_patient_folders_given_one_by_one_take_their_masks_from_the_cohort_above(setup, tmp_path):
    """cohort/p1/OD.jpg with cohort/p1/OD_mask.png, --input cohort/p1 cohort/p2 --masks cohort:
    the photographs lie inside --masks and are segmented, each with its own mask."""
    cohort = tmp_path / "cohort"
    for patient in ("p1", "p2"):
        (cohort / patient).mkdir(parents=True)
        shutil.copy(setup["input"] / "01_test.tif", cohort / patient / "OD.tif")
        Image.fromarray(np.full((584, 565), 255, np.uint8)).save(cohort / patient / "OD_mask.png")
    items, warnings = inputs.find_inputs([str(cohort / "p1"), str(cohort / "p2")], masks=cohort)
    assert sorted(i.path for i in items) == [str(cohort / p / "OD.tif") for p in ("p1", "p2")]
    finder = inputs.MaskFinder(cohort)
    assert [finder.find(i) for i in sorted(items, key=lambda i: i.path)] == [cohort / p / "OD_mask.png"
                                                                           for p in ("p1", "p2")]
    inside = inputs.find_inputs([str(cohort)], masks=cohort / "p1")  # --masks inside --input: its files are masks
    assert sorted(i.path for i in inside[0]) == [str(cohort / "p2" / "OD.tif")]


def test_resume_keeps_an_images_earlier_output_name(setup, tmp_path, monkeypatch):
    """The output name depends on how an image is given; --resume keeps the earlier one, so an
    image is not segmented twice under two names (its old outputs left behind)."""
    cohort = tmp_path / "cohort"
    (cohort / "clinic").mkdir(parents=True)
    shutil.copy(setup["input"] / "01_test.tif", cohort / "clinic" / "x.tif")
    out = tmp_path / "out"
    base = ["--weights", setup["run_a"], "--output", out]
    monkeypatch.chdir(tmp_path)
    assert cli(*base, "--input", "cohort").returncode == 0  # the CSV holds the relative path
    monkeypatch.chdir(cohort / "clinic")  # from elsewhere, alone: its name would be 'x'
    proc = cli(*base, "--input", "x.tif", "--resume")
    assert proc.returncode == 0 and "--resume: 1 image(s) already done, skipped" in proc.stderr, proc.stderr
    shutil.copy(setup["input"] / "rgba.png", cohort / "clinic" / "x.png")  # a new photograph of the same stem
    proc = cli(*base, "--input", cohort, "--resume")
    assert proc.returncode == 0 and "1 image(s) already done" in proc.stderr, proc.stderr
    assert sorted((r["output"], os.path.basename(r["path"])) for r in read_rows(out)) == [
        ("clinic/x", "x.tif"), ("clinic/x_png", "x.png")]
    assert sorted(p.name for p in (out / "clinic").iterdir()) == sorted(
        f"{stem}_{kind}.png" for stem in ("x", "x_png") for kind in ("classes", "colour", "overlay"))


def test_a_batch_the_networks_fail_on_fails_its_images_only(setup, tmp_path, monkeypatch):
    """An error in the networks (out of memory, say) fails that batch's images, each with a row
    saying so (its photograph's SHA-256 too), and the run carries on with the next batch."""
    real_call, calls = predict.Ensemble.__call__, []

    def first_batch_fails(self, batch):
        calls.append(len(batch))
        if len(calls) == 1:
            raise RuntimeError("CPU out of memory\n(more lines)")
        return real_call(self, batch)
    monkeypatch.setattr(predict.Ensemble, "__call__", first_batch_fails)
    inp = tmp_path / "in"
    inp.mkdir()
    for name in ("a", "b", "c"):
        shutil.copy(setup["input"] / "01_test.tif", inp / f"{name}.tif")
    proc = cli("--weights", setup["run_a"], "--input", inp, "--output", tmp_path / "out", "--batch-size", "2")
    assert proc.returncode == 1 and calls == [2, 1], proc.stderr
    rows = {r["output"]: r for r in read_rows(tmp_path / "out")}
    digest = hashlib.sha256((inp / "a.tif").read_bytes()).hexdigest()
    for name in ("a", "b"):
        assert rows[name]["status"] == "failed" and rows[name]["sha256"] == digest
        assert rows[name]["reason"] == "prediction failed: CPU out of memory (more lines)"
    assert rows["c"]["status"] == "ok" and rows["c"]["sha256"] == digest


def test_inputs_not_found_are_not_counted_as_images(setup, tmp_path):
    proc = cli("--weights", setup["run_a"], "--input", setup["input"] / "rgba.png", tmp_path / "nothere.png",
               "--output", tmp_path / "out")
    assert proc.returncode == 1 and "1 image(s) and 1 input(s) not found; one network" in proc.stderr, proc.stderr
    assert sorted(r["status"] for r in read_rows(tmp_path / "out")) == ["failed", "ok"]
    # A link to nothing in a searched folder is such an input too, not skipped unsaid.
    cohort = tmp_path / "cohort"
    (cohort / "sub").mkdir(parents=True)
    shutil.copy(setup["input"] / "rgba.png", cohort / "a.png")
    (cohort / "sub" / "b.png").symlink_to(tmp_path / "moved.png")
    (cohort / "sub" / "loop.png").symlink_to(cohort / "sub" / "loop.png")  # a link to itself
    (cohort / "sub" / "up").symlink_to(cohort)  # a link back up: searched once
    for given in (cohort, f"{cohort}/**/*.png"):  # a folder, and a recursive glob searched as one
        out = tmp_path / f"out{len(str(given))}"
        proc = cli("--weights", setup["run_a"], "--input", given, "--output", out)
        assert proc.returncode == 1 and "1 image(s) and 2 input(s) not found; one network" in proc.stderr, proc.stderr
        rows = {r["output"]: r for r in read_rows(out)}
        assert rows["sub/b"]["status"] == "failed" and rows["sub/b"]["reason"] == (
            f"a link to {tmp_path / 'moved.png'}, which does not exist")
        assert rows["sub/b"]["sha256"] == rows["sub/loop"]["sha256"] == ""  # no file to hash
        assert rows["sub/loop"]["reason"] == f"a link that loops ({cohort / 'sub' / 'loop.png'} -> " \
                                             f"{cohort / 'sub' / 'loop.png'})"
    items, _ = inputs.find_inputs([str(cohort / "sub" / "*.png")])  # a plain glob too
    assert sorted(i.rel for i in items if i.missing) == ["b", "loop"]


def test_two_process_torchrun_processes_every_image_once(setup):
    out = setup["base"] / "torchrun"
    proc = cli("--weights", setup["run_a"], "--input", setup["input"], "--output", out, torchrun=True)
    assert proc.returncode != 0  # the BAD images fail
    assert "over 2 processes" in proc.stderr, proc.stderr
    rows = read_rows(out)
    paths = [r["path"] for r in rows]
    assert len(paths) == len(GOOD) + len(BAD) == len(set(paths)) and paths == sorted(paths)
    assert not list(out.glob(".predictions.rank*"))  # partial CSVs merged and removed
    for rel in BAD:
        assert proc.stderr.count(f"failed: {setup['input'] / rel}:") == 1
    for rel in GOOD:
        assert all(p.is_file() for p in outputs_of(out, rel).values()), rel
    # Again into that folder: every process refuses it alike, or replaces it with --overwrite.
    proc = cli("--weights", setup["run_a"], "--input", setup["input"] / "sub", "--output", out, torchrun=True)
    assert proc.returncode != 0 and proc.stderr.count(
        f"holds an earlier run (predictions.csv of {len(GOOD) + len(BAD)} image(s))") == 1
    proc = cli("--weights", setup["run_a"], "--input", setup["input"] / "sub", "--output", out, "--overwrite",
               torchrun=True)
    assert proc.returncode == 1 and "--overwrite: deleted the earlier run's 17 file(s)" in proc.stderr, proc.stderr
    assert sorted(r["output"] for r in read_rows(out)) == ["02_test", "deeper/grey16", "grey", "trunc"]
    assert sorted(p.name for p in out.iterdir()) == ["02_test_classes.png", "02_test_colour.png", "02_test_overlay.png",
                                                     "deeper", "grey_classes.png", "grey_colour.png",
                                                     "grey_overlay.png", "predict_run.json", "predictions.csv"]


def test_predict_sh(setup):
    out = setup["base"] / "sh"
    env = {**ENV, "WEIGHTS": str(setup["run_a"]), "INPUT": str(setup["input"] / "sub" / "*.tif"),
           "OUTPUT": str(out), "PYTHON": sys.executable}
    proc = subprocess.run(["sh", str(ROOT / "predict.sh"), "--tta"], cwd=setup["base"], env=env,
                          capture_output=True, text=True, timeout=600)  # from another folder
    assert proc.returncode == 0, proc.stderr
    assert [r["path"] for r in read_rows(out)] == [str(setup["input"] / "sub" / "02_test.tif")]
    assert (out / "02_test_overlay.png").is_file()


def test_estimated_fov_matches_the_provided_masks(real_data):
    for dataset, count in (("DRIVE_AV", 2), ("LES-AV", 1), ("HRF-AV", 1)):
        for sample in find_samples(real_data, DATASETS[dataset], "test")[:count]:
            score = iou(estimate_fov(read_image(sample.image)), read_mask(sample.mask))
            assert score > 0.98, f"{sample.image}: FOV IoU {score:.4f}"


def test_python_m_scripts_fov_writes_the_masks_a_data_set_of_ones_own_needs(real_data, tmp_path, capsys):
    """The estimated masks, as files train.py and test.py read (<stem>_mask.png, 0/255), close to
    the data set's own; a photograph without a dark border gets the whole image, said."""
    from scripts import fov
    photos = tmp_path / "images"
    photos.mkdir()
    samples = find_samples(real_data, DATASETS["DRIVE_AV"], "test")[:2]
    for sample in samples:
        shutil.copy(sample.image, photos / sample.image.name)
    Image.new("RGB", (64, 48), (120, 90, 60)).save(photos / "no_border.png")
    fov.main([str(photos), "--out", str(tmp_path / "mask")])
    captured = capsys.readouterr()
    assert captured.err.strip() == f"note: {photos / 'no_border.png'}: no dark border or no disc found: its mask is the whole image"
    for sample in samples:
        written = read_mask(tmp_path / "mask" / f"{sample.name}_mask.png")
        assert iou(written, read_mask(sample.mask)) > 0.98
    assert read_mask(tmp_path / "mask" / "no_border_mask.png").all()
    Image.new("RGB", (64, 48)).save(photos / "01_test.png")  # two photographs, one mask name: refused
    with pytest.raises(SystemExit):
        fov.main([str(photos), "--out", str(tmp_path / "other")])
    assert "would both have the mask" in capsys.readouterr().err and not (tmp_path / "other").exists()
    (photos / "01_test.png").unlink()
    labels = real_data / "DRIVE_AV" / "test" / "1st_manual"  # the labels' folder for the photographs': refused
    with pytest.raises(SystemExit) as info:
        fov.main([str(labels), "--out", str(tmp_path / "other")])
    assert info.value.code == 2 and capsys.readouterr().err.strip() == (
        f"error: {labels / '01_test.png'}: every pixel is 0..3: an A/V label image (0 background, 1 artery, 2 vein, "
        f"3 uncertain) or a black one; give the folder of photographs (images/), not of labels")
    assert not (tmp_path / "other").exists()
    with pytest.raises(SystemExit) as info:  # nothing written over an earlier mask
        fov.main([str(photos), "--out", str(tmp_path / "mask")])
    assert info.value.code == 2 and capsys.readouterr().err.strip() == (
        f"error: {tmp_path / 'mask' / '01_test_mask.png'} exists (and 2 more): --overwrite replaces them")


def test_labels_and_vessel_maps_are_told_from_photographs(real_data):
    """A photograph's retina is mid-tones, even blown out (four times brighter) or with its
    colour balance off; a label or vessel map, drawn in colour or black and white, is all black,
    white or pure colours."""
    from scripts.fov import not_a_photograph
    for name in ("DRIVE_AV", "LES-AV", "HRF-AV"):
        sample = find_samples(real_data, DATASETS[name], "test")[0]
        photo = read_image(sample.image).astype(float)
        for gain in ((1, 1, 1), (4, 4, 4), (2, 0.5, 1), (1.5, 0.8, 1)):
            assert not_a_photograph(np.clip(photo * gain, 0, 255).astype(np.uint8)) == "", (sample.image, gain)
        saturated = ImageEnhance.Contrast(ImageEnhance.Color(Image.fromarray(read_image(sample.image))).enhance(8))
        assert not_a_photograph(np.asarray(saturated.enhance(2))) == "", sample.image  # flat red, but a retina
        label = read_label(sample.label)
        assert not_a_photograph(label).startswith("every pixel is 0..3")
        for drawn in (outputs.CLASS_COLOURS[label], ((label > 0) * 255).astype(np.uint8)):
            said = not_a_photograph(drawn)
            assert said.startswith("lines in pure colours or white on black (100 % of the ") and said.endswith(
                "% of its pixels that are not black), where a photograph's retina is mid-tones over most of the "
                "frame: a label or vessel map, not a photograph"), said


def test_a_tiff_of_several_pages_is_segmented_by_its_first_with_a_note(setup, tmp_path):
    photo = Image.open(setup["input"] / "01_test.tif")
    photo.save(tmp_path / "exam.tif", save_all=True, append_images=[photo.transpose(Image.FLIP_LEFT_RIGHT)] * 2)
    prepared = inputs.prepare(inputs.Item(str(tmp_path / "exam.tif"), "exam"), [(64, 64)], inputs.MaskFinder(None))
    assert prepared.notes == ("a TIFF of 3 pages: only the first is segmented",)
    assert np.array_equal(prepared.rgb, np.asarray(photo.convert("RGB")))
    single = inputs.prepare(inputs.Item(str(setup["input"] / "01_test.tif"), "x"), [(64, 64)], inputs.MaskFinder(None))
    assert single.notes == ()


def test_no_photograph_of_the_data_sets_is_taken_for_bgr_and_each_swapped_one_is(real_data):
    """The BGR note's rule (blue the brightest channel inside the FOV) against all 107 photographs
    of the three data sets as they are, and with their channels swapped (JPEGs decoded at a
    quarter size: the means do not need more)."""
    checked = 0
    for name, spec in DATASETS.items():
        if name == "SYNTHETIC":
            continue
        for split in ("training", "test"):
            for sample in find_samples(real_data, spec, split):
                with Image.open(sample.image) as img:
                    img.draft("RGB", (img.width // 4, img.height // 4))  # JPEG only; others as stored
                    photo = np.asarray(img.convert("RGB"))
                with Image.open(sample.mask) as mask:  # any non-zero value is inside (data/README.md)
                    fov = np.asarray(mask.resize(photo.shape[1::-1], Image.NEAREST)) > 0
                fov = fov.any(axis=2) if fov.ndim == 3 else fov
                assert 0.3 < fov.mean() < 0.95, sample.mask
                size = [(photo.shape[1], photo.shape[0])]
                assert not [n for n in inputs.photo_notes(photo, fov, size) if n.startswith("blue")], sample.image
                assert inputs.photo_notes(photo[..., ::-1], fov, size)[0].startswith("blue is its brightest"), \
                    sample.image
                checked += 1
    assert checked == 107


def test_photographs_that_make_poor_maps_are_noted(real_data):
    """Greyscale, much smaller than the networks' input, of another shape, or blank: segmented,
    with a note why the maps may be poor; a DRIVE_AV photograph at the networks' size gets none."""
    sample = find_samples(real_data, DATASETS["DRIVE_AV"], "test")[0]
    photo, fov = read_image(sample.image), read_mask(sample.mask)
    size = [DATASETS["DRIVE_AV"].size]
    assert inputs.photo_notes(photo, fov, size) == ()
    grey = np.repeat(photo[..., 1:2], 3, axis=2)
    assert [n.split(";")[0] for n in inputs.photo_notes(grey, fov, size)] == ["a greyscale photograph"]
    bgr = photo[..., ::-1]  # as OpenCV writes an RGB array
    assert [n.split(" (")[0] for n in inputs.photo_notes(bgr, fov, size)] == [
        "blue is its brightest channel inside its FOV"]
    red_free = photo * np.array([0, 1, 0.3])  # through a green filter: green brightest, blue above red
    assert inputs.photo_notes(red_free.astype(np.uint8), fov, size) == ()
    purple = photo * np.array([1, 0.3, 0.8])  # red still the brightest, blue above green: no note
    assert inputs.photo_notes(purple.astype(np.uint8), fov, size) == ()
    thumb = np.asarray(Image.fromarray(photo).resize((200, 207)))
    assert inputs.photo_notes(thumb, np.ones((207, 200), bool), size) == (
        "a small photograph (200 x 207), enlarged over 2x to the networks' 592 x 592: "
        "its vessels are blurred, so expect poorer maps",)
    assert inputs.photo_notes(thumb, np.ones((207, 200), bool), [(256, 256)]) == ()
    # Another shape: HRF-AV's 3:2 photographs to DRIVE_AV's square input (the shipped bundle), and back.
    assert inputs.photo_notes(np.asarray(Image.fromarray(photo).resize((876, 584))), np.ones((584, 876), bool),
                              size) == ("its 876 x 584 is resized to the networks' 592 x 592, which squeezes "
                                        "it 1.50x horizontally: the networks learned from undistorted "
                                        "photographs, so expect poorer maps",)
    assert inputs.photo_notes(photo, fov, [(880, 592)])[0].startswith(
        "its 565 x 584 is resized to the networks' 880 x 592, which stretches it 1.54x horizontally")
    assert inputs.photo_notes(photo, fov, [(576, 576)]) == ()  # a few percent: no note
    blank = np.zeros_like(photo)
    blank[fov] = (90, 40, 20)
    notes = inputs.photo_notes(blank, fov, size)
    assert len(notes) == 1 and notes[0].startswith("nearly uniform inside its FOV")
    blank[fov] = 128  # a blank grey capture: not also called a greyscale photograph
    assert inputs.photo_notes(blank, fov, size) == notes


def test_the_weights_fingerprint_covers_the_networks_prediction_uses():
    torch.manual_seed(0)
    a, b = Networks("sigmoid", 4, "none"), Networks("sigmoid", 4, "none")
    b.G.load_state_dict(a.G.state_dict())  # same G; G_A, G_V (unused without fusion) differ
    assert predict.weights_sha256(a) == predict.weights_sha256(b)
    c, d = Networks("sigmoid", 4), Networks("sigmoid", 4)
    d.G.load_state_dict(c.G.state_dict())  # same G, other branches: other predictions
    assert predict.weights_sha256(c) != predict.weights_sha256(d)


def test_repeated_list_options_add_up():
    """-i a -i b is both inputs (argparse's default would keep only b, silently)."""
    import test as test_script
    args = predict.build_parser().parse_args(["-i", "a", "b", "-i", "c", "-o", "out", "-w", "w1", "-w", "w2"])
    assert args.input == ["a", "b", "c"] and args.weights == ["w1", "w2"]
    args = test_script.build_parser().parse_args(["--load", "x", "--load", "y", "--seeds", "42", "--seeds", "40"])
    assert args.load == ["x", "y"] and args.seeds == [42, 40]


def test_class_map_rule():
    """The published decoding rule; R and B on without G: the larger wins; G with one of R/B: none."""
    pic = np.array([[[0, 0, 0], [200, 0, 0], [0, 0, 200], [0, 200, 0], [200, 200, 200], [130, 0, 129],
                     [129, 0, 130], [150, 0, 150], [127, 0, 127], [200, 130, 0]]], np.uint8)
    assert class_map(pic).tolist() == [[0, 1, 2, 3, 3, 1, 2, 1, 0, 0]]


def test_estimate_fov_edge_cases():
    assert not estimate_fov(np.zeros((40, 50, 3), np.uint8)).any()
    assert estimate_fov(np.full((40, 50, 3), 120, np.uint8)).all()  # no black border
    yy, xx = np.mgrid[:100, :120]
    disc = ((yy - 50) ** 2 + (xx - 60) ** 2 < 45 ** 2)
    img = np.where(disc[..., None], np.array([150, 70, 30], np.uint8), 3).astype(np.uint8)
    img[45:55, 20:100] = 10  # a dark vessel across the disc: holes are filled
    assert iou(estimate_fov(img), disc) > 0.95


def test_the_fov_source_says_whole_image_for_a_crop_without_a_dark_border(real_data):
    photo = np.asarray(Image.open(real_data / "DRIVE_AV" / "test" / "images" / "01_test.tif"))
    item, no_masks = inputs.Item("crop.png", "crop"), inputs.MaskFinder(None)
    fov, source = inputs.read_fov(item, np.ascontiguousarray(photo[200:400, 200:400]), no_masks)
    assert source == "whole image" and fov.all()
    fov, source = inputs.read_fov(item, photo, no_masks)  # the whole photograph: its disc
    assert source == "estimated" and 0.5 < fov.mean() < 0.9


def test_compiled_networks_give_the_same_outputs_and_compile_once(setup):
    """--compile (inductor, weights frozen): the outputs of eager mode to float rounding, and
    a smaller last batch is padded rather than compiled a second time; with --amp the up-front
    compile is made under autocast too, so the first real batch does not compile again."""
    import torch._dynamo
    from torch._dynamo.utils import counters
    inp = setup["base"] / "compile_in"
    inp.mkdir()
    for name in ("a", "b", "c"):  # batches of 2 and 1
        shutil.copy(setup["input"] / "01_test.tif", inp / f"{name}.tif")
    probs = {}
    for flag in ((), ("--compile",), ("--compile", "--amp")):
        out = setup["base"] / f"compile_out{len(flag)}"
        torch._dynamo.reset()
        counters.clear()
        args = predict.build_parser().parse_args(["--weights", str(setup["run_a"]), "--input", str(inp),
                                                  "--output", str(out), "--save-probs", "--batch-size", "2", *flag])
        assert predict.run(args) == 0
        probs[flag] = np.stack([np.load(out / f"{n}_probs.npz")["probs"].astype(np.float32) for n in "abc"])
        assert counters["stats"]["unique_graphs"] == min(len(flag), 1), flag
    assert np.abs(probs[()] - probs[("--compile",)]).max() < 2e-3  # float16 files: rounding only


def test_without_weights_the_shipped_bundle_is_used(setup, tmp_path, monkeypatch, capsys):
    shipped = tmp_path / "pretrained" / "DRIVE_AV_sigmoid.index.json"
    monkeypatch.setattr(predict, "pretrained_bundle", lambda *names: shipped)
    args = predict.build_parser().parse_args(["--input", str(setup["input"] / "01_test.tif"),
                                              "--output", str(tmp_path / "out")])
    with pytest.raises(predict.ConfigError, match=f"no --weights given and no shipped bundle at {shipped}"):
        predict.run(args)
    shipped.parent.mkdir()
    export_bundle(setup["run_a"], shipped, fp16=True, shard_mib=1, about="tiny untrained test weights")
    args.weights = None
    assert predict.run(args) == 0
    assert (tmp_path / "out" / "01_test_classes.png").is_file()
    assert "about these weights: tiny untrained test weights" in capsys.readouterr().err


def test_a_compile_that_cannot_work_is_one_error_before_any_image(setup, tmp_path, monkeypatch, capsys):
    """--compile compiles up front: a machine where it fails (no C++ compiler, say) gets one
    line and exit status 2, not a failure recorded for every image."""
    def broken(nets):
        def predict_fails(x):
            raise RuntimeError("InductorError: no working C++ compiler found\n(details)")
        nets.predict = predict_fails
        return nets
    monkeypatch.setattr(predict, "compile_for_inference", broken)
    with pytest.raises(SystemExit) as info:
        predict.main(["--weights", str(setup["run_a"]), "--input", str(setup["input"]),
                      "--output", str(tmp_path / "out"), "--compile"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == ("error: --compile failed (RuntimeError: InductorError: no working C++ compiler found); "
                       "run without --compile")
    assert not (tmp_path / "out").exists()


def test_default_workers_share_the_cores_among_the_processes_of_a_node(monkeypatch):
    """predict.py's decoding and writing threads: the usable cores (at most 8), divided among
    torchrun's processes on the node, at least one each."""
    monkeypatch.setattr(predict.evaluate, "usable_cores", lambda: 16)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert predict.workers_per_process() == 8
    for ranks, workers in (("4", 2), ("16", 1)):
        monkeypatch.setenv("LOCAL_WORLD_SIZE", ranks)
        assert predict.workers_per_process() == workers


def test_resume_in_another_precision_says_why_this_machine_gives_fp32(tmp_path):
    """A folder made where bf16 paid, resumed on a CPU where it does not: the refusal says why."""
    from scripts import predict_resume
    from scripts.config import ConfigError
    (tmp_path / "predict_run.json").write_text(json.dumps({"weights": [], "precision": "bfloat16 autocast"}))
    note = "bf16 runs at 0.60x the speed of fp32 on this CPU (measured; mixed precision needs 1.2x)"
    with pytest.raises(ConfigError, match=r"precision \(--amp\) \(bfloat16 autocast there, fp32 now\) \(bf16 runs at "
                                          r"0\.60x .* resume it on a machine where it pays\)"):
        predict_resume.check_resume(tmp_path, {"weights": [], "precision": "fp32"}, note)
