"""last.pth: the whole state of a training run (all four networks, the optimisers, the
schedulers, the random generators, the epoch and step), written by train.py every --save-every
minutes, at the end and at a stop; and the checks of ``--resume``, which continues it.

The best networks (CP_best_F1_*.pth) are checkpoint.py's: the weights a test reads. last.pth
is only for continuing a run (400 MB at width 32, with Adam's moments).
"""
import sys
from pathlib import Path

import torch

from .checkpoint import LAST_STATE, NETWORK_FILES, CheckpointError, atomic_torch_save, read
from .config import ConfigError, RunConfig
from .distributed import launched_as_rank_zero


def save(run_dir, cfg, epoch, step, best_f1, nets, trainer, rng, precision=None, images=None):
    """last.pth: everything --resume needs to continue after ``epoch`` as if never stopped
    (``precision``, as describe_precision says it, so that a resume in another one is noted;
    ``images``: {"training": names, "validation": names}, the split a resume must find again)."""
    nets.check_not_folded()
    atomic_torch_save({"config": cfg.to_dict(), "epoch": epoch, "step": step, "best_f1": best_f1, "precision": precision,
                       "images": images, "networks": nets.state_dict(), "trainer": trainer.state_dict(),
                       "generator": rng.get_state(), "torch_rng": torch.get_rng_state()},
                      run_dir / LAST_STATE)


def check_same_images(path, saved, now):
    """One line where a resumed run would train or validate on other images than it did (a
    --data-root of another copy, images added or removed): its best epoch would then be chosen
    on a new validation set, perhaps one it trained on. ``saved`` None: a last.pth of a version
    that did not record them."""
    if not saved:
        if launched_as_rank_zero():
            print(f"note: {path} was saved by a version that did not record its images: whether the data now "
                  f"gives the split it trained on ({len(now['training'])} training, validation "
                  f"{', '.join(now['validation'])}) cannot be checked; resume it with the data it started with",
                  file=sys.stderr)
        return
    for split in ("training", "validation"):
        before, after = list(saved.get(split) or []), list(now[split])
        if before != after:
            gone, new = sorted(set(before) - set(after)), sorted(set(after) - set(before))
            what = "; ".join(f"{label}: {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}"
                             for label, names in (("not found now", gone), ("new", new)) if names)
            raise ConfigError(f"--resume: {path} trained on {len(before)} {split} images, the data now gives "
                              f"{len(after)} ({what or 'in another order'}): the run would go on with another split; "
                              f"resume it with the data it started with (--data-root)")


def read_state(path, mmap=False) -> dict:
    """last.pth's contents, or one line when the file is not a last.pth of this project."""
    state = read(path, mmap=mmap)
    keys = {"config", "epoch", "step", "best_f1", "networks", "trainer", "generator", "torch_rng"}
    if not (isinstance(state, dict) and keys <= set(state)):
        raise CheckpointError(f"{path}: not a training state of this project (missing "
                              f"{', '.join(sorted(keys - set(state))) if isinstance(state, dict) else 'everything'})")
    if not (isinstance(state["config"], dict) and "epochs" in state["config"]):
        raise CheckpointError(f"{path}: its saved configuration is damaged (no planned epochs)")
    return state


def restore(run_dir, cfg, nets, trainer, rng, images=None):
    """Load last.pth into the networks, optimisers, schedulers and random generators;
    returns (first epoch to run, best validation F1 so far, the epoch of the best networks kept,
    step, the precision its last session trained in (None in files of older versions)).
    ``images``: this session's split (``save``'s), checked against the saved one."""
    state = read_state(run_dir / LAST_STATE)
    if images is not None:
        check_same_images(run_dir / LAST_STATE, state.get("images"), images)
    saved = RunConfig.from_dict(state["config"])
    if (saved.activation, saved.base_width, saved.fusion_mode) != (cfg.activation, cfg.base_width, cfg.fusion_mode):
        raise ConfigError(f"{run_dir / LAST_STATE}: saved run is {saved.activation}/width "
                          f"{saved.base_width}/fusion {saved.fusion_mode}, asked for "
                          f"{cfg.activation}/width {cfg.base_width}/fusion {cfg.fusion_mode}")
    nets.load_state_dict(state["networks"])
    trainer.load_state_dict(state["trainer"])
    rng.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])
    best_f1, best_epoch = state["best_f1"], None
    best_file = run_dir / NETWORK_FILES["G"]
    if best_file.is_file():  # saved after last.pth when a crash fell between the two
        saved_best = read(best_file, mmap=True)  # its epoch and F1, not its weights
        if isinstance(saved_best, dict) and isinstance(saved_best.get("val_f1"), (int, float)):
            best_f1, best_epoch = max(best_f1, saved_best["val_f1"]), saved_best.get("epoch")
    return state["epoch"] + 1, best_f1, best_epoch, state["step"], state.get("precision")


def check_nothing_to_overwrite(run_dir: Path):
    """A new run (no --resume) refuses a folder that holds another run's last.pth or best networks."""
    if (run_dir / LAST_STATE).is_file():
        saved = read_state(run_dir / LAST_STATE, mmap=True)
        done, planned = saved["epoch"] + 1, saved["config"]["epochs"]
        how = ("--resume continues it" if done < planned else
               f"it is finished; --resume --epochs N (more than {done}) trains it longer")
        raise ConfigError(f"{run_dir} already holds a run ({done}/{planned} epochs done): {how}; another "
                          f"--job_name (or deleting the folder) starts afresh")
    if (run_dir / NETWORK_FILES["G"]).is_file():
        raise ConfigError(f"{run_dir} holds the best networks of a run that stopped before its first last.pth "
                          f"(--save-every): another --job_name (or deleting the folder) starts afresh")


RUNTIME_OPTIONS = {"epochs", "device", "amp", "amp_discriminator", "tf32", "compile", "memory_check", "log_every",
                   "image_every", "save_every", "data_root", "cache_dir", "time_limit"}


def resume_config(cfg: RunConfig, given: set, output_root) -> RunConfig:
    """The configuration saved in last.pth, with the run-time options the user gave; any other
    option given with a different value is an error (it would change the run being continued)."""
    path = cfg.run_dir(output_root) / LAST_STATE
    if not path.is_file() and (path.parent / NETWORK_FILES["G"]).is_file():
        raise ConfigError(f"{path} is missing: the run stopped before its first save (every --save-every "
                          f"minutes); train it again under another --job_name")
    if not path.is_file():
        raise ConfigError(f"--resume: no saved run to continue, {path} not found (check --job_name, --dataset and "
                          f"--output-root; a run not started yet starts without --resume)")
    state = read_state(path, mmap=True)  # (mapped: train() reads the 400 MB state)
    saved, done = RunConfig.from_dict(state["config"]), state["epoch"] + 1
    saved.time_limit = cfg.time_limit  # a budget of this invocation, never carried over
    saved.memory_check = cfg.memory_check  # a check of this machine: on again unless this invocation turns it off
    changed = []
    for key in sorted(given & set(RunConfig.__dataclass_fields__)):
        ours, theirs = getattr(cfg, key), getattr(saved, key)
        if key in RUNTIME_OPTIONS:
            if key == "epochs" and ours != theirs and ours > done and launched_as_rank_zero():  # (else: said later)
                print(f"note: --epochs {ours}: the run was planned for {theirs}; it now trains to epoch {ours}",
                      file=sys.stderr)
            setattr(saved, key, ours)
        elif key == "image_size" and tuple(ours) == tuple(theirs or ()) or key == "dataset":
            continue
        elif ours != theirs:
            changed.append(f"{key}={theirs}, not {ours}")
    if changed:  # all of them in the one line, not one per attempt
        raise ConfigError(f"{path}: the run was started with {'; '.join(changed)}; --resume continues it as it "
                          f"was (start a new --job_name to change it)")
    return saved


def stopped_message(how, cfg, output_root) -> str:
    """The one line for a run stopped by Ctrl-C or SIGTERM: what --resume would continue from."""
    if cfg is None:
        return f"{how}"
    run_dir = cfg.run_dir(output_root)
    last = run_dir / LAST_STATE
    if last.is_file():
        try:
            epoch = read_state(last, mmap=True)["epoch"] + 1
        except CheckpointError as exc:
            return f"{how}; {exc}"
        return (f"{how}: --resume continues after epoch {epoch}, from {last} (saved every --save-every "
                f"minutes and at the end)")
    if run_dir.is_dir():
        return (f"{how} before the first save of {last}: nothing to resume; start afresh under another "
                f"--job_name or after deleting {run_dir}")
    return f"{how} before the first epoch's checkpoints: nothing to resume; the same command starts it again"
