"""Interrupted training resumes exactly; atomic writes; checkpoints that know what they are."""
import errno
import os
import re
import signal
from pathlib import Path

import pytest
import torch

import train
from scripts import cli, last_state
from scripts.checkpoint import CheckpointError, atomic_torch_save, load_networks
from scripts.config import RunConfig
from scripts.files import WriteError


def config(real_data, tmp_path, epochs, **kw):
    return RunConfig(dataset="DRIVE_AV", data_root=str(real_data), job_name="r", epochs=epochs,
                     batch_size=4, image_size=(64, 64), base_width=4, validation=10, seed=3,
                     cache_dir=str(tmp_path / "cache"), device="cpu", **kw)


def weights(run_dir):
    return torch.load(Path(run_dir) / "last.pth", weights_only=True)["networks"]


def test_two_epochs_equal_one_plus_resume_plus_one(real_data, tmp_path):
    torch.use_deterministic_algorithms(True)
    try:
        train.train(config(real_data, tmp_path, 2), tmp_path / "runs_a", tmp_path / "a")
        train.train(config(real_data, tmp_path, 1), tmp_path / "runs_b", tmp_path / "b")
        train.train(config(real_data, tmp_path, 2), tmp_path / "runs_b", tmp_path / "b", resume=True)
    finally:
        torch.use_deterministic_algorithms(False)
    a, b = weights(tmp_path / "a/DRIVE_AV/r"), weights(tmp_path / "b/DRIVE_AV/r")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_checkpoint_of_another_variant_gives_one_line(real_data, tmp_path):
    train.train(config(real_data, tmp_path, 1), tmp_path / "runs", tmp_path)
    run_dir = tmp_path / "DRIVE_AV" / "r"
    nets, saved = load_networks(run_dir, {"activation": "sigmoid", "base_width": 4})
    assert saved["activation"] == "sigmoid" and saved["image_size"] == [64, 64]
    with pytest.raises(CheckpointError, match="checkpoint is sigmoid variant, base width 4.*activation=softmax"):
        load_networks(run_dir, {"activation": "softmax"})
    with pytest.raises(CheckpointError, match="base_width=32"):
        load_networks(run_dir, {"base_width": 32})


def test_a_failed_save_leaves_the_previous_file_intact(tmp_path):
    path = tmp_path / "ckpt.pth"
    atomic_torch_save({"x": torch.ones(3)}, path)

    class Exploding:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(WriteError) as info:  # one line for the user, not torch's traceback
        atomic_torch_save({"x": torch.zeros(3), "bad": Exploding()}, path)
    assert str(info.value) == f"cannot write {path} (disk full); an earlier ckpt.pth there is kept"
    assert torch.equal(torch.load(path, weights_only=True)["x"], torch.ones(3))
    with pytest.raises(WriteError) as info:  # no earlier file: none is said to be kept
        atomic_torch_save({"bad": Exploding()}, tmp_path / "new.pth")
    assert str(info.value) == f"cannot write {tmp_path / 'new.pth'} (disk full); nothing of it was left there"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pth"]  # no temporary left behind


def test_ablation_without_branches_trains_saves_and_loads(real_data, tmp_path):
    train.train(config(real_data, tmp_path, 1, fusion="none"), tmp_path / "runs", tmp_path)
    run_dir = tmp_path / "DRIVE_AV" / "r"
    assert (run_dir / "CP_best_F1_all.pth").is_file() and not (run_dir / "CP_best_F1_A.pth").exists()
    nets, saved = load_networks(run_dir)
    assert saved["fusion"] == "none" and not nets.uses_branches
    assert nets.predict(torch.zeros(1, 3, 64, 64)).shape == (1, 3, 64, 64)


def test_resume_keeps_the_saved_settings_and_refuses_changes(real_data, tmp_path):
    import subprocess
    import sys
    from tests.conftest import ROOT
    base = [sys.executable, str(ROOT / "train.py"), "--dataset", "DRIVE_AV", "--data-root", str(real_data),
            "--job_name", "r", "--cache-dir", str(tmp_path / "c"), "--output-root", str(tmp_path),
            "--runs-dir", str(tmp_path / "runs"), "--device", "cpu"]
    first = base + ["--epochs", "1", "--image-size", "64", "64", "--base-width", "4", "--v", "10", "--seed_num", "3"]
    assert subprocess.run(first, capture_output=True, cwd=tmp_path).returncode == 0
    changed = subprocess.run(base + ["--epochs", "2", "--v", "50", "--base-width", "8", "--resume"],
                             capture_output=True, text=True, cwd=tmp_path)
    assert changed.returncode == 2  # every changed option in the one line
    assert "started with base_width=4, not 8; validation=10.0, not 50.0; --resume continues it as it was" in \
        changed.stderr.strip().splitlines()[-1]
    again = subprocess.run(base + ["--epochs", "2", "--resume"], capture_output=True, text=True, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "note: --epochs 2: the run was planned for 1; it now trains to epoch 2" in again.stderr  # a changed length is said
    state = torch.load(tmp_path / "DRIVE_AV/r/last.pth", weights_only=True)
    assert state["epoch"] == 1 and state["config"]["base_width"] == 4 and state["config"]["validation"] == 10.0
    assert len(state["images"]["training"]) == 18 and len(state["images"]["validation"]) == 2
    # Another copy of the data, one training image short: another split, refused in one line.
    copy = tmp_path / "copy" / "DRIVE_AV"
    copy.mkdir(parents=True)
    (copy / "test").symlink_to(real_data / "DRIVE_AV" / "test")
    last = sorted((real_data / "DRIVE_AV" / "training" / "images").iterdir())[-1].name.split("_")[0]  # '40'
    for folder in ("images", "1st_manual", "mask"):
        (copy / "training" / folder).mkdir(parents=True)
        for f in (real_data / "DRIVE_AV" / "training" / folder).iterdir():
            if not f.name.startswith(last):
                (copy / "training" / folder / f.name).symlink_to(f)
    other = [a if a != str(real_data) else str(tmp_path / "copy") for a in base]
    refused = subprocess.run(other + ["--epochs", "3", "--resume"], capture_output=True, text=True, cwd=tmp_path)
    assert refused.returncode == 2, refused.stderr[-2000:]
    said = refused.stderr.strip().splitlines()[-1]
    assert said.startswith(f"error: --resume: {tmp_path / 'DRIVE_AV/r/last.pth'} trained on 18 training images, the "
                           f"data now gives 18 (not found now: ") and f"{last}_training" in said and said.endswith(
        "the run would go on with another split; resume it with the data it started with (--data-root)"), said
    import test as test_script  # its test reads the plan of last.pth (2 epochs), not the one of its best files
    assert test_script.epochs_done(tmp_path / "DRIVE_AV" / "r") == (2, 2)
    (tmp_path / "damaged").mkdir()
    (tmp_path / "damaged" / "last.pth").write_bytes(b"not a checkpoint")
    assert test_script.epochs_done(tmp_path / "damaged") == (None, None)  # said, and the test goes on


def test_a_last_pth_of_a_version_that_kept_no_split_is_resumed_with_a_note(tmp_path, capsys):
    """Older versions did not record the images; their runs resume, and the note says the
    split cannot be checked (the data must be the one the run started with)."""
    from scripts.last_state import check_same_images
    check_same_images(tmp_path / "last.pth", None, {"training": ["21_training", "22_training"],
                                                    "validation": ["23_training"]})
    assert capsys.readouterr().err.strip() == (
        f"note: {tmp_path / 'last.pth'} was saved by a version that did not record its images: whether the data now "
        f"gives the split it trained on (2 training, validation 23_training) cannot be checked; resume it with the "
        f"data it started with")


def test_a_run_folder_without_last_pth_is_tested_with_a_note(tmp_path, capsys):
    """Its best networks say what was planned, not how far it got (last.pth deleted, or an older
    version's run killed before it saved one)."""
    import test as test_script
    from scripts.bfnet import Networks
    from scripts.checkpoint import save_best
    from scripts.config import DATASETS
    save_best(tmp_path / "run", Networks("sigmoid", 4), RunConfig(base_width=4, epochs=8, image_size=(64, 64)), 3, 0.5)
    nets, saved = test_script.load_any(tmp_path / "run")
    details = test_script.run_details(tmp_path / "run", saved, (64, 64), DATASETS["DRIVE_AV"])
    assert (details["epochs_done"], details["best_epoch"]) == (None, 3)
    assert capsys.readouterr().err.strip() == (
        f"note: {tmp_path / 'run'} has no last.pth (deleted, or a run of an older version killed before it saved "
        f"one): whether it trained all of its 8 planned epochs is unknown (its best networks are of epoch 3)")


def test_time_limit_stops_between_epochs_and_resume_finishes(real_data, tmp_path, capsys):
    cfg = config(real_data, tmp_path, 3, time_limit=0, memory_check=False)  # 0 minutes: one epoch, then stop
    _, complete = train.train(cfg, tmp_path / "runs", tmp_path)
    assert not complete and "stopped after epoch 1/3" in capsys.readouterr().out
    assert torch.load(tmp_path / "DRIVE_AV/r/last.pth", weights_only=True)["epoch"] == 0
    with pytest.raises(train.ConfigError, match=r"already holds a run \(1/3 epochs done\): --resume continues it"):
        train.train(cfg, tmp_path / "runs", tmp_path)  # never overwritten without --resume
    import test as test_script  # a test of the unfinished run says so, and summary.json records it
    from scripts.bundle import load_any
    run = tmp_path / "DRIVE_AV" / "r"
    details = test_script.run_details(run, load_any(run)[1], (64, 64), cfg.spec)
    assert details["epochs_done"] == 1 and details["epochs_planned"] == 3
    assert (f"note: {run} stopped after 1 of its 3 planned epochs (its last.pth): these numbers are of an "
            f"unfinished run") in capsys.readouterr().err
    resumed = last_state.resume_config(config(real_data, tmp_path, 3), set(), tmp_path)
    assert resumed.time_limit is None  # the limit is this invocation's, not saved with the run
    assert resumed.memory_check  # and so is --no-memory-check: another machine may continue the run
    best_f1, complete = train.train(resumed, tmp_path / "runs", tmp_path, resume=True)
    assert complete and torch.load(tmp_path / "DRIVE_AV/r/last.pth", weights_only=True)["epoch"] == 2
    best_epoch = torch.load(tmp_path / "DRIVE_AV/r/CP_best_F1_all.pth", weights_only=True)["epoch"]
    assert (f"best validation F1 {100 * best_f1:.2f} % (epoch {best_epoch}); checkpoints in "
            f"{tmp_path / 'DRIVE_AV' / 'r'}") in capsys.readouterr().out  # the epoch of the weights kept
    from scripts.scalars import read_scalars  # TensorBoard keeps the saved epoch's logs: one per epoch
    assert len(read_scalars(tmp_path / "runs" / "DRIVE_AV_r")["val/average/f1"]) == 3


def test_a_new_run_under_a_used_name_sets_the_earlier_logs_apart(real_data, tmp_path, capsys):
    """Its checkpoints deleted, a name is free again; the earlier run's TensorBoard events move
    to a sub-folder (a run of their own in TensorBoard), never mixed with the new run's curves.
    A run shorter than --log-every steps still logs its losses (at the end of each epoch)."""
    from scripts.scalars import read_scalars
    import shutil
    log_dir = tmp_path / "runs" / "DRIVE_AV_r"
    train.train(config(real_data, tmp_path, 1), tmp_path / "runs", tmp_path)  # 5 steps, --log-every 10
    first = read_scalars(log_dir)
    assert [step for step, _, _ in first["loss/G"]] == [5] and len(first["val/average/f1"]) == 1
    shutil.rmtree(tmp_path / "DRIVE_AV" / "r")
    capsys.readouterr()
    train.train(config(real_data, tmp_path, 1), tmp_path / "runs", tmp_path)
    earlier = [p for p in log_dir.iterdir() if p.is_dir()]
    assert len(earlier) == 1 and earlier[0].name.startswith("earlier_")
    assert f"held the TensorBoard logs of an earlier run under this name: moved to {earlier[0]}" in \
        capsys.readouterr().out
    assert read_scalars(earlier[0]) == first  # nothing lost
    assert len(read_scalars(log_dir)["val/average/f1"]) == 1  # the new run's alone
    assert (log_dir / train.CURVES_OF).read_text().strip() == os.path.realpath(tmp_path / "DRIVE_AV" / "r")
    assert (earlier[0] / train.CURVES_OF).is_file()  # whose the earlier curves were goes with them
    # A run of this name from another --output-root sets these curves aside as well; a --resume of
    # the run they are of would then draw the two runs as one: one line.
    train.train(config(real_data, tmp_path, 1), tmp_path / "runs", tmp_path / "elsewhere")
    resumed = last_state.resume_config(config(real_data, tmp_path, 2), set(), tmp_path)
    with pytest.raises(train.ConfigError, match=re.escape(
            f"--resume: {log_dir} now holds the TensorBoard curves of {os.path.realpath(tmp_path / 'elsewhere')}/"
            f"DRIVE_AV/r, a later run of this name")):
        train.train(resumed, tmp_path / "runs", tmp_path, resume=True)
    assert train.train(resumed, tmp_path / "runs2", tmp_path, resume=True)[1]  # another --runs-dir: it goes on
    (log_dir / train.CURVES_OF).write_text(str(tmp_path / "moved_since" / "DRIVE_AV" / "r"))  # a run copied elsewhere
    train.check_curves_are_this_runs(log_dir, tmp_path / "DRIVE_AV" / "r")  # is no other run: not refused
    (log_dir / train.CURVES_OF).write_text(os.path.realpath(tmp_path / "elsewhere" / "DRIVE_AV" / "r"))
    train.check_curves_are_this_runs(log_dir, tmp_path / "typo" / "r")  # no such run: --resume's own line says so


def test_earlier_logs_of_the_same_second_get_folders_of_their_own(tmp_path):
    for run in range(2):
        event = tmp_path / f"events.out.tfevents.{run}"
        event.write_bytes(b"x")
        os.utime(event, (1e9, 1e9))
        train.set_aside_old_events(tmp_path)
    assert train.set_aside_old_events(tmp_path) is None  # nothing left to move
    folders = sorted(p.name for p in tmp_path.iterdir())
    assert len(folders) == 2 and folders[1] == folders[0] + "_2"
    assert [p.name for p in (tmp_path / folders[1]).iterdir()] == ["events.out.tfevents.1"]


def test_time_limit_exit_status_is_3(real_data, tmp_path):
    import subprocess
    import sys
    from tests.conftest import ROOT
    args = [sys.executable, str(ROOT / "train.py"), "--dataset", "DRIVE_AV", "--data-root", str(real_data),
            "--job_name", "t", "--cache-dir", str(tmp_path / "c"), "--output-root", str(tmp_path),
            "--runs-dir", str(tmp_path / "runs"), "--device", "cpu", "--epochs", "2", "--image-size", "64", "64",
            "--base-width", "4", "--v", "10", "--time-limit", "1e-6"]
    proc = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == cli.TIME_LIMIT_EXIT, proc.stderr[-2000:]
    assert "--resume continues" in proc.stdout
    last = proc.stdout.strip().splitlines()[-1]  # the run's last line says it is unfinished, too
    assert last.endswith(f"checkpoints in {tmp_path / 'DRIVE_AV' / 't'} (stopped after epoch 1 of 2: --resume continues)")


def test_load_initialises_the_generators_from_a_bundle(real_data, tmp_path, capsys):
    from scripts.bundle import export_bundle
    train.train(config(real_data, tmp_path, 1), tmp_path / "runs", tmp_path)
    bundle = export_bundle(tmp_path / "DRIVE_AV" / "r", tmp_path / "r.pth")
    cfg = config(real_data, tmp_path, 1)
    cfg.job_name = "from_bundle"
    train.train(cfg, tmp_path / "runs", tmp_path, load=str(bundle))
    said = capsys.readouterr()
    assert f"initialised generators from {bundle}" in said.out and "was trained at" not in said.err
    from scripts.bundle import load_any, main as bundle_main, weights_sha256
    origin = (f"{bundle} (trained on DRIVE_AV, epoch 1, weights sha256 {weights_sha256(load_any(bundle)[0])})")
    for kept in (load_any(tmp_path / "DRIVE_AV" / "from_bundle")[1],  # what it was fine-tuned from, kept
                 torch.load(tmp_path / "DRIVE_AV/from_bundle/last.pth", weights_only=True)["config"]):
        assert kept["initialised_from"] == origin
    bundle_main(["info", str(tmp_path / "DRIVE_AV" / "from_bundle")])
    assert f"initialised from: {origin}" in capsys.readouterr().out
    cfg.job_name, cfg.image_size = "larger", (96, 96)  # weights of 64 x 64 go on at 96 x 96: said
    train.train(cfg, tmp_path / "runs", tmp_path, load=str(bundle))
    assert (f"note: --load {bundle} was trained at 64 x 64; this run trains at 96 x 96 (the data set's, or "
            f"--image-size / --uniform)") in capsys.readouterr().err
    with pytest.raises(CheckpointError, match="activation=softmax"):
        cfg.activation, cfg.job_name = "softmax", "softmax_from_bundle"
        train.train(cfg, tmp_path / "runs", tmp_path, load=str(bundle))


def test_best_checkpoints_are_replaced_as_a_set(tmp_path, monkeypatch):
    from scripts import checkpoint
    from scripts.bfnet import Networks
    nets, cfg = Networks("sigmoid", 4), RunConfig(base_width=4)
    checkpoint.save_best(tmp_path, nets, cfg, epoch=1, val_f1=0.1)
    real_save, calls = torch.save, {"n": 0}

    def failing_save(obj, path):
        calls["n"] += 1
        if calls["n"] == 2:  # G staged, then G_A fails: nothing may be replaced
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(obj, path)

    monkeypatch.setattr(checkpoint.torch, "save", failing_save)
    with pytest.raises(WriteError) as info:
        checkpoint.save_best(tmp_path, nets, cfg, epoch=2, val_f1=0.2)
    assert str(info.value) == (f"cannot write {tmp_path / 'CP_best_F1_A.pth'} (No space left on device); an earlier "
                               f"CP_best_F1_A.pth there is kept")
    monkeypatch.undo()
    assert {torch.load(tmp_path / f, weights_only=True)["epoch"] for f in checkpoint.NETWORK_FILES.values()} == {1}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(checkpoint.NETWORK_FILES.values())


def test_last_state_is_saved_every_few_minutes_and_at_the_end(real_data, tmp_path, monkeypatch):
    """last.pth holds 400 MB at width 32: written every --save-every minutes (0: every epoch),
    always after the first and the last epoch; TensorBoard pictures every --image-every epochs, first and last
    (0: none)."""
    saved = []
    real_save = last_state.atomic_torch_save
    monkeypatch.setattr(last_state, "atomic_torch_save",
                        lambda obj, path: (saved.append(obj["epoch"]), real_save(obj, path)))
    train.train(config(real_data, tmp_path, 4, save_every=60, image_every=3), tmp_path / "runs", tmp_path / "a")
    assert saved == [0, 3]  # after the first epoch (resumable from then on) and the last
    saved.clear()
    train.train(config(real_data, tmp_path, 2, save_every=0), tmp_path / "runs_b", tmp_path / "b")
    assert saved == [0, 1]

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(tmp_path / "runs" / "DRIVE_AV_r"), size_guidance={"images": 0})
    events.Reload()
    steps = [e.step for e in events.Images("val/mixed_segments")]
    assert len(steps) == 3 and steps == sorted(steps)  # epochs 1, 3 and 4, not 2
    events = EventAccumulator(str(tmp_path / "runs_b" / "DRIVE_AV_r"), size_guidance={"images": 0})
    events.Reload()
    assert len(events.Images("val/mixed_segments")) == 2  # every epoch at the default of 10: first and last

    train.train(config(real_data, tmp_path, 2, image_every=0), tmp_path / "runs_c", tmp_path / "c")
    events = EventAccumulator(str(tmp_path / "runs_c" / "DRIVE_AV_r"), size_guidance={"images": 0})
    events.Reload()
    assert "val/mixed_segments" not in events.Tags()["images"] and events.Scalars("val/average/f1")


def test_a_run_stopped_before_its_first_save_is_not_overwritten(real_data, tmp_path):
    train.train(config(real_data, tmp_path, 1), tmp_path / "runs", tmp_path)
    (tmp_path / "DRIVE_AV" / "r" / "last.pth").unlink()  # as if killed before the first save
    with pytest.raises(train.ConfigError, match="stopped before its first last.pth"):
        train.train(config(real_data, tmp_path, 1), tmp_path / "runs", tmp_path)
    with pytest.raises(train.ConfigError, match="last.pth is missing: the run stopped before its first save"):
        last_state.resume_config(config(real_data, tmp_path, 1), set(), tmp_path)


def test_a_last_pth_of_something_else_is_one_line(capsys, tmp_path):
    """--resume (and a new run over the folder) on a last.pth that is not this project's training
    state: the file and what it lacks, exit 2, before any data is read."""
    run_dir = tmp_path / "DRIVE_AV" / "r"
    run_dir.mkdir(parents=True)
    torch.save({"epoch": 3, "model": {}}, run_dir / "last.pth")
    for extra in (["--resume"], []):
        with pytest.raises(SystemExit) as stop:
            train.main(["--dataset", "DRIVE_AV", "--data-root", str(tmp_path / "no_data"), "--output-root",
                        str(tmp_path), "--job_name", "r", *extra])
        assert stop.value.code == 2
        assert capsys.readouterr().err.strip().splitlines() == [
            f"error: {run_dir / 'last.pth'}: not a training state of this project (missing best_f1, config, "
            "generator, networks, step, torch_rng, trainer)"]


@pytest.mark.parametrize("how,status,word", [
    (lambda: os.kill(os.getpid(), signal.SIGTERM), 143, "terminated (SIGTERM)"),
    (lambda: (_ for _ in ()).throw(KeyboardInterrupt), 130, "interrupted"),
])
def test_sigterm_and_ctrl_c_end_in_one_line(monkeypatch, capsys, tmp_path, how, status, word):
    """A scheduler's SIGTERM (or kill) stops training like Ctrl-C: one line saying what --resume
    would continue from, no traceback; the SIGTERM handler is put back afterwards."""
    before = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(train, "train", lambda *a, **k: how())
    args = ["--dataset", "DRIVE_AV", "--epochs", "9", "--output-root", str(tmp_path), "--job_name", "r"]
    run_dir = tmp_path / "DRIVE_AV" / "r"
    for stage, line in (
            ("nothing yet", f"{word} before the first epoch's checkpoints: nothing to resume; the same command "
                            f"starts it again"),
            ("folder only", f"{word} before the first save of {run_dir / 'last.pth'}: nothing to resume; start "
                            f"afresh under another --job_name or after deleting {run_dir}"),
            ("saved", f"{word}: --resume continues after epoch 4, from {run_dir / 'last.pth'} (saved every "
                      f"--save-every minutes and at the end)")):
        if stage == "folder only":
            run_dir.mkdir(parents=True)
        if stage == "saved":
            torch.save({"epoch": 3, "config": {"epochs": 9}, "step": 36, "best_f1": 0.5, "networks": {}, "trainer": {},
                        "generator": {}, "torch_rng": torch.get_rng_state()}, run_dir / "last.pth")
        with pytest.raises(SystemExit) as stop:
            train.main(args)
        assert stop.value.code == status
        assert capsys.readouterr().err.strip().splitlines() == [line]
    assert signal.getsignal(signal.SIGTERM) == before


def test_a_sigterm_delivered_twice_is_one_request_and_a_later_one_stops_at_once(monkeypatch):
    """A scheduler that signals every process of a job reaches train.py directly and through
    train.sh, which passes its own SIGTERM on: within SAME_REQUEST_S that is one request."""
    from scripts import stopping
    clock = [100.0]
    monkeypatch.setattr(stopping.time, "monotonic", lambda: clock[0])
    request = stopping.StopRequest()
    request.graceful = True
    request(signal.SIGTERM, None)
    clock[0] += stopping.SAME_REQUEST_S * 0.6
    request(signal.SIGTERM, None)  # the same one, twice: no stop at once
    assert request.signum == signal.SIGTERM
    clock[0] += stopping.SAME_REQUEST_S * 0.6  # 1.2 s after the first: a second request (the window does not slide)
    with pytest.raises(stopping.Terminated):
        request(signal.SIGTERM, None)
    request = stopping.StopRequest()
    request.graceful = True
    request(signal.SIGTERM, None)
    with pytest.raises(KeyboardInterrupt):  # a Ctrl-C after it is a second request, however soon
        request(signal.SIGINT, None)
    request = stopping.StopRequest()  # outside the graceful stretch: the first stops at once, its twin is ignored
    with pytest.raises(stopping.Terminated):
        request(signal.SIGTERM, None)
    assert request(signal.SIGTERM, None) is None  # no second Terminated while the first unwinds


def test_under_torchrun_only_rank_0_says_it_stops(monkeypatch, capsys, tmp_path):
    """Every rank gets the signal and stops at the same epoch; one line each, not one per rank."""
    monkeypatch.setattr(train, "train", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    args = ["--dataset", "DRIVE_AV", "--output-root", str(tmp_path), "--job_name", "r"]
    for rank, lines in (("1", 0), ("0", 1)):  # torchrun sets RANK
        monkeypatch.setenv("RANK", rank)
        request = train.StopRequest()
        request.graceful = True
        request(signal.SIGTERM, None)
        assert request.signum == signal.SIGTERM  # every rank stops, whatever it prints
        with pytest.raises(SystemExit) as stop:
            train.main(args)
        assert stop.value.code == 130
        said = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(said) == 2 * lines, said  # "stopping at the end of this epoch", "interrupted ..."


@pytest.mark.parametrize("signum,status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_during_an_epoch_ends_it_saves_and_resume_loses_nothing(real_data, tmp_path, monkeypatch,
                                                                       capsys, signum, status):
    """A scheduler's SIGTERM or a Ctrl-C in epoch 2 of 3: epoch 2 is finished and saved, the exit
    status says why, and --resume then gives the weights of the uninterrupted run."""
    common = ["--dataset", "DRIVE_AV", "--data-root", str(real_data), "--epochs", "3", "--batch-size", "4",
              "--image-size", "64", "64", "--base-width", "4", "--v", "10", "--seed", "3", "--device", "cpu",
              "--cache-dir", str(tmp_path / "cache"), "--job_name", "r", "--save-every", "60"]
    torch.use_deterministic_algorithms(True)
    real_step, calls = train.Trainer.step, []
    # As in a terminal (a job started in the background of a script, as CI may be, ignores SIGINT).
    sigint_before = signal.signal(signal.SIGINT, signal.default_int_handler)

    def step_then_signal(self, *a, **k):
        calls.append(1)
        if len(calls) == 7:  # the third step of epoch 2 (5 steps per epoch)
            os.kill(os.getpid(), signum)
        return real_step(self, *a, **k)

    try:
        train.main([*common, "--output-root", str(tmp_path / "a"), "--runs-dir", str(tmp_path / "runs_a")])
        monkeypatch.setattr(train.Trainer, "step", step_then_signal)
        with pytest.raises(SystemExit) as stop:
            train.main([*common, "--output-root", str(tmp_path / "b"), "--runs-dir", str(tmp_path / "runs_b")])
        assert stop.value.code == status
        assert len(calls) == 10  # epoch 2 ran to its end
        run_dir = tmp_path / "b" / "DRIVE_AV" / "r"
        assert torch.load(run_dir / "last.pth", weights_only=True)["epoch"] == 1
        name = signal.Signals(signum).name
        err, out = capsys.readouterr()[::-1]
        assert f"{name}: stopping at the end of this epoch, with last.pth saved (again to stop at once)" in err
        assert f"{name}: stopped after epoch 2/3; --resume continues from {run_dir / 'last.pth'}" in out
        monkeypatch.setattr(train.Trainer, "step", real_step)
        train.main([*common, "--output-root", str(tmp_path / "b"), "--runs-dir", str(tmp_path / "runs_b"), "--resume"])
    finally:
        torch.use_deterministic_algorithms(False)
        signal.signal(signal.SIGINT, sigint_before)
    a, b = weights(tmp_path / "a/DRIVE_AV/r"), weights(tmp_path / "b/DRIVE_AV/r")
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_a_resume_in_another_precision_is_noted_and_one_with_nothing_to_train_writes_nothing(
        real_data, tmp_path, capsys, monkeypatch):
    """Precision is a run-time option, so a resume may change it; that is said, since whether
    bf16 costs quality is an open question (README, Performance). A resume whose epochs are
    all done trains nothing and writes nothing (no TensorBoard file, no last.pth)."""
    from scripts import device as dev
    monkeypatch.setattr(dev, "cpu_bf16_pays_off", lambda: True)
    train.train(config(real_data, tmp_path, 1, amp=True), tmp_path / "runs", tmp_path)
    assert torch.load(tmp_path / "DRIVE_AV/r/last.pth", weights_only=True)["precision"] == "bfloat16 autocast"
    said = [line for line in capsys.readouterr().out.splitlines() if line.startswith("validation images")]
    names = said[0].split(": ")[1].split(", ")  # which images the F1 that picks the checkpoint is of
    assert len(said) == 1 and len(names) == 2 and all(n.endswith("_training") for n in names), said
    train.train(config(real_data, tmp_path, 2, amp=False), tmp_path / "runs", tmp_path, resume=True)
    assert ("note: this run's last session trained in bfloat16 autocast (up to epoch 1); it goes on in fp32 (--amp "
            "/ --no-amp, AMP=1 for train.sh, --no-amp-discriminator and --tf32 choose)") in capsys.readouterr().out
    files = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    best_f1, complete = train.train(config(real_data, tmp_path, 1, amp=False), tmp_path / "runs", tmp_path,
                                    resume=True)
    assert complete and "2 epochs are done already, --epochs is 1: nothing to train" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == files
    last_state.resume_config(config(real_data, tmp_path, 1), {"epochs"}, tmp_path)  # fewer than done: not
    assert "it now trains to" not in capsys.readouterr().err                        # "it now trains to epoch 1"
    last_state.resume_config(config(real_data, tmp_path, 5), {"epochs"}, tmp_path)
    assert "note: --epochs 5: the run was planned for 2; it now trains to epoch 5" in capsys.readouterr().err


def test_train_py_names_every_run_time_option_resume_allows():
    """train.py's help lists the options --resume lets change: those of last_state.RUNTIME_OPTIONS
    and the folders (--runs-dir, --output-root), no more, no fewer."""
    sentence = " ".join(train.__doc__.split()).split("only --epochs")[1].split(" may change")[0]
    named = set(re.findall(r"--(?:no-)?([a-z][a-z0-9-]*)", "--epochs" + sentence))
    allowed = {k.replace("_", "-") for k in last_state.RUNTIME_OPTIONS} | {"runs-dir", "output-root"}
    assert named == allowed
