"""reproduce.py, the budgeted job for a GPU held for a fixed time: on the real DRIVE_AV data at a
tiny size, the budget holds, training stops by --time-limit, and what comes back (results
archive, bundle) is complete and consistent."""
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import torch

from scripts.bundle import load_any
from scripts.checkpoint import read
from tests.conftest import ROOT

BUDGET = 2.5  # minutes: benchmark (at most 1; about 0.3 on an idle 2-core CPU), training until 0.75 minutes
#                are left, test, package


@pytest.fixture(scope="module")
def job(real_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reproduce")
    out = tmp / "out"
    started = time.time()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "reproduce.py"), "--dataset", "DRIVE_AV", "--data-root", str(real_data),
         "--seeds", "42", "40", "--epochs", "1000", "--budget-minutes", str(BUDGET), "--reserve-minutes", "0.75",
         "--benchmark-minutes", "1", "--benchmark-steps", "1", "--no-amp", "--archive", "--tag", "tiny",
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
    reduced = "base width 4 instead of 32, input 64 x 64 instead of 592 x 592"
    assert record["what"].endswith(f"not the paper's network: {reduced}") and "--base-width 4" in record["train_args"]
    summary = json.loads((results / "summary.json").read_text())
    assert summary["runs"] == ["DRIVE_AV/sigmoid_seed42", "DRIVE_AV/sigmoid_seed40"]
    for metric in ("sensitivity", "auc_roc", "f1", "auc_pr", "mse"):
        assert record["test"]["table"][metric] == summary["average"][metric]
    per_run = record["test"]["per_run"]
    assert per_run == summary["per_run"] and set(per_run) == {"sigmoid_seed42", "sigmoid_seed40"}
    assert sum(r["f1"] for r in per_run.values()) / 2 == pytest.approx(summary["average"]["f1"]["mean"], abs=1e-9)
    assert len(record["code_sha256"]) == 64


def test_the_archive_holds_scalars_benchmark_and_logs_of_every_seed(job):
    out, results, _, _, _ = job
    assert sorted(p.name for p in out.iterdir()) == ["bundle", "results.tar.gz"]  # few files to copy back
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
    assert f"{best['epochs_done']} of 1000 epochs" in about and "commit abc1234" in about and ", fp32 training" in about
    assert "(base width 4 instead of 32, input 64 x 64 instead of 592 x 592: not the paper's network)" in about
    test_f1 = record["test"]["per_run"][f"sigmoid_seed{best['seed']}"]["f1"]
    assert f"DRIVE_AV test F1 {test_f1:.2f}" in about
    saved = read(work / "DRIVE_AV" / f"sigmoid_seed{best['seed']}" / "CP_best_F1_all.pth")["state_dict"]
    for name, tensor in nets.G.state_dict().items():
        if tensor.is_floating_point():
            assert torch.equal(tensor, saved[name].half().float()), name


@pytest.mark.parametrize("options, message", [
    (["--dataset", "DRIVE"], "did you mean"),
    (["--budget-minutes", "3"], "leaves no time to train"),  # after 1.5 of benchmark and 2 of reserve
    (["--train-args", "--seed_num 3"], "seed is set by reproduce.py itself"),
    (["--train-args", "--bogus 1"], "--bogus 1 is not a train.py option"),
    (["--train-args", "--fusion none --batch-size 4"], "batch_size, fusion would change train.sh's protocol"),
    (["--train-args", "--base-width 5"], "--base-width 5: must be an even number"),
    (["--train-args", "--image-size 64"], "--train-args: argument --image-size: expected 2 arguments"),
    (["--train-args", "--base-width 4 'x"], "--train-args: No closing quotation"),
    (["--train-args", "--uniform"], "--train-args: argument --uniform: expected one argument"),  # one word: read
    (["--tag", "a/b"], "must be a plain folder name"),
    (["--shard-mib", "0"], "--shard-mib at least 1"),
    (["--budget-minutes", "-1"], "must be more than 0"),
    (["--data-root", "nowhere"], "no DRIVE_AV folder in it"),
    (["--out", "taken"], "exists and is not an empty folder"),
])
def test_bad_options_are_one_line_and_write_nothing(options, message, tmp_path, monkeypatch, capsys):
    """In this process (reproduce.main), not a fresh one: each start would import torch again."""
    from reproduce import main
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("kept")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(["--data-root", str(ROOT / "data"), *options])
    err = capsys.readouterr().err
    assert info.value.code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_a_phase_ends_with_every_process_of_its_group(tmp_path):
    """A shell dies at SIGTERM at once; its children (train.sh's seeds) must still be waited for,
    and one that ignores SIGTERM is killed after the grace period."""
    from reproduce import Phase
    child = ("import signal, sys, time\n"
             "def stop(*_):\n    time.sleep(1); open(sys.argv[1], 'w').write('saved'); sys.exit(143)\n"
             "signal.signal(signal.SIGTERM, stop if sys.argv[2] == 'saves' else signal.SIG_IGN)\n"
             "time.sleep(60)\n")
    (tmp_path / "child.py").write_text(child)
    for kind, grace in (("saves", 30), ("ignores", 1)):
        started = time.time()
        phase = Phase(kind, ["sh", "-c", f"{sys.executable} child.py {kind}.done {kind} & wait"], tmp_path, tmp_path)
        time.sleep(1)
        phase.wait(timeout=0.5, grace=grace)
        assert time.time() - started < 15
        with pytest.raises(ProcessLookupError):
            os.killpg(phase.proc.pid, 0)  # nothing of the group is left
        assert (tmp_path / f"{kind}.done").exists() == (kind == "saves")  # the child's own stop ran


def test_a_failed_training_still_writes_run_json_and_the_archive(real_data, tmp_path):
    """No training image: every seed fails at once; the job says so and keeps its records."""
    (tmp_path / "data" / "DRIVE_AV" / "training" / "images").mkdir(parents=True)
    proc = subprocess.run([sys.executable, str(ROOT / "reproduce.py"), "--data-root", str(tmp_path / "data"),
                           "--seeds", "1", "--benchmark-minutes", "0", "--archive", "--tag", "t",
                           "--train-args", "--no-memory-check",  # (the paper's size fits or not: not the point)
                           "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]
    with tarfile.open(tmp_path / "out" / "results.tar.gz") as tar:
        record = json.load(tar.extractfile("results/sigmoid/DRIVE_AV/t/run.json"))
        log = tar.extractfile("results/sigmoid/DRIVE_AV/t/logs/train_DRIVE_AV_sigmoid_seed1.log").read().decode()
    assert record["failed_phases"] == ["train", "test"] and record["phases"]["train"]["exit_status"] == 2
    assert record["seeds"] == [{"seed": 1, "run": "DRIVE_AV/sigmoid_seed1", "epochs_done": 0}]
    assert "error:" in log and "bundle" not in record


def processes_working_in(folder):
    """{pid: command line} of the processes whose working folder is ``folder`` or below it (the
    seeds train.sh starts work in reproduce.py's --work)."""
    found = {}
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and Path(os.readlink(proc / "cwd")).is_relative_to(folder):
                found[int(proc.name)] = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:  # ended meanwhile, or not ours to read
            pass
    return found


@pytest.fixture
def reproduce_in_background(real_data, tmp_path):
    """start(W): reproduce.py on DRIVE_AV in the background, one seed of width-4 networks at
    W x W, with its work in tmp_path/work and its results in tmp_path/out. Whatever the test's
    outcome, nothing it started is left running afterwards."""
    started = []

    def start(size):
        proc = subprocess.Popen([sys.executable, str(ROOT / "reproduce.py"), "--data-root", str(real_data),
                                 "--seeds", "42", "--benchmark-minutes", "0", "--archive", "--tag", "t", "--no-amp",
                                 "--train-args", f"--base-width 4 --image-size {size} {size}",
                                 "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work")],
                                cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
    for pid in processes_working_in(tmp_path / "work"):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.parametrize("signum, console", [(signal.SIGTERM, "kept"), (signal.SIGHUP, "closed")])
def test_a_stop_from_outside_ends_training_and_still_packages_the_trained_seeds(reproduce_in_background, tmp_path,
                                                                                   signum, console):
    """A job stopped from outside (a scheduler, a lease's limit: SIGTERM; a closed terminal or
    SSH session: SIGHUP, its console gone) ends its seeds' epochs, and still writes run.json,
    the archive and the bundle of what was trained; no seed is left running."""
    work = tmp_path / "work"
    proc = reproduce_in_background(64)
    best = work / "DRIVE_AV" / "sigmoid_seed42" / "CP_best_F1_all.pth"
    deadline = time.time() + 240
    while not best.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
    assert best.exists(), proc.communicate()[1][-2000:] if proc.poll() is not None else "no epoch in 4 minutes"
    if console == "closed":
        proc.stdout.close()  # its next line meets a closed pipe
    proc.send_signal(signum)
    proc.wait(timeout=120)
    err = proc.stderr.read()
    assert proc.returncode == 1 and "Traceback" not in err and "Exception ignored" not in err, err[-2000:]
    assert processes_working_in(work) == {}  # no seed outlives it
    with tarfile.open(tmp_path / "out" / "results.tar.gz") as tar:
        record = json.load(tar.extractfile("results/sigmoid/DRIVE_AV/t/run.json"))
    assert record["failed_phases"] == ["train", f"interrupted ({signum.name})"]
    assert record["phases"]["train"]["exit_status"] != 0 and "train.sh" in record["phases"]["train"]["command"]
    assert record["seeds"][0]["epochs_done"] >= 1 and record["bundle"]["seed"] == 42
    assert (tmp_path / "out" / "bundle" / "DRIVE_AV_sigmoid.index.json").is_file()


def test_a_second_stop_ends_at_once_and_still_writes_the_record(reproduce_in_background, tmp_path):
    """Ctrl-C pressed twice: the second does not wait out the seeds' minute of grace; it ends
    them now, leaves no process behind, and run.json and the archive are still written."""
    work = tmp_path / "work"
    proc = reproduce_in_background(128)
    best = work / "DRIVE_AV" / "sigmoid_seed42" / "CP_best_F1_all.pth"
    deadline = time.time() + 240
    while not best.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)  # until the seed is in its epochs (a first stop then waits for the epoch's end)
    assert best.exists(), proc.communicate()[1][-2000:] if proc.poll() is not None else "no epoch in 4 minutes"
    proc.send_signal(signal.SIGTERM)
    for line in proc.stdout:
        if "stopping, packaging what there is" in line:
            break
    proc.send_signal(signal.SIGTERM)
    started = time.time()
    proc.wait(timeout=60)
    err, last_line = proc.stderr.read(), proc.stdout.read().splitlines()[-1]
    assert proc.returncode == 1 and "Traceback" not in err, err[-2000:]
    assert time.time() - started < 30 and processes_working_in(work) == {}
    assert "interrupted (SIGTERM), interrupted again (SIGTERM)" in last_line, last_line
    with tarfile.open(tmp_path / "out" / "results.tar.gz") as tar:
        record = json.load(tar.extractfile("results/sigmoid/DRIVE_AV/t/run.json"))
    assert record["failed_phases"][-2:] == ["interrupted (SIGTERM)", "interrupted again (SIGTERM)"]
    assert "train" in record["phases"]  # the seeds' phase is recorded, however it ended


def test_a_pack_of_another_size_is_refused_before_anything_runs(tmp_path):
    """The README's recipe with --image-size: a pack made at 592 x 592 cannot train at 64 x 64,
    and that is said at once, not in a seed's log after the benchmark."""
    from scripts.pack import PACK_FILE
    (tmp_path / "packs" / "DRIVE_AV").mkdir(parents=True)
    (tmp_path / "packs" / "DRIVE_AV" / PACK_FILE).write_text(json.dumps({"training_size": [592, 592]}))
    proc = subprocess.run([sys.executable, str(ROOT / "reproduce.py"), "--data-root", str(tmp_path / "packs"),
                           "--train-args", "--image-size 64 64", "--out", str(tmp_path / "out")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "packed at 592 x 592" in proc.stderr and not (tmp_path / "out").exists()
    assert 'use it with --train-args "--image-size 592 592"' in proc.stderr  # reproduce.py's own option


def test_seeds_that_would_not_fit_in_a_cpus_memory_together_are_refused_before_anything_runs(
        tmp_path, monkeypatch, capsys):
    """On a CPU the seeds train at once, each train.py checking only its own need: reproduce.py
    checks them together, before the benchmark (a 24 GiB machine takes one DRIVE_AV seed at the
    paper's settings, batch 2, not three)."""
    import reproduce
    from scripts import device
    monkeypatch.setattr(device, "total_memory_mib", lambda: 24 * 1024)
    monkeypatch.setattr(device, "amp_dtype_for", lambda *_: None)  # fp32, whatever this CPU is
    monkeypatch.chdir(tmp_path)
    one_seed = device.cpu_training_memory_mib((592, 592), 32, 2, False)
    assert one_seed < 24 * 1024 < 3 * one_seed  # the premise
    with pytest.raises(SystemExit) as info:
        reproduce.main(["--data-root", str(ROOT / "data"), "--train-args", "--device cpu"])
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("error: --seeds 42 40 38 train at once, each in its own process: 3 processes at 592 x "
                          "592, width 32, batch 2 in fp32 needs about 34 GiB of memory on a CPU, more than this "
                          "machine's 24 GiB"), err
    assert err.endswith("fewer --seeds, or a smaller --base-width or --image-size in --train-args, need less (linear "
                        'in each) (--train-args "--no-memory-check" tries all the same)'), err
    assert list(tmp_path.iterdir()) == []
    args, _, options, _, _ = reproduce.parse_and_check(
        ["--data-root", str(ROOT / "data"), "--seeds", "42", "--train-args", "--device cpu"])
    reproduce.check_cpu_memory(args, options)  # one seed fits
    args, _, options, _, _ = reproduce.parse_and_check(
        ["--data-root", str(ROOT / "data"), "--train-args", "--device cpu --no-memory-check"])
    reproduce.check_cpu_memory(args, options)  # and the user may try all the same


def test_the_protocol_reproduce_py_checks_is_train_shs():
    from reproduce import TRAIN_SH_PROTOCOL
    exec_line = " ".join((ROOT / "train.sh").read_text().replace("\\\n", " ").split())  # continued lines joined
    assert f'"$HERE/train.py" $epochs_arg {TRAIN_SH_PROTOCOL} ' in exec_line
