"""reproduce.py, the budgeted job for a GPU held for a fixed time: on the real DRIVE_AV data at a
tiny size, the budget holds, training stops by --time-limit, and what comes back (results
archive, bundle) is complete and consistent."""
import json
import subprocess
import sys
import tarfile
import time

import pytest
import torch

from scripts.bundle import load_any
from scripts.checkpoint import read
from tests.conftest import ROOT

BUDGET = 2.5  # minutes: benchmark (at most 0.5), training until 1 minute is left, test, package


@pytest.fixture(scope="module")
def job(real_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reproduce")
    out = tmp / "out"
    started = time.time()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "reproduce.py"), "--dataset", "DRIVE_AV", "--data-root", str(real_data),
         "--seeds", "42", "40", "--epochs", "1000", "--budget-minutes", str(BUDGET), "--reserve-minutes", "1",
         "--benchmark-minutes", "0.5", "--benchmark-steps", "1", "--no-amp", "--archive", "--tag", "tiny",
         "--commit", "abc1234", "--train-args", "--base-width 4 --image-size 64 64 --cache-dir cache",
         "--out", str(out), "--work", str(tmp / "work")],
        cwd=tmp, capture_output=True, text=True, timeout=600)
    minutes = (time.time() - started) / 60
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with tarfile.open(out / "results.tar.gz") as tar:
        tar.extractall(tmp / "unpacked", filter="data")
    results = tmp / "unpacked" / "results" / "sigmoid" / "DRIVE_AV" / "tiny"
    return out, results, json.loads((results / "run.json").read_text()), minutes, tmp / "work"


def test_the_job_keeps_to_its_budget_and_training_stops_by_the_time_limit(job):
    _, _, record, minutes, _ = job
    assert minutes < BUDGET + 0.5  # the Python start-up and the last file writes come on top
    assert record["failed_phases"] == []
    assert set(record["phases"]) == {"benchmark", "train", "test"}
    assert record["phases"]["train"]["exit_status"] == 3  # train.py's --time-limit stop, as planned
    assert "--time-limit" in record["phases"]["train"]["command"]
    assert "AMP=0" in record["phases"]["train"]["command"] and "PARALLEL=1" in record["phases"]["train"]["command"]
    for seed in record["seeds"]:
        assert 1 <= seed["epochs_done"] < 1000 and 1 <= seed["best_epoch"] <= seed["epochs_done"]


def test_run_json_records_provenance_and_the_test_table_of_summary_json(job):
    _, results, record, _, _ = job
    assert record["commit"] == "abc1234" and record["machine"]["torch"] == torch.__version__
    assert "fp32 training" in record["what"]
    summary = json.loads((results / "summary.json").read_text())
    assert summary["runs"] == ["DRIVE_AV/sigmoid_seed42", "DRIVE_AV/sigmoid_seed40"]
    for metric in ("sensitivity", "auc_roc", "f1", "auc_pr", "mse"):
        assert record["test"]["table"][metric] == summary["average"][metric]
    per_run = record["test"]["f1_per_run"]
    assert sum(per_run.values()) / 2 == pytest.approx(summary["average"]["f1"]["mean"], abs=1e-6)


def test_the_archive_holds_scalars_benchmark_and_logs_of_every_seed(job):
    _, results, _, _, _ = job
    for seed in (42, 40):
        assert (results / f"seed{seed}" / "scalars.csv.gz").stat().st_size > 0
        assert (results / "logs" / f"train_DRIVE_AV_sigmoid_seed{seed}.log").is_file()
    bench = json.loads((results / "benchmark_DRIVE_AV_cpu.json").read_text())
    assert bench["settings"]["image_size"] == [64, 64] and bench["settings"]["base_width"] == 4
    assert {"plain", "tuned"} <= set(bench["results"])
    assert (results / "metrics.csv").is_file() and (results / "logs" / "test.log").is_file()


def test_the_bundle_is_the_best_validation_seed_in_fp16_and_says_how_it_was_made(job):
    out, _, record, _, work = job
    best = max(record["seeds"], key=lambda r: r["best_val_f1"])
    assert record["bundle"]["seed"] == best["seed"]
    nets, cfg = load_any(out / "bundle" / "DRIVE_AV_sigmoid.index.json")
    assert cfg["base_width"] == 4 and cfg["stored_dtype"] == "float16"
    about = cfg["about"]
    assert f"seed {best['seed']}" in about and "shortened schedule, not the paper's protocol" in about
    assert f"{best['epochs_done']} of 1000 epochs" in about and "commit abc1234" in about
    saved = read(work / "DRIVE_AV" / f"sigmoid_seed{best['seed']}" / "CP_best_F1_all.pth")["state_dict"]
    for name, tensor in nets.G.state_dict().items():
        if tensor.is_floating_point():
            assert torch.equal(tensor, saved[name].half().float()), name


@pytest.mark.parametrize("options, message", [
    (["--dataset", "DRIVE"], "did you mean"),
    (["--budget-minutes", "1", "--reserve-minutes", "2"], "leaves no time to train"),
    (["--data-root", "nowhere"], "no DRIVE_AV folder in it"),
    (["--out", "taken"], "exists and is not an empty folder"),
])
def test_bad_options_are_one_line_and_write_nothing(options, message, tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("kept")
    proc = subprocess.run([sys.executable, str(ROOT / "reproduce.py"), "--data-root", str(ROOT / "data"), *options],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]
