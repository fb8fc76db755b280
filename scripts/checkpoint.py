"""Checkpoints: files that carry their configuration (written atomically: scripts/files.py), and
loading of both the project's own files and the original authors' plain state dicts.

Per run folder ``./<Dataset>/<job name>/``:
  CP_best_F1_all.pth, CP_best_F1_A.pth, CP_best_F1_V.pth   G, G_A, G_V at the best validation F1
  last.pth                                                  everything needed to resume
The three network files use the original project's names. Ours are dicts
{"format", "version", "network", "config", "state_dict", ...}; the original's are plain
state dicts, which load too (their config is inferred from the tensor shapes).
"""
import os
import re
import sys
from pathlib import Path

import torch

from .bfnet import Networks
from .config import VARIANTS, ConfigError, RunConfig
from .distributed import launched_as_rank_zero
from .files import atomic_write, remove_quietly, write_failed

FORMAT = "avseg-checkpoint"
VERSION = 1
NETWORK_FILES = {"G": "CP_best_F1_all.pth", "G_A": "CP_best_F1_A.pth", "G_V": "CP_best_F1_V.pth"}
# The original's 2021 version saved every epoch as CP_epoch<N>_all.pth, _A.pth, _V.pth.
EPOCH_FILE = re.compile(r"^CP_epoch(\d+)_all\.pth$")
LAST_STATE = "last.pth"


class CheckpointError(ConfigError):
    pass


def atomic_torch_save(obj, path):
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def save_best(run_dir, nets: Networks, cfg: RunConfig, epoch: int, val_f1: float, precision: str = None):
    """G, G_A, G_V of one epoch as a set: all three are written to temporary files first and
    only then renamed, so a crash while writing (seconds, at width 32) leaves the earlier set
    whole; only one between the three renames (microseconds) could mix them. ``precision``: what
    the session that trained them ran in (describe_precision), beside the config's ``amp``, which
    is what was asked (a CPU without native bf16 trains in fp32 under the default --amp)."""
    nets.check_not_folded()
    staged = []
    try:
        for name in nets.generator_names:
            filename = NETWORK_FILES[name]
            path = Path(run_dir) / filename
            tmp = path.with_name(f".{filename}.{os.getpid()}.tmp")
            staged.append((tmp, path))
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                torch.save({"format": FORMAT, "version": VERSION, "network": name, "config": cfg.to_dict(),
                            "epoch": epoch, "val_f1": val_f1, "precision": precision,
                            "state_dict": getattr(nets, name).state_dict()}, tmp)
            except (OSError, RuntimeError) as exc:  # the earlier set stays whole
                raise write_failed(path, exc) from exc
        for k, (tmp, path) in enumerate(staged):
            try:
                os.replace(tmp, path)
            except OSError as exc:  # (a rename in one folder: rare) the files before it are already new
                raise write_failed(path, exc, kept=f"the network files in {run_dir} are now of two saves: the next "
                                                   f"save (or --resume) writes them whole again" if k else None) from exc
    finally:
        for tmp, _ in staged:
            remove_quietly(tmp)


def read(path, mmap=False):
    """A checkpoint's contents (tensors on the CPU). ``mmap=True`` maps the tensors instead of
    reading them: cheap when only the small entries (its config) are wanted."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:
        try:
            with open(path, "rb") as f:
                head = f.read(4)
        except OSError:  # unreadable (permissions): torch's own reason below says so
            head = None
        if head == b"":
            raise CheckpointError(f"{path}: empty file (an interrupted copy or download?)") from None
        if head is not None and not head.startswith((b"PK\x03\x04", b"\x80")):  # neither torch.save's zip nor a pickle
            raise CheckpointError(f"{path}: not a PyTorch checkpoint (torch.save's .pth, a bundle shard "
                                  f"or the original authors' CP_*.pth)") from None
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0].split(". ")[0]  # torch's advice cut
        raise CheckpointError(f"{path}: cannot read checkpoint ({first}); is it damaged or incomplete?") from None


def is_state_dict(obj) -> bool:
    """A non-empty dict of named tensors, as ``Module.state_dict()`` gives."""
    return isinstance(obj, dict) and bool(obj) and all(isinstance(k, str) and torch.is_tensor(v)
                                                       for k, v in obj.items())


def network_state(path, contents) -> tuple:
    """(state dict, config or None) of one network file: ours (a dict with our format tag, its
    config and state dict) or the original's plain state dict. Anything else, such as
    another model's file, is one line naming the file."""
    if isinstance(contents, dict) and contents.get("format") == FORMAT:
        state, config = contents.get("state_dict"), contents.get("config")
        if not isinstance(config, dict):
            raise CheckpointError(f"{path}: a network file of this project without its config; is it damaged?")
    else:
        state, config = contents, None
    if not is_state_dict(state):
        raise CheckpointError(f"{path}: not a network's weights (a state dict of tensors expected)")
    if all(k.startswith("module.") for k in state):  # saved from a DataParallel/DDP wrapper
        state = {k[len("module."):]: v for k, v in state.items()}
    return state, config


def infer_config(state_dicts, source="") -> dict:
    """Variant, width and fusion of plain (original) state dicts, from their tensor shapes."""
    try:
        head = state_dicts["G"]["outc.conv.weight"]
        width = state_dicts["G"]["inc.double_conv.0.weight"].shape[0]
        classes, head_in = head.shape[0], head.shape[1]
    except (KeyError, IndexError):
        raise CheckpointError(f"{source}: G's file is not a BF-Net generator (no outc.conv / inc.double_conv "
                              "weights of the right shape)") from None
    activation = {len(v.channels): name for name, v in VARIANTS.items()}.get(classes)
    if activation is None:
        raise CheckpointError(f"{source}: G's head has {classes} outputs; expected " + " or ".join(
            f"{len(v.channels)} ({name})" for name, v in VARIANTS.items()))
    # The original project always saved G, G_A and G_V together; G's head alone cannot tell
    # the softmax variant (mean fusion) from the ablation, so the branches are required.
    if set(state_dicts) != {"G", "G_A", "G_V"}:
        raise CheckpointError(f"{source}: the original project's plain state dicts come as three files (G, G_A, G_V); "
                              f"found only {', '.join(sorted(state_dicts))}")
    fusion = "concat" if head_in == width + 2 * classes else "mean"
    return {"activation": activation, "base_width": width, "fusion": fusion}


def build_networks(source, config: dict) -> Networks:
    """Empty networks of the variant, width and fusion a checkpoint's config names."""
    try:
        return Networks(config["activation"], int(config["base_width"]), config.get("fusion"))
    except (KeyError, TypeError, ValueError, ConfigError) as exc:
        raise CheckpointError(f"{source}: its config does not name a BF-Net ({describe(config)}; "
                              f"{type(exc).__name__}: {exc})") from None


def describe(cfg: dict) -> str:
    return f"{cfg.get('activation')} variant, base width {cfg.get('base_width')}, fusion {cfg.get('fusion')}"


def load_state(module, state, where, cfg: dict):
    """``module.load_state_dict(state)``; a mismatch is one CheckpointError line: ``where``, the
    configuration the weights were taken for, and the first line of torch's own message."""
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        lines = str(exc).splitlines()
        raise CheckpointError(f"{where} does not fit a {describe(cfg)} "
                              f"({lines[1].strip() if len(lines) > 1 else lines[0]})") from None


def check_expected(source, saved: dict, expected: dict = None):
    """One line naming both when the checkpoint is not what the caller asked for
    (``expected`` such as {"activation": "sigmoid", "base_width": None}; None: anything)."""
    for key, value in (expected or {}).items():
        if value is not None and saved.get(key) is not None and saved[key] != value:
            raise CheckpointError(f"{source}: checkpoint is {describe(saved)}, but {key}={value} was asked for")


def epoch_files(epoch: int) -> dict:
    return {"G": f"CP_epoch{epoch}_all.pth", "G_A": f"CP_epoch{epoch}_A.pth", "G_V": f"CP_epoch{epoch}_V.pth"}


def network_files(run_dir) -> dict:
    """File names of G, G_A, G_V in a run folder: ``CP_best_F1_*.pth``, or else the 2021
    names ``CP_epoch<N>_*.pth`` of the highest N."""
    run_dir = Path(run_dir)
    if (run_dir / NETWORK_FILES["G"]).is_file() or not run_dir.is_dir():
        return NETWORK_FILES
    epochs = sorted({int(m.group(1)) for p in run_dir.iterdir() if (m := EPOCH_FILE.match(p.name))})
    if not epochs:
        return NETWORK_FILES
    if len(epochs) > 1 and launched_as_rank_zero():  # the 2021 test.sh chose with --checkstart: say which
        listed = ", ".join(map(str, epochs)) if len(epochs) <= 8 else f"{epochs[0]} to {epochs[-1]}"
        print(f"note: {run_dir} holds the files of {len(epochs)} epochs ({listed}); loading epoch {epochs[-1]}, "
              f"the highest (for another, name one of its files: {run_dir / epoch_files(epochs[0])['G']})",
              file=sys.stderr)
    return epoch_files(epochs[-1])


def best_of(contents: dict) -> dict:
    """The epoch (counted from 1) and validation F1 (percent) a network file of ours was saved
    at, and the precision it was trained in, as "best_epoch", "best_val_f1" and
    "trained_precision" (kept in the config of bundles made from it; files of older versions
    lack the precision)."""
    if not isinstance(contents.get("epoch"), int):
        return {}
    f1 = contents.get("val_f1")
    best = {"best_epoch": contents["epoch"], "best_val_f1": round(100 * f1, 4) if isinstance(f1, (int, float)) else None}
    if isinstance(contents.get("precision"), str):
        best["trained_precision"] = contents["precision"]
    return best


def load_networks(run_dir, expected: dict = None, filenames: dict = None):
    """Networks (eval mode, CPU) and the saved config dict from a run folder.

    ``filenames``: the files of G, G_A, G_V (default ``network_files(run_dir)``).
    ``expected``: config values the caller asked for (e.g. --activation, --base-width); a
    checkpoint that disagrees gives one line naming both."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"no run folder {run_dir} (train first, or name it with --job_name/--load)")
    filenames = filenames or network_files(run_dir)
    files = {n: run_dir / f for n, f in filenames.items() if (run_dir / f).is_file()}
    if "G" not in files:
        raise CheckpointError(f"{run_dir} has no {filenames['G']}")
    for _ in range(3):  # a run still training may save a new set between the reads: read again
        contents = {n: read(p) for n, p in files.items()}
        saves = {n: (c.get("epoch"), c.get("config")) for n, c in contents.items() if isinstance(c, dict)
                 and c.get("format") == FORMAT}
        if len({repr(v) for v in saves.values()}) <= 1:
            break
    else:
        epochs = {n: epoch for n, (epoch, _) in saves.items()}
        which = ("epochs " + ", ".join(f"{filenames[n]} {e}" for n, e in epochs.items())
                 if len(set(epochs.values())) > 1 else "one epoch, but other runs' configurations")
        raise CheckpointError(f"{run_dir}: its network files are of different saves ({which}): G, G_A and G_V "
                              f"must be one epoch's of one run")
    read_files = {n: network_state(files[n], c) for n, c in contents.items()}
    states = {n: state for n, (state, _) in read_files.items()}
    configs = [config for _, config in read_files.values()]
    if all(c is not None for c in configs):
        saved = {**read_files["G"][1], **best_of(contents["G"])}
    elif any(c is not None for c in configs):
        raise CheckpointError(f"{run_dir}: mixes this project's network files with plain state dicts; "
                              "G, G_A and G_V must come from one run")
    else:
        saved = infer_config(states, run_dir)
    check_expected(run_dir, saved, expected)
    nets = build_networks(run_dir, saved)
    for name, state in states.items():
        load_state(getattr(nets, name), state, f"{files[name]}:", saved)
    if not set(nets.generator_names) <= set(states):
        raise CheckpointError(f"{run_dir}: needs {', '.join(filenames.values())}")
    return nets.eval(), saved
