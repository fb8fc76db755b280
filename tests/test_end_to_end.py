"""End to end on real DRIVE_AV images: train.py then test.py, reduced size and width."""
import csv
import json
import os
import runpy
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from scripts import evaluation_outputs, metrics
from scripts.cli import ArgumentParser
from tests.conftest import ROOT


def run(args, cwd):
    proc = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def probe_run(real_data, tmp_path_factory):
    """The issue's tiny real run: 1 epoch, batch 2, 128 x 128, width 8, seed 42."""
    work = tmp_path_factory.mktemp("probe")
    common = ["--dataset", "DRIVE_AV", "--data-root", str(real_data), "--cache-dir", str(work / "cache"),
              "--output-root", str(work), "--job_name", "probe"]
    run([str(ROOT / "train.py"), *common, "--epochs", "1", "--batch-size", "2", "--image-size", "128", "128",
         "--base-width", "8", "--seed_num", "42", "--runs-dir", str(work / "runs")], cwd=work)
    test = run([str(ROOT / "test.py"), *common, "--workers", "3"], cwd=work)  # images evaluated in threads
    return work, test.stdout


def test_training_writes_checkpoints_and_tensorboard_events(probe_run):
    work, _ = probe_run
    run_dir = work / "DRIVE_AV" / "probe"
    for name in ("CP_best_F1_all.pth", "CP_best_F1_A.pth", "CP_best_F1_V.pth", "last.pth"):
        assert (run_dir / name).stat().st_size > 0, name
    events = list((work / "runs").rglob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0


def test_test_script_writes_pictures_at_the_original_size(probe_run):
    work, stdout = probe_run
    final = work / "DRIVE_AV" / "Final_pre"
    raw = sorted((final / "raw_pre").glob("*.png"))
    small = sorted((final / "small_pre").glob("*.png"))
    assert len(raw) == len(small) == 20
    assert Image.open(raw[0]).size == (565, 584) and Image.open(raw[0]).mode == "RGB"
    assert Image.open(small[0]).size == (128, 128)
    mixed = sorted((final / "mixed_segments").glob("*.png"))
    with Image.open(mixed[0]) as first:  # the picture, then its legend strip below
        assert len(mixed) == 20 and first.size[0] == 565 and first.size[1] > 584
    assert "average" in stdout and "sensitivity" in stdout
    assert "±" not in stdout  # one run: plain values (a std over one run would read as a measurement)


def test_the_table_shows_mean_and_std_only_over_several_runs():
    cell = {"mean": 54.375, "std": 1.5}
    summary = {c: {m: cell for m in metrics.TABLE_METRICS} for c in ("artery", "vein", "uncertain", "average")}
    summary.update(extra={"av_accuracy": cell}, segments={"mixed_any": cell})
    one = metrics.summary_table({**summary, "runs": ["a"]})
    three = metrics.summary_table({**summary, "runs": ["a", "b", "c"]})
    assert "±" not in one and "54.38" in one and "av_accuracy 54.38" in one
    assert three.count("54.38 ± 1.50") == 4 * 5 + 2 and "mean ± std over runs" in three


def independent_scores(label, rgb, fov):
    """The protocol of DESIGN.md section 6 written out plainly, class by class."""
    on = rgb >= 128
    r, g, b = on[..., 0], on[..., 1], on[..., 2]
    predicted = {1: r & ~g, 2: b & ~g, 3: (r & g & b) | (g & ~r & ~b)}
    per_class, weights = [], []
    for c in (1, 2, 3):
        t, p = (label == c)[fov], predicted[c][fov]
        tp, fp, fn, tn = (t & p).sum(), (~t & p).sum(), (t & ~p).sum(), (~t & ~p).sum()
        sens = tp / (tp + fn) if tp + fn else 0.0
        spec = tn / (tn + fp) if tn + fp else 0.0
        f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
        per_class.append({"sensitivity": sens, "f1": f1, "mse": (fp + fn) / t.size,
                          "auc_roc": (sens + spec) / 2 if tp + fn else 0.0})
        weights.append(t.sum())
    w = np.array(weights, float)
    return {k: float(np.dot([d[k] for d in per_class], w) / w.sum()) for k in per_class[0]}


def test_summary_agrees_with_metrics_recomputed_from_the_pngs(probe_run, real_data):
    work, _ = probe_run
    final = work / "DRIVE_AV" / "Final_pre"
    summary = json.loads((final / "summary.json").read_text())
    assert summary["precision"] == "fp32"  # the published protocol's numbers, whatever the machine
    best = torch.load(work / "DRIVE_AV" / "probe" / "CP_best_F1_all.pth", weights_only=True)
    assert summary["run_details"] == [{"run": str(work / "DRIVE_AV" / "probe"), "trained_on": "DRIVE_AV",
                                       "trained_size": [128, 128], "input_size": [128, 128],
                                       "activation": "sigmoid", "base_width": 8, "fusion": "concat",
                                       "best_epoch": best["epoch"], "best_val_f1": round(100 * best["val_f1"], 4),
                                       "epochs_done": 1, "epochs_planned": 1, "about": None,
                                       "initialised_from": None}]
    for group in ("average", "artery", "vein", "uncertain"):
        assert set(summary[group]) >= {"sensitivity", "specificity", "precision", "f1", "iou", "accuracy",
                                       "auc_roc", "auc_pr", "mse"}
    recomputed = []
    for png in sorted((final / "raw_pre").glob("*.png")):
        label = np.array(Image.open(real_data / "DRIVE_AV/test/1st_manual" / png.name))
        fov = np.array(Image.open(real_data / "DRIVE_AV/test/mask" / f"{png.stem}_mask.gif")) > 0
        rgb = np.array(Image.open(png))
        assert not rgb[~fov].any(), "zero outside the FOV"
        recomputed.append(independent_scores(label, rgb, fov))
    for key in ("sensitivity", "f1", "mse", "auc_roc"):
        mean = 100 * np.mean([r[key] for r in recomputed])
        assert summary["average"][key]["mean"] == pytest.approx(mean, abs=1e-6), key
        assert summary["average"][key]["std"] == 0  # one run
    assert 0 <= summary["average"]["mse"]["mean"] < 20 and summary["average"]["auc_roc"]["mean"] >= 45
    seg = summary["segments"]
    assert set(seg) == {"count", "mixed_any", "mixed_10", "segment_accuracy", "fully_correct", "missed"}
    assert 50 < seg["count"]["mean"] < 500  # DRIVE vessel trees split into tens to hundreds of segments
    assert all(0 <= seg[k]["mean"] <= 100 for k in seg if k != "count")
    rows = list(csv.DictReader((final / "metrics.csv").open()))
    assert len(rows) == 20 and rows[0]["run"] == "probe" and "average/f1" in rows[0]
    assert "segments/mixed_10" in rows[0]


def test_bad_data_set_name_is_one_line_and_exit_2(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "--dataset", "STARE"], cwd=tmp_path,
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: unknown data set 'STARE'; known, in any case: DRIVE_AV, DRIVE-AV, "
                                                "LES-AV, LES_AV, HRF-AV, HRF_AV, SYNTHETIC (one of your own: a row in "
                                                "DATASETS, scripts/config.py; README, section Data)"]


def read_metrics_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_test_script_reads_a_sharded_bundle_with_the_same_results(probe_run, real_data, tmp_path):
    """Also: one image at a time (--workers 1) gives each image the numbers and pictures that
    the probe's test, three images at a time in threads, gave it."""
    work, _ = probe_run
    run(["-m", "scripts.bundle", "export", str(work / "DRIVE_AV" / "probe"),
         str(tmp_path / "probe.pth"), "--shard-mib", "1"], cwd=ROOT)
    index = tmp_path / "probe.index.json"
    # A copy of the bundle beside it: two runs of one name get their own picture folders and CSV rows.
    (tmp_path / "copy").mkdir()
    for shard in tmp_path.glob("probe*"):
        shutil.copy(shard, tmp_path / "copy" / shard.name)
    run([str(ROOT / "test.py"), "--dataset", "DRIVE_AV", "--data-root", str(real_data), "--load", str(index),
         str(tmp_path / "copy" / index.name), "--cache-dir", str(work / "cache"), "--output", str(tmp_path / "out"),
         "--workers", "1"], cwd=work)
    ours = json.loads((tmp_path / "out" / "summary.json").read_text())
    original = json.loads((work / "DRIVE_AV" / "Final_pre" / "summary.json").read_text())
    assert ours["average"] == original["average"] and ours["segments"] == original["segments"]
    for name in ("probe", "probe_2"):
        assert len(list((tmp_path / "out" / name / "raw_pre").glob("*.png"))) == 20
        for folder in ("raw_pre", "mixed_segments"):
            for png in (work / "DRIVE_AV" / "Final_pre" / folder).glob("*.png"):
                assert (tmp_path / "out" / name / folder / png.name).read_bytes() == png.read_bytes()
    rows = read_metrics_csv(tmp_path / "out" / "metrics.csv")
    assert sorted({r["run"] for r in rows}) == ["probe", "probe_2"]
    threaded = read_metrics_csv(work / "DRIVE_AV" / "Final_pre" / "metrics.csv")
    for name in ("probe", "probe_2"):
        assert [{**r, "run": "probe"} for r in rows if r["run"] == name] == threaded


def test_scoring_gives_the_same_numbers_for_any_thread_count(real_data, tmp_path):
    """The full-size bilinear resize rounds differently on one torch thread and on two (a few
    pixels of a DRIVE_AV picture change), so evaluate_images scores on one thread per image,
    whatever the process had, and gives the process its thread count back."""
    import torch
    from scripts.config import dataset_spec
    from scripts.data import find_samples
    from scripts.evaluate import evaluate_images
    samples = find_samples(real_data, dataset_spec("DRIVE_AV"), "test")[:2]
    probs = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    before = torch.get_num_threads()
    outcomes = []
    try:
        for threads, workers in ((2, 1), (1, 1), (2, 2)):
            torch.set_num_threads(threads)
            out = tmp_path / f"t{threads}w{workers}"
            results = list(evaluate_images(samples, [probs], ["sigmoid"], [out], workers))
            assert torch.get_num_threads() == threads
            outcomes.append((results, [(out / "raw_pre" / f"{s.name}.png").read_bytes() for s in samples]))
    finally:
        torch.set_num_threads(before)
    assert outcomes[0] == outcomes[1] == outcomes[2]


def test_runs_get_distinct_names():
    assert evaluation_outputs.run_names(["a/sigmoid_seed42", "b/sigmoid_seed42", "c/run.v2", "x/CP_best_F1_all.pth",
                                  "y/CP_best_F1_all.pth", "m.index.json", "sigmoid_seed42_2"]) == [
        "sigmoid_seed42", "sigmoid_seed42_2", "run.v2", "CP_best_F1_all", "CP_best_F1_all_2", "m",
        "sigmoid_seed42_2_2"]


def test_softmax_variant_end_to_end(real_data, tmp_path):
    common = ["--dataset", "DRIVE_AV", "--data-root", str(real_data), "--cache-dir", str(tmp_path / "cache"),
              "--output-root", str(tmp_path), "--job_name", "sm"]
    run([str(ROOT / "train.py"), *common, "--epochs", "1", "--batch-size", "6", "--image-size", "64", "64",
         "--base-width", "4", "--activation", "softmax", "--runs-dir", str(tmp_path / "runs")], cwd=tmp_path)
    run([str(ROOT / "test.py"), *common], cwd=tmp_path)
    final = tmp_path / "DRIVE_AV" / "Final_pre"
    rgb = np.array(Image.open(final / "raw_pre" / "01_test.png"))
    assert set(np.unique(rgb)) <= {0, 255}  # softmax pictures: colours of the decided class
    summary = json.loads((final / "summary.json").read_text())
    assert 0 <= summary["extra"]["auc_roc_prob_average"]["mean"] <= 100


def test_test_sh_falls_back_to_the_shipped_bundle(probe_run, real_data, tmp_path):
    """With no run folders of train.sh's job, test.sh tests the shipped bundle and says so; a JOB
    or SEEDS named by the user is never replaced by it (one line naming the runs not found)."""
    work, _ = probe_run
    index = tmp_path / "pretrained" / "DRIVE_AV_sigmoid.index.json"
    index.parent.mkdir()
    run(["-m", "scripts.bundle", "export", str(work / "DRIVE_AV" / "probe"), str(index), "--fp16",
         "--shard-mib", "1", "--about", "probe run: 1 epoch at 128 x 128"], cwd=ROOT)
    env = {"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "AVSEG_PRETRAINED": str(index.parent),
           "DATASET": "DRIVE-AV", "DATA_ROOT": str(real_data),
           "EXTRA_ARGS": f"--cache-dir {work / 'cache'} --output {tmp_path / 'out'}"}
    here = tmp_path / "work"  # a folder without runs: ./DRIVE_AV/sigmoid_seed<N> are not there
    here.mkdir()

    def test_sh(**more):
        return subprocess.run(["sh", str(ROOT / "test.sh")], cwd=here, env={**env, **more}, capture_output=True,
                              text=True, timeout=600)
    proc = test_sh()
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "no runs ./DRIVE_AV/sigmoid_seed*: testing the shipped bundle" in proc.stderr
    assert "about these weights: probe run: 1 epoch at 128 x 128" in proc.stdout
    ours = json.loads((tmp_path / "out" / "summary.json").read_text())
    original = json.loads((work / "DRIVE_AV" / "Final_pre" / "summary.json").read_text())
    for key in ("f1", "sensitivity", "auc_roc"):  # fp16 weights: the same numbers to rounding
        assert abs(ours["average"][key]["mean"] - original["average"][key]["mean"]) < 0.5

    for named, line in (({"JOB": "my_job"}, "./DRIVE_AV/my_job_seed<N> for seed(s) 42 40 38"),
                        ({"SEEDS": "999 998"}, "./DRIVE_AV/sigmoid_seed<N> for seed(s) 999 998")):
        proc = test_sh(**named)
        assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
            f"error: no run {line} (sh train.sh trains them; JOB and SEEDS name the runs)"], proc.stderr

    unknown = test_sh(DATASET="HRF")
    assert unknown.returncode == 2 and unknown.stderr.strip().splitlines() == [
        "error: unknown data set 'HRF' (did you mean HRF-AV?); known, in any case: DRIVE_AV, DRIVE-AV, LES-AV, "
        "LES_AV, HRF-AV, HRF_AV, SYNTHETIC (one of your own: a row in DATASETS, scripts/config.py; README, section "
        "Data)"]


def test_test_sh_names_and_skips_seeds_that_were_not_trained(probe_run, real_data, tmp_path):
    """After SEEDS=40 sh train.sh, a plain sh test.sh tests seed 40 and says 42 and 38 are missing
    (the first seed missing: under dash, sh here, an earlier version then tested the shipped bundle)."""
    work, _ = probe_run
    for name in ("test.sh", "test.py", "scripts"):  # a checkout whose ./DRIVE_AV holds one seed
        (tmp_path / name).symlink_to(ROOT / name)
    (tmp_path / "DRIVE_AV").mkdir()
    (tmp_path / "DRIVE_AV" / "sigmoid_seed40").symlink_to(work / "DRIVE_AV" / "probe")
    env = {"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "DATA_ROOT": str(real_data),
           "EXTRA_ARGS": f"--cache-dir {work / 'cache'} --output {tmp_path / 'out'}"}
    proc = subprocess.run(["sh", "test.sh"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "note: no run ./DRIVE_AV/sigmoid_seed<N> for seed(s) 42 38: testing seed(s) 40" in proc.stderr
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["runs"] == ["DRIVE_AV/sigmoid_seed40"]


def test_train_sh_time_limit_then_resume_continues_every_seed(real_data, tmp_path):
    """SEEDS="1 2" with a tiny --time-limit: seed 1 stops after its first epoch (exit 3) and seed
    2 never starts; EXTRA_ARGS=--resume then finishes seed 1 and starts seed 2."""
    for name in ("train.sh", "train.py", "scripts"):  # a checkout of its own: runs go to ./DRIVE_AV
        (tmp_path / name).symlink_to(ROOT / name)
    tiny = (f"--image-size 64 64 --base-width 4 --cache-dir {tmp_path / 'cache'} --runs-dir {tmp_path / 'runs'} "
            f"--save-every 0")
    env = {"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "DATA_ROOT": str(real_data), "SEEDS": "1 2",
           "EPOCHS": "2", "OMP_NUM_THREADS": "1"}

    def train_sh(extra):
        return subprocess.run(["sh", "train.sh"], cwd=tmp_path, env={**env, "EXTRA_ARGS": extra},
                              capture_output=True, text=True, timeout=600)

    def epochs_done(seed):
        return torch_load(tmp_path / "DRIVE_AV" / f"sigmoid_seed{seed}" / "last.pth")["epoch"] + 1

    first = train_sh(tiny + " --time-limit 0.0001")
    assert first.returncode == 3, first.stderr[-2000:]
    assert (f'seed 1: stopped by --time-limit; the same variables (DATASET, SEEDS, ...) with EXTRA_ARGS="{tiny} '
            f'--time-limit 0.0001 --resume" continue it' in first.stderr), first.stderr  # a new seed gets them too
    assert epochs_done(1) == 1 and not (tmp_path / "DRIVE_AV" / "sigmoid_seed2").exists()
    second = train_sh("--resume " + tiny)
    assert second.returncode == 0, second.stderr[-2000:]
    assert f'seed 2: not started yet, starting it with EXTRA_ARGS="{tiny}"' in second.stderr
    assert epochs_done(1) == 2 and epochs_done(2) == 2


@pytest.mark.parametrize("script", ["train.sh", "test.sh", "ablation.sh", "predict.sh"])
def test_every_shell_script_has_help_and_refuses_arguments_it_does_not_take(script):
    """--help prints the script's variables and exits 0, starting nothing (predict.sh adds
    predict.py's options); train.sh, test.sh and ablation.sh refuse any other argument in one line."""
    env = {"PATH": "/usr/bin:/bin", "PYTHON": sys.executable}
    shown = subprocess.run(["sh", script, "--help"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and shown.stderr == "", shown.stderr
    assert ("INPUT" if script == "predict.sh" else "DATASET") in shown.stdout
    if script == "predict.sh":  # its other arguments go to predict.py
        assert "usage: python predict.py" in shown.stdout
        return
    refused = subprocess.run(["sh", script, "--seeds", "42"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert refused.returncode == 2 and refused.stderr.splitlines() == [
        f"error: {script} takes no arguments (--seeds): set its variables instead, e.g. DATASET="
        f"{'HRF-AV' if script == 'train.sh' else 'LES-AV'} sh {script}; sh {script} --help lists them"]


@pytest.mark.parametrize("shell, to_group, signum", [("sh", False, signal.SIGTERM), ("bash", True, signal.SIGINT)])
def test_a_signal_to_train_sh_stops_its_training_and_starts_no_other_seed(real_data, tmp_path, shell, to_group,
                                                                          signum):
    """SIGTERM to train.sh alone (kill <pid>, a scheduler signalling the script), or a Ctrl-C at
    the terminal (SIGINT to the whole process group; bash, which does not leave SIGINT ignored in
    background jobs by itself): the seed training stops once, at the end of its epoch with
    last.pth saved, seed 2 never starts, no train.py is left running, and the script ends by
    that signal."""
    for name in ("train.sh", "train.py", "scripts"):
        (tmp_path / name).symlink_to(ROOT / name)
    env = {"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "DATA_ROOT": str(real_data), "SEEDS": "1 2",
           "EPOCHS": "100", "OMP_NUM_THREADS": "1",
           "EXTRA_ARGS": f"--image-size 64 64 --base-width 4 --cache-dir {tmp_path / 'cache'} --save-every 0 "
                         f"--runs-dir {tmp_path / 'runs'}"}
    log = open(tmp_path / "log", "w")
    # As from a terminal: SIGINT at its default (a test run in the background of a script has it
    # ignored, and a shell cannot trap a signal ignored when it started).
    proc = subprocess.Popen([shell, "train.sh"], cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    run = tmp_path / "DRIVE_AV" / "sigmoid_seed1"
    deadline = time.time() + 300
    while not (run / "last.pth").exists() and time.time() < deadline:  # an epoch done: training is on
        time.sleep(0.5)
    if to_group:
        os.killpg(proc.pid, signum)
    else:
        proc.send_signal(signum)
    assert proc.wait(timeout=300) == -signum, (tmp_path / "log").read_text()[-2000:]
    said = (tmp_path / "log").read_text()
    assert "SIGTERM: stopping at the end of this epoch" in said
    assert f'seed 1: stopped; the same variables (DATASET, SEEDS, ...) with EXTRA_ARGS="{env["EXTRA_ARGS"]} --resume"' \
           f' continue it' in said
    assert "stopped after epoch" in said and "interrupted" not in said and "terminated" not in said, said[-2000:]
    assert not (tmp_path / "DRIVE_AV" / "sigmoid_seed2").exists()
    mine = str(tmp_path / "cache").encode()
    assert not [c for c in Path("/proc").glob("[0-9]*/cmdline") if _reads(c, mine)]  # no train.py of it left


def test_train_sh_trains_in_fp32_unless_amp_is_asked_for(tmp_path):
    """train.sh, the paper's protocol, trains in fp32 (--no-amp) by default; AMP=1 passes --amp.
    A stand-in Python records the command train.sh would run."""
    (tmp_path / "train.sh").symlink_to(ROOT / "train.sh")
    fake = tmp_path / "python"
    fake.write_text('#!/bin/sh\nif [ "$1" = -m ]; then echo DRIVE_AV; exit 0; fi\necho "$@" >> "$ARGS_LOG"\n')
    fake.chmod(0o755)
    for amp, expected, not_expected in (("", "--no-amp", "--amp"), ("1", "--amp", "--no-amp")):
        log = tmp_path / f"args{amp}.txt"
        env = {"PATH": "/usr/bin:/bin", "PYTHON": str(fake), "SEEDS": "42", "ARGS_LOG": str(log),
               **({"AMP": amp} if amp else {})}
        proc = subprocess.run(["sh", "train.sh"], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        args = log.read_text().split()
        # The train.py beside the linked-to train.sh: the checkout's, whatever the current folder.
        assert args[0] == str(ROOT / "train.py") and expected in args and not_expected not in args


def test_train_sh_resumes_a_seed_to_its_own_planned_epochs_unless_epochs_is_set(tmp_path):
    """EPOCHS=2 sh train.sh, then EXTRA_ARGS=--resume sh train.sh: the resumed seed keeps its 2
    epochs (train.sh's 1500 are not passed); EPOCHS=5 with --resume trains it to 5. A seed never
    started gets train.sh's epochs. PARALLEL=1 appends to a seed's log."""
    (tmp_path / "train.sh").symlink_to(ROOT / "train.sh")
    fake = tmp_path / "python"
    fake.write_text('#!/bin/sh\nif [ "$1" = -m ]; then echo DRIVE_AV; exit 0; fi\necho "$@" >> "$ARGS_LOG"\n'
                    'echo "train.py ran"\n')
    fake.chmod(0o755)
    (tmp_path / "DRIVE_AV" / "sigmoid_seed42").mkdir(parents=True)
    (tmp_path / "DRIVE_AV" / "sigmoid_seed42" / "last.pth").write_bytes(b"")  # train.sh looks for it only
    for epochs, expected in (("", {42: None, 40: "--e=1500"}), ("5", {42: "--e=5", 40: "--e=5"})):
        log = tmp_path / f"args{epochs}.txt"
        env = {"PATH": "/usr/bin:/bin", "PYTHON": str(fake), "SEEDS": "42 40", "ARGS_LOG": str(log),
               "EXTRA_ARGS": "--resume", **({"EPOCHS": epochs} if epochs else {})}
        proc = subprocess.run(["sh", "train.sh"], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        for line, seed in zip(log.read_text().splitlines(), (42, 40), strict=True):
            given = [a for a in line.split() if a.startswith("--e=")]
            assert given == ([expected[seed]] if expected[seed] else []), (epochs, seed, line)
            assert ("--resume" in line.split()) == (seed == 42)
    env = {"PATH": "/usr/bin:/bin", "PYTHON": str(fake), "SEEDS": "42", "ARGS_LOG": str(tmp_path / "p.txt"),
           "PARALLEL": "1"}
    for _ in range(2):
        assert subprocess.run(["sh", "train.sh"], cwd=tmp_path, env=env, capture_output=True).returncode == 0
    sessions = (tmp_path / "logs" / "DRIVE_AV_sigmoid_seed42.log").read_text().splitlines()
    assert [line for line in sessions if not line.startswith("== ")] == ["train.py ran"] * 2
    assert len(sessions) == 4 and sessions[0].endswith(" train.sh, seed 42 ==")  # each session headed


def test_ablation_sh_compares_the_seeds_trained_both_ways(probe_run, real_data, tmp_path):
    work, _ = probe_run
    for name in ("ablation.sh", "test.py", "scripts"):
        (tmp_path / name).symlink_to(ROOT / name)
    runs = tmp_path / "DRIVE_AV"
    runs.mkdir()
    for seed in ("42", "40"):  # copies of one run (test.py refuses one run twice); no ablation run for seed 40
        shutil.copytree(work / "DRIVE_AV" / "probe", runs / f"sigmoid_seed{seed}")
    run([str(ROOT / "train.py"), "--dataset", "DRIVE_AV", "--data-root", str(real_data), "--epochs", "1",
         "--image-size", "64", "64", "--base-width", "4", "--fusion", "none", "--job_name", "sigmoid_nofusion_seed42",
         "--cache-dir", str(work / "cache"), "--output-root", str(tmp_path), "--runs-dir", str(tmp_path / "runs")],
        cwd=tmp_path)
    env = {"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "DATASET": "DRIVE-AV", "DATA_ROOT": str(real_data),
           "SEEDS": "42 40", "EXTRA_ARGS": f"--cache-dir {work / 'cache'}"}
    proc = subprocess.run(["sh", "ablation.sh"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert ("note: left out: seed(s) none without BF-Net's run ./DRIVE_AV/sigmoid_seed<N>, seed(s) 40 without "
            "the ablation's ./DRIVE_AV/sigmoid_nofusion_seed<N>; comparing seed(s) 42") in proc.stderr
    table = proc.stdout.splitlines()
    header = next(i for i, line in enumerate(table) if line.startswith("metric"))
    assert "BF-Net" in table[header] and "no fusion (ablation)" in table[header]
    assert any(line.startswith("segments/mixed_any") for line in table[header:])
    for name in ("bfnet", "nofusion"):  # under DRIVE_AV, the data set's folder, not DRIVE-AV
        assert json.loads((runs / f"Final_pre_sigmoid_{name}" / "summary.json").read_text())["images"] == 20
    assert not list(runs.glob(".ablation*"))  # its temporary folder

    # Two seeds, then fewer: the earlier ablation's tests are replaced, not refused. A test that
    # fails (a run folder without networks) leaves both as they were.
    shutil.copytree(runs / "sigmoid_nofusion_seed42", runs / "sigmoid_nofusion_seed40")
    for seeds in ("42 40", "42"):
        proc = subprocess.run(["sh", "ablation.sh"], cwd=tmp_path, env={**env, "SEEDS": seeds}, capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0 and "note: left out" not in proc.stderr, proc.stderr[-3000:]
        for name in ("bfnet", "nofusion"):
            summary = json.loads((runs / f"Final_pre_sigmoid_{name}" / "summary.json").read_text())
            assert len(summary["runs"]) == len(seeds.split())
    shutil.rmtree(runs / "sigmoid_nofusion_seed40")
    (runs / "sigmoid_nofusion_seed40").mkdir()
    before = {p: p.read_bytes() for p in runs.glob("Final_pre_*/summary.json")}
    proc = subprocess.run(["sh", "ablation.sh"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0 and {p: p.read_bytes() for p in runs.glob("Final_pre_*/summary.json")} == before
    assert len(before) == 2 and not list(runs.glob(".ablation*"))  # the failed test's output removed
    for extra, says in ((" --output x", "no --output:"), (" --output-root .", "no --output-root"),
                        ("", "separate the seeds with spaces")):
        proc = subprocess.run(["sh", "ablation.sh"], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                              env={**env, "EXTRA_ARGS": env["EXTRA_ARGS"] + extra,
                                   "SEEDS": "42,40" if not extra else "42"})
        assert proc.returncode == 2 and says in proc.stderr and len(proc.stderr.strip().splitlines()) == 1

    # SIGTERM to ablation.sh alone while its first test runs: passed on, the partial output removed,
    # no test.py left running, the earlier ablation untouched, and the script ends by the signal.
    (runs / "sigmoid_nofusion_seed40").rmdir()
    before = {p: p.read_bytes() for p in runs.glob("Final_pre_*/summary.json")}
    proc = subprocess.Popen(["sh", "ablation.sh"], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not list(runs.glob(".ablation*/bfnet")) and time.time() < deadline:  # test.py has started writing
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGTERM, err[-2000:]
    assert not list(runs.glob(".ablation*")) and {p: p.read_bytes() for p in runs.glob("Final_pre_*/summary.json")} == before
    mine = str(work / "cache").encode()
    assert not [c for c in Path("/proc").glob("[0-9]*/cmdline") if _reads(c, mine)]  # no test.py of this test left


def _reads(cmdline, text) -> bool:
    """Whether a process's command line (a /proc/<pid>/cmdline) holds ``text``; False for one gone."""
    try:
        return text in cmdline.read_bytes()
    except OSError:
        return False


def torch_load(path):
    import torch
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)


def test_test_py_pretrained_without_a_shipped_bundle_is_one_line(tmp_path):
    env = {**os.environ, "AVSEG_PRETRAINED": str(tmp_path / "none")}
    proc = subprocess.run([sys.executable, str(ROOT / "test.py"), "--dataset", "LES-AV", "--pretrained"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert f"no shipped bundle {tmp_path / 'none' / 'LES-AV_sigmoid.index.json'} for LES-AV yet" in proc.stderr
    both = subprocess.run([sys.executable, str(ROOT / "test.py"), "--pretrained", "--load", "somewhere"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert both.returncode == 2 and "leave out --load, --job_name and --seeds" in both.stderr
    load_and_seeds = subprocess.run([sys.executable, str(ROOT / "test.py"), "--load", "a", "--seeds", "42"],
                                    cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert load_and_seeds.returncode == 2
    assert load_and_seeds.stderr.strip() == "error: --load names the weights itself: leave out --job_name and --seeds"


def test_scalars_of_a_run_export_to_a_small_csv(probe_run, tmp_path, capsys):
    import gzip
    import io
    from scripts import scalars
    work, _ = probe_run
    out = tmp_path / "results" / "probe_scalars.csv.gz"
    assert scalars.main([str(work / "runs" / "DRIVE_AV_probe"), str(out)]) == 0
    rows = list(csv.DictReader(io.StringIO(gzip.decompress(out.read_bytes()).decode())))
    tags = {r["tag"] for r in rows}
    assert {"val/average/f1", "val/segments/mixed_10", "lr/G", "time/epoch_seconds"} <= tags
    f1 = [float(r["value"]) for r in rows if r["tag"] == "val/average/f1"]
    assert len(f1) == 1 and 0 <= f1[0] <= 1  # one epoch, one validation
    epoch = [(r["step"], float(r["value"])) for r in rows if r["tag"] == "time/epoch"]
    assert epoch == [(next(r["step"] for r in rows if r["tag"] == "val/average/f1"), 1.0)]  # the axis is steps
    before = out.read_bytes()  # an earlier CSV there is kept unless told (--overwrite)
    assert scalars.main([str(work / "runs" / "DRIVE_AV_probe"), str(out)]) == 2 and out.read_bytes() == before
    assert capsys.readouterr().err.strip() == f"error: {out} exists: --overwrite replaces it, or name another file"
    assert scalars.main([str(work / "runs" / "DRIVE_AV_probe"), str(out), "--overwrite"]) == 0
    assert scalars.main([str(tmp_path / "nothing_here"), str(tmp_path / "x.csv")]) == 2
    assert "no TensorBoard event files" in capsys.readouterr().err
    (tmp_path / "a_file").write_text("kept")  # a CSV to be written under a file: one line
    assert scalars.main([str(work / "runs" / "DRIVE_AV_probe"), str(tmp_path / "a_file" / "x.csv")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: the CSV's folder {tmp_path / 'a_file'}: a file of that name exists; give a folder"]


def test_compare_sets_summaries_side_by_side(tmp_path, capsys):
    from scripts import compare
    value = {"mean": 54.375, "std": 1.5}
    one = {"runs": ["a"], "average": {"f1": value}, "segments": {"count": value, "mixed_any": value},
           "run_details": [{}], "artery": {"f1": value}, "extra": {"av_accuracy": value}}
    three = {**one, "runs": ["a", "b", "c"]}
    for name, summary in (("one", one), ("three", three)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps(summary))
    compare.main([str(tmp_path / "one" / "summary.json"), str(tmp_path / "three")])  # a file, a folder
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].split() == ["metric", "one", "three"]
    assert lines[1].split() == ["average/f1", "54.38", "54.38", "±", "1.50"]  # one run: no "± 0.00"
    assert [line.split()[0] for line in lines[1:]] == ["average/f1", "segments/count", "segments/mixed_any"]
    assert err.strip() == "note: these summaries differ in their numbers of runs (seeds): one 1, three 3"
    assert compare.column_names([Path("LES-AV/Final_pre/summary.json"), Path("HRF-AV/Final_pre/summary.json"),
                                 Path("x/Final_pre_bfnet/summary.json")]) == [
        "LES-AV/Final_pre", "HRF-AV/Final_pre", "x/Final_pre_bfnet"]  # test.py's default folder, twice
    assert compare.column_names([tmp_path / "one" / "summary.json"] * 2) == ["one", "one"]
    a, b = Path("/r/A/Final_pre/summary.json"), Path("/r/B/Final_pre/summary.json")
    assert compare.column_names([a, a, b]) == ["A/Final_pre", "A/Final_pre", "B/Final_pre"]
    assert compare.column_names([Path("../summary.json")]) == [Path("..").resolve().name]
    assert compare.column_names([Path("/a/x/summary.json"), Path("/b/a/x/summary.json")]) == ["a/x", "b/a/x"]
    assert compare.column_names([Path("/r/x/summary.json"), Path("/r/x/bundle_summary.json")]) == [
        "x/summary", "x/bundle_summary"]  # two files of one folder
    compare.main([str(tmp_path / "one" / "summary.json"), str(tmp_path / "three"), "--markdown"])
    assert capsys.readouterr().out.splitlines()[:3] == [
        "| metric | one | three |", "|---|---|---|", "| average/f1 | 54.38 | 54.38 ± 1.50 |"]
    compare.main([str(tmp_path / "one"), "--all"])  # the per-class rows and the extras too
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]] == [
        "average/f1", "artery/f1", "extra/av_accuracy", "segments/count", "segments/mixed_any"]
    (tmp_path / "old").mkdir()  # a summary of a test.py before run_details: said, not taken as alike unsaid
    (tmp_path / "old" / "summary.json").write_text(json.dumps({k: v for k, v in one.items() if k != "run_details"}))
    compare.main([str(tmp_path / "one"), str(tmp_path / "old")])
    assert capsys.readouterr().err.strip() == ("note: old records no run details (a test.py before they were "
                                               "recorded): its input size, width and training data set cannot be "
                                               "compared")
    (tmp_path / "new").mkdir()  # beside a summary that records its notes, one of a version before them
    (tmp_path / "new" / "summary.json").write_text(json.dumps({**one, "segment_notes": ["a: no segment predicted"]}))
    compare.main([str(tmp_path / "new"), str(tmp_path / "one")])
    assert capsys.readouterr().err.strip().splitlines() == [
        "note: new: segment metric: a: no segment predicted",
        "note: one was written by an older version, which recorded no segment metric notes: where new has them, "
        "it may have had the same"]
    (tmp_path / "new" / "summary.json").write_text(json.dumps({**one, "segment_notes": []}))  # none to be had
    compare.main([str(tmp_path / "new"), str(tmp_path / "one")])
    assert capsys.readouterr().err.strip() == ""
    scored = {**one, "scored": "p", "segment_notes": [], "run_details": None}  # pictures scored, by two versions
    for name, summary in (("scored_new", {**scored, "picture_notes": ["a light background"]}), ("scored_old", scored)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps(summary))
    compare.main([str(tmp_path / "scored_new"), str(tmp_path / "scored_old")])
    assert capsys.readouterr().err.strip().splitlines() == [
        "note: scored_new: a light background",
        "note: scored_old was written by an older version, which recorded no picture notes: where scored_new has "
        "them, it may have had the same"]
    long_names = ["a_name_longer_than_a_column", "another_name_longer_than_one"]
    compare.main([str(tmp_path / "one"), str(tmp_path / "one"), "--names", *long_names])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["metric", *long_names] and lines[1].split() == ["average/f1", "54.38", "54.38"]
    with pytest.raises(SystemExit) as info:
        compare.main([str(tmp_path / "one" / "summary.json"), str(tmp_path / "missing.json")])
    assert info.value.code == 2
    assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'missing.json'}: cannot read summary")
    (tmp_path / "odd.json").write_text(json.dumps({"runs": ["a", "b"], "average": {"f1": {"mean": 50.0}},
                                                   "segments": [1, 2]}))  # no std, segments not a table
    compare.main([str(tmp_path / "odd.json")])
    assert capsys.readouterr().out.splitlines()[1].split() == ["average/f1", "50.00"]
    for name, contents in (("list.json", []), ("index.json", {"format": "avseg-bundle-index"})):
        (tmp_path / name).write_text(json.dumps(contents))
        with pytest.raises(SystemExit) as info:
            compare.main([str(tmp_path / "one" / "summary.json"), str(tmp_path / name)])
        assert info.value.code == 2 and capsys.readouterr().err.strip() == (
            f"error: {tmp_path / name}: not a test summary (test.py's summary.json has 'average' and 'runs')")
    (tmp_path / "other").mkdir()

    def compared(ours, theirs, *options):
        """compare's output (out, err) on two summaries written as one/ and other/."""
        (tmp_path / "one" / "summary.json").write_text(json.dumps(ours))
        (tmp_path / "other" / "summary.json").write_text(json.dumps(theirs))
        compare.main([str(tmp_path / "one"), str(tmp_path / "other"), *options])
        return capsys.readouterr()

    (tmp_path / "other" / "summary.json").write_text(json.dumps({**one, "dataset": "HRF-AV"}))
    compare.main([str(tmp_path / "one" / "summary.json"), str(tmp_path / "other" / "summary.json")])
    assert capsys.readouterr().err.strip() == "note: these summaries are of different data sets: one unknown, other HRF-AV"
    sized = [{"input_size": [592, 592]}, {"input_size": [1024, 1024]}]
    (tmp_path / "other" / "summary.json").write_text(json.dumps({**one, "run_details": sized}))
    compare.main([str(tmp_path / "one" / "summary.json"), str(tmp_path / "other" / "summary.json")])
    assert capsys.readouterr().err == ""  # one of unknown sizes (details without them): taken as alike
    (tmp_path / "one" / "summary.json").write_text(json.dumps({**one, "run_details": sized[:1]}))
    compare.main([str(tmp_path / "one" / "summary.json"), str(tmp_path / "other" / "summary.json")])
    assert capsys.readouterr().err.strip() == (
        "note: these summaries were tested at different input sizes: one 592 x 592, other 592 x 592 and 1024 x 1024")
    for mine, theirs in ((sized[:1] * 3, sized[:1]), (sized, sized[::-1])):  # the same size, the same mix
        assert compared({**one, "run_details": mine}, {**one, "run_details": theirs}).err == ""  # nothing to note
    # An ablation's confounders: another width, training data set, number of test images.
    ours = {**one, "images": 20, "run_details": [{"base_width": 32, "trained_on": "DRIVE_AV", "fusion": "concat"}]}
    theirs = {**one, "images": 19, "run_details": [{"base_width": 8, "trained_on": "LES-AV", "fusion": "none"}]}
    assert compared(ours, theirs).err.splitlines() == [
        "note: these summaries differ in their base widths: one 32, other 8",
        "note: these summaries differ in their training data sets: one DRIVE_AV, other LES-AV",
        "note: these summaries differ in their numbers of test images: one 20, other 19"]  # not the fusion
    # Scored against other labels or masks (an edited copy of the data set): their SHA-256 differs.
    assert compared({**one, "test_truth_sha256": "a" * 64}, {**one, "test_truth_sha256": "b" * 64}).err.splitlines() == [
        f"note: these summaries differ in their test labels and masks (SHA-256): one {'a' * 12}, other {'b' * 12}"]
    # Other seeds, another test precision, a run stopped early (the seeds of train.sh's run names).
    details = {"epochs_done": 1500, "epochs_planned": 1500}
    ours = {**one, "runs": ["D/sigmoid_seed40", "D/sigmoid_seed42"], "precision": "fp32",
            "run_details": [{**details, "run": "D/sigmoid_seed40"}, {**details, "run": "D/sigmoid_seed42"}]}
    theirs = {**ours, "runs": ["D/sigmoid_nofusion_seed42", "D/sigmoid_nofusion_seed7"], "precision": "bf16 autocast",
              "run_details": [{**details, "run": "D/sigmoid_nofusion_seed42"},
                              {"epochs_done": 3, "epochs_planned": 1500, "run": "D/sigmoid_nofusion_seed7"}]}
    assert compared(ours, theirs).err.splitlines() == [
        "note: these summaries differ in their seeds: one 40 42, other 7 42",
        "note: these summaries differ in their test precisions: one fp32, other bf16 autocast",
        "note: other holds runs stopped before their planned epochs: sigmoid_nofusion_seed7 3 of 1500 epochs"]
    # Said of one column alone: networks trained on another data set, the weights' own words.
    elsewhere = {**one, "dataset": "LES-AV", "run_details": [{"trained_on": "DRIVE_AV", "about": "REDUCED run " * 20}]}
    out, err = compared({**one, "dataset": "LES-AV"}, elsewhere, "--markdown")
    assert err.splitlines()[:2] == ["note: other: networks trained on DRIVE_AV, tested on LES-AV",
                                    "note: other: about its weights: " + ("REDUCED run " * 20)[:157] + "..."]
    assert out.splitlines()[-1].startswith("| ")  # Markdown: the table alone on stdout
    with pytest.raises(SystemExit) as info:  # --names takes the summaries after it: said, not "required"
        compare.main(["--names", "X", "Y", str(tmp_path / "one"), str(tmp_path / "other")])
    assert info.value.code == 2 and "give the summaries first" in capsys.readouterr().err
    (tmp_path / "one" / "summary.json").write_text(json.dumps({**one, "average": {"auc_pr": value}}))
    compare.main([str(tmp_path / "one" / "summary.json")])
    assert capsys.readouterr().out.splitlines()[-1].startswith("note: auc_roc and auc_pr are those of the decoded binary")


def test_compare_paired_tests_the_per_image_differences(tmp_path, capsys):
    """--paired: each image's value (its mean over the runs in metrics.csv), second minus first,
    and a two-sided Wilcoxon signed-rank test over the images (scipy's)."""
    from scipy.stats import wilcoxon

    from scripts import compare
    ours = [60, 62, 58, 65, 61, 59, 63, 64]
    theirs = [55, 60, 50, 61, 56, 60, 58, 57]

    def write(name, runs, rows):
        values = [float(r.rsplit(",", 1)[1]) for r in rows]
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps({
            "runs": runs, "images": 8, "average": {"f1": {"mean": sum(values) / len(values), "std": 0.0}}}))
        header = "run,image,average/f1" if len(runs) > 1 else "image,average/f1"
        (tmp_path / name / "metrics.csv").write_text("\n".join([header, *rows]) + "\n")

    write("a", ["r"], [f"{i:02d},{v}" for i, v in enumerate(ours)])
    write("b", ["s1", "s2"], [f"{run},{i:02d},{v + d}" for i, v in enumerate(theirs) for run, d in (("s1", -1), ("s2", 1))])
    compare.main([str(tmp_path / "a"), str(tmp_path / "b"), "--paired"])
    diffs = [t - o for o, t in zip(ours, theirs, strict=True)]
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"paired over 8 test images (8 differing), average/f1, b - a: mean {sum(diffs) / 8:+.2f}, median -5.00; "
        f"Wilcoxon signed-rank p = {wilcoxon(diffs).pvalue:.3g} (two-sided, over the differing images); each "
        f"image's value is its mean over the runs")
    compare.main([str(tmp_path / "a"), str(tmp_path / "a"), "--paired"])  # the same test: no test at all
    said = capsys.readouterr()
    assert "(0 differing)" in said.out
    assert said.err.startswith(f"note: {tmp_path / 'a' / 'summary.json'} and {tmp_path / 'a' / 'summary.json'} are "
                               f"the same summary\n")
    assert compare.metrics_csv(Path("r/bundle_summary_cpu.json")) == Path("r/bundle_metrics_cpu.csv")
    write("c", ["r"], [f"{i:02d},{v}" for i, v in enumerate(ours)])
    (tmp_path / "c" / "metrics.csv").write_text("image,average/f1\n00,1\n")  # another test's CSV
    a, b, c = (str(tmp_path / name) for name in "abc")
    for argv, says in (([a, b, "--paired", "average/nope"], "no column 'average/nope'"),
                       ([a, b, a, "--paired"], "--paired compares two summaries, not 3"),
                       (["--paired", a, b], "--paired takes an optional column"),
                       ([a, c, "--paired"], "does not hold the test of summary.json beside it")):
        with pytest.raises(SystemExit) as info:
            compare.main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert info.value.code == 2 and len(err) == 1 and says in err[0], err


def test_readme_figure_of_a_test_image(probe_run, real_data, tmp_path, capsys, monkeypatch):
    from scripts import figures
    work, _ = probe_run
    out = tmp_path / "fig.png"
    figures.main(["--image", "01_test", "--final-pre", str(work / "DRIVE_AV" / "Final_pre"),
                  "--data-root", str(real_data), "--out", str(out)])
    figure = Image.open(out)
    panel = round(565 * 400 / 584)  # DRIVE's 565 x 584 at the panels' height, 400
    assert figure.size == (3 * panel + 2 * 10, 400 + 24)  # photograph, truth, prediction; titles above
    with pytest.raises(SystemExit) as info:
        figures.main(["--image", "99_test", "--data-root", str(real_data), "--out", str(out)])
    assert info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: no test image '99_test'")
    per_run = tmp_path / "Final_pre" / "sigmoid_seed42" / "raw_pre"  # as test.py of several runs writes them
    per_run.mkdir(parents=True)
    (per_run / "01_test.png").write_bytes((work / "DRIVE_AV" / "Final_pre" / "raw_pre" / "01_test.png").read_bytes())
    with pytest.raises(SystemExit) as info:
        figures.main(["--image", "01_test", "--final-pre", str(tmp_path / "Final_pre"),
                      "--data-root", str(real_data), "--out", str(out)])
    assert info.value.code == 2 and capsys.readouterr().err.strip() == (
        f"error: {tmp_path / 'Final_pre' / 'raw_pre' / '01_test.png'} not found; the test of several runs wrote it "
        f"per run: --final-pre {tmp_path / 'Final_pre'}/RUN, RUN one of sigmoid_seed42")
    figures.main(["--image", "01_test.tif", "--final-pre", str(tmp_path / "Final_pre" / "sigmoid_seed42"),
                  "--data-root", str(real_data), "--out", str(out)])  # the photograph's file name does too
    assert Image.open(out).size == figure.size
    shipped = tmp_path / "DRIVE_AV" / "Final_pre_pretrained" / "raw_pre"  # test.sh's test of the shipped bundle
    shipped.mkdir(parents=True)
    (shipped / "01_test.png").write_bytes((per_run / "01_test.png").read_bytes())
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:  # no --final-pre: the default folder is not there, that one is
        figures.main(["--image", "01_test", "--data-root", str(real_data), "--out", str(out)])
    assert info.value.code == 2 and capsys.readouterr().err.strip() == (
        "error: DRIVE_AV/Final_pre/raw_pre/01_test.png not found: --final-pre DRIVE_AV/Final_pre_pretrained?")


def test_readme_figure_of_an_own_photograph_finds_its_outputs_in_a_cohort(tmp_path, capsys):
    """--photo with --predictions: the outputs predict.py named for that photograph (patB/OD for
    cohort/patB/OD.jpg: its predictions.csv row, else the class map that names its content; never
    patA's OD), the photograph the way up they were made (its EXIF orientation); without
    --predictions, one line."""
    from PIL.PngImagePlugin import PngInfo
    from scripts import figures
    from scripts.predict_inputs import fingerprint
    cohort, predictions, out = tmp_path / "cohort", tmp_path / "predictions", tmp_path / "fig.png"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored on its side: viewers (and predict.py) turn it to 20 wide x 30 high
    for patient, value in (("patA", 50), ("patB", 200)):
        (cohort / patient).mkdir(parents=True)
        Image.new("RGB", (30, 20), (value, 0, 0)).save(cohort / patient / "OD.jpg", exif=exif)
        (predictions / patient).mkdir(parents=True)
        for suffix in ("_overlay.png", "_colour.png"):
            Image.new("RGB", (20, 30), (0, value, 0)).save(predictions / patient / f"OD{suffix}")
        made_from = PngInfo()  # as predict.py names a class map's photograph
        made_from.add_text("source_sha256", fingerprint(cohort / patient / "OD.jpg"))
        Image.new("P", (20, 30)).save(predictions / patient / "OD_classes.png", pnginfo=made_from)

    def figure_of(photo):
        figures.main(["--photo", str(photo), "--predictions", str(predictions), "--out", str(out)])
        return np.asarray(Image.open(out).convert("RGB"))

    panel = round(20 * 400 / 30)  # each panel upright, scaled to 400 high
    (predictions / "predictions.csv").write_text(
        "path,output\n" + "".join(f"{cohort / p / 'OD.jpg'},{p}/OD\n" for p in ("patA", "patB")))
    figure = figure_of(cohort / "patB" / "OD.jpg")
    assert figure.shape == (400 + 24, 3 * panel + 2 * 10, 3)
    assert figure[200, panel + 10 + panel // 2].tolist() == [0, 200, 0]  # patB's overlay
    (predictions / "predictions.csv").unlink()  # without the CSV: the class map that names its content
    assert figure_of(cohort / "patB" / "OD.jpg")[200, panel + 10 + panel // 2].tolist() == [0, 200, 0]
    Image.new("P", (20, 30)).save(predictions / "patB" / "OD_classes.png")  # of an older version: no fingerprint
    assert figure_of(cohort / "patB" / "OD.jpg")[200, panel + 10 + panel // 2].tolist() == [0, 200, 0]  # no other
    (predictions / "predictions.csv").write_text(f"path,output\n{cohort / 'patA' / 'OD.jpg'},patA/OD\n")
    shutil.rmtree(predictions / "patB")  # patB never predicted: patA's OD is not its figure
    with pytest.raises(SystemExit) as info:
        figure_of(cohort / "patB" / "OD.jpg")
    assert info.value.code == 2 and (f"holds outputs named OD ({predictions / 'patA' / 'OD_classes.png'}), but none "
                                     f"made from {cohort / 'patB' / 'OD.jpg'}") in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        figures.main(["--photo", str(cohort / "patB" / "OD.jpg"), "--out", str(out)])
    assert info.value.code == 2 and capsys.readouterr().err.strip() == (
        "error: --photo needs --predictions, the output folder predict.py wrote for it")
    with pytest.raises(SystemExit) as info:  # a figure to be written under a file
        figures.main(["--photo", str(cohort / "patA" / "OD.jpg"), "--predictions", str(predictions),
                      "--out", str(out / "fig.png")])
    assert info.value.code == 2 and capsys.readouterr().err.strip().splitlines() == [
        f"error: --out's folder {out}: a file of that name exists; give a folder"]


ENTRY_POINTS = [["train.py"], ["test.py"], ["predict.py"], ["reproduce.py"], ["benchmarks/benchmark.py"],
                ["benchmarks/allocator.py"], ["benchmarks/folding.py"], ["benchmarks/precision.py"],
                *(["-m", f"scripts.{m}"] for m in ("bundle", "compare", "config", "figures", "fov", "labels", "pack",
                                                   "scalars", "score", "synthetic"))]


@pytest.fixture(scope="module")
def help_texts():
    """Every entry point's --help, all started at once (each start imports torch: seconds)."""
    procs = [subprocess.Popen([sys.executable, *entry, "--help"], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for entry in ENTRY_POINTS]
    texts = [proc.communicate(timeout=180) for proc in procs]
    return [(proc.returncode, out, err) for proc, (out, err) in zip(procs, texts, strict=True)]


@pytest.mark.parametrize("index", range(len(ENTRY_POINTS)), ids=[" ".join(e) for e in ENTRY_POINTS])
def test_every_entry_point_answers_help(help_texts, index):
    code, out, err = help_texts[index]
    assert code == 0 and out.lstrip().startswith("usage:"), (ENTRY_POINTS[index], err[-500:])


@pytest.mark.filterwarnings("ignore:.*found in sys.modules:RuntimeWarning")  # runpy of an imported module
@pytest.mark.parametrize("entry", ENTRY_POINTS, ids=[" ".join(e) for e in ENTRY_POINTS])
def test_every_entry_point_says_a_wrong_option_in_one_line(entry, monkeypatch, capsys):
    """A mistyped option is told as the programs' own errors are: one line, exit status 2, not
    argparse's usage block above it (run in this process: no torch import per entry point)."""
    monkeypatch.delenv("RANK", raising=False)  # as a plain start, not a torchrun rank
    monkeypatch.setattr(sys, "argv", [entry[-1], "--no-such-option"])
    with pytest.raises(SystemExit) as info:
        if entry[0] == "-m":
            runpy.run_module(entry[1], run_name="__main__", alter_sys=True)
        else:
            runpy.run_path(str(ROOT / entry[0]), run_name="__main__")
    lines = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and len(lines) == 1 and lines[0].startswith("error: "), lines


def test_a_wrong_option_under_torchrun_is_said_once(monkeypatch, capsys):
    """torchrun starts every process with the same command line: rank 0 says what is wrong, the
    others exit 2 without repeating it."""
    parser = ArgumentParser(prog="python train.py")
    for rank, said in (("0", 1), ("1", 0)):
        monkeypatch.setenv("RANK", rank)
        with pytest.raises(SystemExit) as info:
            parser.parse_args(["--no-such-option"])
        assert info.value.code == 2 and len(capsys.readouterr().err.strip().splitlines()) == said, rank


def test_the_progress_bar_in_a_log_file_is_lines(monkeypatch, capsys):
    """Into a log file (nohup, a scheduler, torchrun's merged output) the bar is whole lines: no
    carriage return, the notes written beside it on lines of their own, its final count once,
    also for a bar that is not kept (a cache's: a log must not end on its 0 %)."""
    from tqdm import tqdm

    from scripts import cli
    monkeypatch.setattr(cli, "BAR_INTERVAL", 0)
    with cli.progress_bar(total=4, desc="predict", unit="img") as bar:
        for i in range(4):
            bar.update()
            if i == 1:
                tqdm.write("note: a.png: a greyscale photograph", file=sys.stderr)
    monkeypatch.setattr(cli, "BAR_INTERVAL", 3600)
    with cli.progress_bar(range(2), desc="cache", leave=False) as bar:
        list(bar)
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert "\r" not in err and "note: a.png: a greyscale photograph" in lines
    assert [line.split("|")[0].strip() for line in lines if line.startswith("predict")] == [
        "predict:   0%", "predict:  25%", "predict:  50%", "predict:  75%", "predict: 100%"]
    assert [line.split("|")[0].strip() for line in lines if line.startswith("cache")] == [
        "cache:   0%", "cache: 100%"]


def load_test_script():
    """test.py as a module (its name would shadow pytest's idea of a test module)."""
    import importlib.util
    spec_ = importlib.util.spec_from_file_location("test_script", ROOT / "test.py")
    test_script = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(test_script)
    return test_script


def test_a_test_into_a_used_folder_says_what_it_replaces_and_leaves_no_empty_folders(tmp_path):
    """Several runs' test writes pictures per run, one run's at the top: the next test of the
    other kind clears the first's pictures of these images, and the folders they leave empty;
    a sub-folder that is not one of its runs' (another test's output) is left alone."""
    out = tmp_path / "Final_pre"
    assert evaluation_outputs.earlier_test(out) == ""
    for run in ("sigmoid_seed42", "sigmoid_seed40"):
        for folder in evaluation_outputs.PICTURE_FOLDERS:
            (out / run / folder).mkdir(parents=True)
            (out / run / folder / "01_test.png").write_bytes(b"png")
    (out / "sigmoid_seed40" / "raw_pre" / "mine.txt").write_text("kept")
    (out / "Final_pre" / "small_pre").mkdir(parents=True)
    (out / "Final_pre" / "small_pre" / "01_test.png").write_bytes(b"another test's")
    (out / "summary.json").write_text(json.dumps({"runs": ["DRIVE_AV/sigmoid_seed42", "DRIVE_AV/sigmoid_seed40"]}))
    (out / "metrics.csv").write_text("run,image\n")
    assert evaluation_outputs.earlier_test(out) == f"the test of DRIVE_AV/sigmoid_seed42, DRIVE_AV/sigmoid_seed40 in {out}"
    evaluation_outputs.clear_earlier_test(out, ["01_test"])
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
        "Final_pre", "Final_pre/small_pre", "Final_pre/small_pre/01_test.png",
        "sigmoid_seed40", "sigmoid_seed40/raw_pre", "sigmoid_seed40/raw_pre/mine.txt"]
    (out / "summary.json").write_text(json.dumps({"runs": ["DRIVE_AV/sigmoid_seed42"], "precision": "fp32"}))
    assert evaluation_outputs.earlier_test(out) == f"the test of DRIVE_AV/sigmoid_seed42 (fp32) in {out}"
    (out / "summary.json").write_text("{not json")
    assert evaluation_outputs.earlier_test(out) == f"the summary.json in {out}"


def test_a_test_replaces_one_of_the_same_runs_never_one_of_runs_it_does_not_test(tmp_path, monkeypatch):
    """The default Final_pre is shared: a test again, or with more seeds, replaces the earlier
    one; a test that would drop another run's results (softmax after sigmoid, or fewer seeds) is
    one line. Runs are compared by the real paths the summary records, so the same runs given
    from another working folder are the same."""
    test_script = load_test_script()
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "DRIVE_AV" / "Final_pre"
    out.mkdir(parents=True)
    (out / "summary.json").write_text(json.dumps({"runs": ["DRIVE_AV/sigmoid_seed42", "DRIVE_AV/sigmoid_seed40"]}))
    evaluation_outputs.check_nothing_lost(out, ["DRIVE_AV/sigmoid_seed42", str(tmp_path / "DRIVE_AV" / "sigmoid_seed40"),
                                         "DRIVE_AV/sigmoid_seed38"])  # the same runs (one by its full path), and one more
    for runs, dropped in ((["DRIVE_AV/sigmoid_seed42"], "DRIVE_AV/sigmoid_seed40"),
                          (["DRIVE_AV/softmax_seed42"], "DRIVE_AV/sigmoid_seed42, DRIVE_AV/sigmoid_seed40")):
        with pytest.raises(test_script.ConfigError) as info:
            evaluation_outputs.check_nothing_lost(out, runs)
        assert str(info.value) == (f"--output {out} holds the test of {dropped}, which this test does not repeat: "
                                   f"--overwrite replaces it, or --output DIR keeps both")
    seed42 = tmp_path / "DRIVE_AV" / "sigmoid_seed42"
    (out / "summary.json").write_text(json.dumps({"runs": ["DRIVE_AV/sigmoid_seed42"], "run_paths": [str(seed42)]}))
    monkeypatch.chdir(out)  # elsewhere, where DRIVE_AV/sigmoid_seed42 names nothing
    evaluation_outputs.check_nothing_lost(out, [seed42])


def test_clearing_an_earlier_test_of_one_run_leaves_sub_folders_alone(tmp_path):
    """A test of one run writes its pictures at the top: its clearing touches no sub-folder,
    not even one named like that run (--output DRIVE_AV after a test into DRIVE_AV/sigmoid)."""
    out = tmp_path / "DRIVE_AV"
    for folder in (out / "raw_pre", out / "sigmoid" / "raw_pre"):
        folder.mkdir(parents=True)
        (folder / "01_test.png").write_bytes(b"png")
    (out / "summary.json").write_text(json.dumps({"runs": ["DRIVE_AV/sigmoid"]}))
    evaluation_outputs.clear_earlier_test(out, ["01_test"])
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
        "sigmoid", "sigmoid/raw_pre", "sigmoid/raw_pre/01_test.png"]
    assert evaluation_outputs.run_names(["..", "a/run", "b/run"]) == [Path("..").resolve().name, "run", "run_2"]  # no path


def test_the_pictures_of_a_test_of_several_runs_stopped_before_its_summary_are_cleared(tmp_path):
    """Stopped while writing, a test of several runs leaves per-run pictures and no summary; its
    RUNS_BEING_TESTED names them, so the next test (of other runs) clears them too."""
    out = tmp_path / "Final_pre"
    for run in ("sigmoid_seed42", "sigmoid_seed40"):
        (out / run / "raw_pre").mkdir(parents=True)
        (out / run / "raw_pre" / "01_test.png").write_bytes(b"png")
    (out / evaluation_outputs.RUNS_BEING_TESTED).write_text(json.dumps({"runs": ["DRIVE_AV/sigmoid_seed42",
                                                                          "DRIVE_AV/sigmoid_seed40"]}))
    evaluation_outputs.clear_earlier_test(out, ["01_test"], ["softmax_seed42", "softmax_seed40"])
    assert not any(out.iterdir())


def test_clearing_names_a_run_given_as_dot_dot_as_its_test_did(tmp_path, monkeypatch):
    """An earlier test of several runs, one given as '..' from another working folder: its
    per-run folder is named after that run's real folder (summary.json's run_paths)."""
    out = tmp_path / "out"
    for run in ("seed42", "seed40"):
        (out / run / "raw_pre").mkdir(parents=True)
        (out / run / "raw_pre" / "01_test.png").write_bytes(b"png")
    (out / "summary.json").write_text(json.dumps({"runs": ["..", "runs/seed40"],
                                                  "run_paths": ["/somewhere/seed42", "/somewhere/runs/seed40"]}))
    monkeypatch.chdir(out)  # where '..' is tmp_path, not seed42
    evaluation_outputs.clear_earlier_test(out, ["01_test"])
    assert not any(out.rglob("*.png")) and not (out / "seed42").exists()


def test_a_test_stopped_while_writing_leaves_the_earlier_test_as_it_was(real_data, tmp_path):
    """SIGTERM (or Ctrl-C) during the scoring: one line that says what the folder holds, exit
    143; the new test was written aside (STAGING), so the earlier test's summary, CSV and
    pictures are all still there, and nothing of the new one."""
    out = tmp_path / "out"
    (out / "raw_pre").mkdir(parents=True)
    (out / "summary.json").write_text(json.dumps({"runs": ["DRIVE_AV/another_model"]}))
    (out / "metrics.csv").write_text("run,image\n")
    (out / "raw_pre" / "01_test.png").write_bytes(b"the earlier test's")
    before = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    proc = subprocess.Popen([sys.executable, str(ROOT / "test.py"), "--dataset", "DRIVE_AV", "--pretrained",
                             "--data-root", str(real_data), "--cache-dir", str(tmp_path / "cache"),
                             "--output", str(out), "--overwrite"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while (not any(out.glob(f"{evaluation_outputs.STAGING}/raw_pre/*.png")) and time.time() < deadline
               and proc.poll() is None):
            time.sleep(0.2)  # until the scoring has written its first picture
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 143 and "Traceback" not in err, err[-2000:]
    assert err.strip().splitlines()[-1] == (f"terminated (SIGTERM): test.py stopped before its results were "
                                            f"complete; {out} holds what it held before (the earlier test, kept)")
    assert {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_a_test_stopped_before_its_first_picture_leaves_no_folder(real_data, tmp_path, monkeypatch):
    test_script = load_test_script()

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(test_script, "predict_and_score", stopped)
    args = test_script.build_parser().parse_args(["--dataset", "DRIVE_AV", "--pretrained", "--data-root",
                                                  str(real_data), "--output", str(tmp_path / "new")])
    with pytest.raises(KeyboardInterrupt):
        test_script.run_test(args)
    assert not (tmp_path / "new").exists()


def test_a_test_unlike_the_training_is_noted_and_recorded(capsys):
    """Weights trained on another data set or at another input size are tested as asked, with a
    note on stderr and the training's data set and size in summary.json's run_details."""
    test_script = load_test_script()
    from scripts.config import DATASETS
    saved = {"dataset": "les-av", "image_size": [800, 720], "activation": "softmax", "base_width": 4,
             "epochs": 1500}  # a plan, not what was trained: no last.pth, so no epochs planned recorded
    details = test_script.run_details("runs/x", saved, (720, 720), DATASETS["HRF-AV"])
    assert details == {"run": "runs/x", "trained_on": "LES-AV", "trained_size": [800, 720], "input_size": [720, 720],
                       "activation": "softmax", "base_width": 4, "fusion": "mean", "best_epoch": None,
                       "best_val_f1": None, "epochs_done": None, "epochs_planned": None, "about": None,
                       "initialised_from": None}
    assert capsys.readouterr().err.splitlines() == [
        "note: runs/x was trained on LES-AV; testing it on HRF-AV (a cross-data-set test, not the published protocol)",
        "note: runs/x was trained at 800 x 720; testing it at 720 x 720 (--image-size / --uniform)"]
    original = {"activation": "sigmoid", "base_width": 32}  # the original authors' files record neither
    assert test_script.run_details("cp", original, (592, 592), DATASETS["DRIVE_AV"])["trained_on"] is None
    assert capsys.readouterr().err == ""
