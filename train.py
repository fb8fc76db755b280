r"""Train BF-Net (G, G_A, G_V adversarially against D) on one data set.

Example (the original protocol on DRIVE-AV, one seed):
    python train.py --e=1500 --batch-size=2 --learning-rate=8e-4 --v=10 --alpha=0.5 --beta=1.1 \
        --gama=0.08 --dataset=DRIVE_AV --job_name=sigmoid_seed42 --seed_num=42 --data-root ./data

--resume continues <output-root>/<Dataset>/<job_name>/last.pth with the settings saved there; only
--epochs and the run-time options (--device, --amp/--no-amp, --no-amp-discriminator, --tf32, --compile,
--no-memory-check, --log-every, --image-every, --save-every, --time-limit, --data-root, --cache-dir, --runs-dir,
--output-root) may change, and a different value of any other option is an error. last.pth is
written after the first epoch, every --save-every minutes, at the end and at a stop: --time-limit, or Ctrl-C / SIGTERM,
which end the current epoch first (a second one stops at once, losing that epoch). A run folder
that holds a run already is never overwritten: resume it, or choose another --job_name.

Exit status: 0 when the run is complete, 2 for an error in the options or the data, or a loss
that is no longer finite (one line: try other options),
3 when --time-limit stopped it early (--resume continues it), 130 for Ctrl-C, 143 for SIGTERM.
"""
import argparse
import math
import os
import random
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from scripts import distributed, last_state, metrics
from scripts.bfnet import Networks, Trainer
from scripts.bundle import load_any, weights_sha256
from scripts.checkpoint import LAST_STATE, check_expected, save_best
from scripts.cli import FRESH_LINE, TIME_LIMIT_EXIT, ArgumentParser, progress_bar, signal_name
from scripts.config import (VARIANTS, ConfigError, RunConfig, check_image_size, dataset_names, dataset_spec,
                            str2bool, tensorboard_dir)
from scripts.data import (TensorSet, augment, find_samples, greyscale_names, load_tensor_set, normalize,
                          split_train_val)
from scripts.device import (amp_dtype_for, busy_cpu_note, cpu_memory_error, cpu_memory_note, describe_precision,
                            keep_freed_memory, no_amp_reason, pick_device, set_tf32, training_memory_format)
from scripts.evaluate import usable_cores, validate
from scripts.files import LOCK_FILE, FolderLock, check_folder
from scripts.pack import check_pack_size, pack_subset
from scripts.segments import split_segments
from scripts.stopping import (EXIT_STATUS, StopRequest, Terminated, run_main, said_of, signal_of,
                             signals_handled_by)


def build_parser():
    p = ArgumentParser(prog="python train.py", description=__doc__)
    d = RunConfig()
    p.add_argument("--epochs", "--e", "-e", type=int, default=d.epochs, help="epochs (default %(default)s)")
    p.add_argument("--batch-size", "-b", type=int, default=d.batch_size, dest="batch_size",
                   help="images per step, all processes together (default %(default)s)")
    p.add_argument("--learning-rate", "-l", type=float, default=d.learning_rate, dest="learning_rate",
                   help="Adam learning rate of all four networks (default %(default)s)")
    p.add_argument("--validation", "--v", "-v", type=float, default=d.validation,
                   help="percent of the training images held out for validation, at least one image "
                        "(default %(default)s)")
    p.add_argument("--alpha", type=float, default=d.alpha, help="MSE weight (default %(default)s)")
    p.add_argument("--beta", type=float, default=d.beta, help="segmentation loss weight (default %(default)s)")
    p.add_argument("--gama", "--gamma", type=float, default=d.gamma, dest="gamma",
                   help="adversarial weight (default %(default)s)")
    p.add_argument("--dataset", default=d.dataset, help=dataset_names())
    p.add_argument("--job_name", "--job-name", default=d.job_name, dest="job_name",
                   help="run folder name: checkpoints go to <output-root>/<Dataset>/<job_name>/ "
                        "(default %(default)s)")
    p.add_argument("--seed_num", "--seed", type=int, default=d.seed, dest="seed",
                   help="seeds the weights, the validation split and the augmentation (default %(default)s)")
    p.add_argument("--uniform", type=str2bool, default=False, help="True: 720 x 720 input for every data set")
    p.add_argument("--discriminator", default="unet", choices=["unet"],
                   help="accepted for the original's command line: D is always its U-Net discriminator")
    p.add_argument("--load", default=None,
                   help="initialise G, G_A, G_V from a run folder, a bundle or the original CP_*.pth folder "
                        "(variant, width and fusion: the weights' own, unless named)")
    p.add_argument("--resume", action="store_true", help="continue <output-root>/<Dataset>/<job_name>/last.pth")
    p.add_argument("--data-root", default=d.data_root, dest="data_root",
                   help="folder holding <Dataset>/{training,test} (default %(default)s; a pack of scripts/pack.py too)")
    p.add_argument("--image-size", type=int, nargs=2, metavar=("W", "H"), default=None, dest="image_size",
                   help="network input size, multiples of 16 (default: the data set's)")
    p.add_argument("--base-width", type=int, default=d.base_width, dest="base_width",
                   help="U-Net base width (default %(default)s, as published; 8 or 16 for small machines)")
    p.add_argument("--activation", choices=list(VARIANTS), default=d.activation,
                   help="the variant: sigmoid (the paper's; 3 channels) or softmax (4 classes) (default %(default)s)")
    p.add_argument("--fusion", choices=["none"], default=None,
                   help="'none': ablation, main generator alone without the binary branches "
                        "(default: the variant's fusion, concat for sigmoid, mean for softmax)")
    p.add_argument("--rotation-step", type=int, default=d.rotation_step, dest="rotation_step",
                   help="rotation augmentation in multiples of this many degrees (3 paper, 90 later code; "
                        "default %(default)s)")
    p.add_argument("--device", default="", help="cuda, cuda:1, cpu (default: cuda when present)")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True,
                   help="mixed precision where it pays: CUDA, CPUs with AVX512-BF16/AMX where bf16 is measured "
                        "faster than fp32 (default; --no-amp: fp32)")
    p.add_argument("--amp-discriminator", action=argparse.BooleanOptionalAction, default=True,
                   dest="amp_discriminator",
                   help="with --amp, run D in mixed precision too (default); --no-amp-discriminator keeps D "
                        "in fp32 and the generators mixed (an experiment: README, Performance)")
    p.add_argument("--tf32", action=argparse.BooleanOptionalAction, default=False,
                   help="on CUDA, let fp32 convolutions and matrix products use TF32 (faster on Ampere and "
                        "later GPUs; off by default, true fp32 as on the paper's T4)")
    p.add_argument("--compile", action="store_true", help="torch.compile the networks (worth it for long GPU runs)")
    p.add_argument("--memory-check", action=argparse.BooleanOptionalAction, default=True, dest="memory_check",
                   help="on a CPU, refuse a run whose training step is estimated to need more than the machine's "
                        "memory (default); --no-memory-check tries all the same (a large swap, say)")
    p.add_argument("--log-every", type=int, default=d.log_every, dest="log_every",
                   help="training steps between loss logs, also logged at the end of each epoch (default %(default)s)")
    p.add_argument("--image-every", type=int, default=d.image_every, dest="image_every",
                   help="epochs between pictures of the mixed segments in TensorBoard, also logged at the first, "
                        "last and a --time-limit stop's epoch (0: none; default %(default)s)")
    p.add_argument("--save-every", type=float, default=d.save_every, dest="save_every", metavar="MINUTES",
                   help="minutes between saves of last.pth, the state --resume continues (always after the first "
                        "epoch, at the end and at a --time-limit, Ctrl-C or SIGTERM stop; 0: every epoch; default "
                        "%(default)s)")
    p.add_argument("--time-limit", type=float, default=d.time_limit, dest="time_limit", metavar="MINUTES",
                   help="stop (checkpoints saved, exit status 3) before an epoch that would end more than "
                        "this many minutes after the start (at least one epoch runs: 0 stops after the first); "
                        "--resume continues. A budget of this invocation alone: --resume does not carry it over "
                        "(default: no limit)")
    p.add_argument("--cache-dir", default=d.cache_dir, dest="cache_dir",
                   help="decoded, resized photographs are kept here (default %(default)s)")
    p.add_argument("--runs-dir", default="./runs", help="TensorBoard log folder (default %(default)s)")
    p.add_argument("--output-root", default=".", help="checkpoints go to <output-root>/<Dataset>/<job_name>")
    return p


def config_from_args(args) -> RunConfig:
    names = set(RunConfig.__dataclass_fields__)
    cfg = RunConfig(**{k: v for k, v in vars(args).items() if k in names})
    cfg.dataset = dataset_spec(cfg.dataset).name
    for option, value in (("--epochs", cfg.epochs), ("--batch-size", cfg.batch_size), ("--log-every", cfg.log_every)):
        if value < 1:
            raise ConfigError(f"{option} {value}: must be at least 1")
    if cfg.image_every < 0:
        raise ConfigError(f"--image-every {cfg.image_every}: must be 0 (no pictures) or more epochs")
    for option, value in (("--save-every", cfg.save_every), ("--time-limit", cfg.time_limit)):
        if value is not None and not 0 <= value < math.inf:
            raise ConfigError(f"{option} {value:g}: must be a finite number of minutes, 0 or more")
    if not 0 < cfg.validation < 100:
        raise ConfigError(f"--validation (--v) {cfg.validation:g}: must be a percent of the training images "
                          f"above 0 and below 100 (at least one image is held out; the paper's is 10)")
    if cfg.base_width < 2 or cfg.base_width % 2:
        raise ConfigError(f"--base-width {cfg.base_width}: must be an even number of at least 2 "
                          f"(the decoder halves it; the paper's is 32)")
    if not 1 <= cfg.rotation_step <= 360:
        raise ConfigError(f"--rotation-step {cfg.rotation_step}: must be 1..360 degrees (3: the paper's, 90: "
                          f"the later version's)")
    if not 0 < cfg.learning_rate < math.inf:
        raise ConfigError(f"--learning-rate {cfg.learning_rate:g}: must be a finite number above 0")
    for option, value in (("--alpha", cfg.alpha), ("--beta", cfg.beta), ("--gama (--gamma)", cfg.gamma)):
        if not 0 <= value < math.inf:
            raise ConfigError(f"{option} {value:g}: a loss weight must be a finite number, 0 or more (0 leaves "
                              f"its term out)")
    if cfg.job_name in ("", ".", "..") or Path(cfg.job_name).name != cfg.job_name:
        raise ConfigError(f"--job_name {cfg.job_name!r}: must be a plain folder name (no '/'), the run "
                          f"goes to <output-root>/<Dataset>/<job_name>")
    try:
        cfg.job_name.encode("utf-8")
    except UnicodeEncodeError:  # TensorBoard cannot write its events under such a name
        raise ConfigError(f"--job_name {cfg.job_name!r}: not valid UTF-8 text; name the run in UTF-8") from None
    if cfg.image_size:
        check_image_size(cfg.image_size)
    if cfg.uniform and cfg.image_size and distributed.launched_as_rank_zero():
        print(f"note: --image-size {cfg.image_size[0]} {cfg.image_size[1]} overrides --uniform True", file=sys.stderr)
    return cfg


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def cuda_settings(cfg: RunConfig):
    """cuDNN autotune (fixed input sizes), and TF32 only when --tf32 asks: without --amp the
    convolutions then run in true fp32, as on the paper's T4 (cuDNN's own default is TF32)."""
    torch.backends.cudnn.benchmark = True
    set_tf32(cfg.tf32)


@dataclass
class Standing:
    """Where a run stands after its last epoch: what last.pth keeps and --resume restores."""
    epoch: int = 0                     # epochs done
    step: int = 0                      # training steps done
    best_f1: float = -1.0              # the best validation F1 so far (-1: none yet)
    best_epoch: Optional[int] = None   # the epoch whose networks are kept as the best


@dataclass
class Session:
    """What one invocation of train() works with, set up before the first step (``start_session``)."""
    cfg: RunConfig
    ctx: distributed.Context
    device: torch.device
    run_dir: Path
    train_set: TensorSet               # on ``device``
    val_set: TensorSet                 # on the CPU, where validation scores it
    split_names: dict                  # {"training": names, "validation": names}: what --resume must find
    memory_format: torch.memory_format
    amp_dtype: Optional[torch.dtype]   # None: fp32
    precision: str                     # describe_precision's words
    why_fp32: str                      # why --amp was not taken here ("" when it was, or not asked)
    nets: Networks
    trainer: Trainer
    rng: torch.Generator               # the order and augmentation of the batches

    def log(self, *args, **kwargs):    # rank 0 alone speaks
        if self.ctx.is_main:
            print(*args, **kwargs)


def train(cfg: RunConfig, runs_dir="./runs", output_root=".", load=None, resume=False, stop_request=None,
          adopt=()):
    """Train one run. Returns (best validation F1, whether every epoch is done).
    ``load``: weights to start G, G_A, G_V from; ``adopt``: the fields of activation,
    base_width, fusion that are taken from those weights (the command line named none), the
    others must match them. ``stop_request``: a StopRequest whose signal handlers main()
    installed (None: none)."""
    run_dir, log_dir = cfg.run_dir(output_root), tensorboard_dir(runs_dir, cfg.spec.name, cfg.job_name)
    for folder, option in ((run_dir, "--output-root"), (runs_dir, "--runs-dir"), (cfg.cache_dir, "--cache-dir")):
        check_folder(folder, option)  # before any data is decoded or epoch trained
    with ExitStack() as held:  # the run's folders, held while it trains (hold_run_folders)
        return train_in(run_dir, log_dir, cfg, load, resume, stop_request, adopt, held)


def train_in(run_dir: Path, log_dir: Path, cfg: RunConfig, load, resume, stop_request, adopt, held: ExitStack):
    """train()'s work, in its run folder ``run_dir``, with TensorBoard's in ``log_dir``."""
    stop_request = stop_request or StopRequest()
    run_started = time.time()  # --time-limit counts from here, data decoding included
    session = start_session(cfg, run_dir, log_dir, load, resume, adopt, held)
    standing = resume_session(session) if resume else Standing()
    if standing.epoch >= cfg.epochs:  # nothing written: no TensorBoard file, no last.pth of other --epochs
        session.log(f"{standing.epoch} epochs are done already, --epochs is {cfg.epochs}: nothing to train, the "
                    f"run is left as it was; --epochs N (train.sh: EPOCHS=N) of more than {standing.epoch} trains "
                    f"longer")
        session.ctx.close()
        return standing.best_f1, True
    per_epoch = batches_per_epoch(session)
    is_main, val_set = session.ctx.is_main, session.val_set

    # The validation labels never change: split their vessel trees into segments once.
    val_splits = [split_segments(val_set.labels[i].numpy(), val_set.fovs[i].numpy()) for i in range(len(val_set))]
    writer = open_tensorboard(log_dir, run_dir, cfg, resume, standing.step, session.log) if is_main else None
    if writer:  # val/mixed_segments draws the first of them
        writer.add_text("validation_images", ", ".join(val_set.names), standing.step)
    # Into a log file (PARALLEL=1, nohup) the bar writes a line a minute, not every step.
    bar = progress_bar(total=cfg.epochs * per_epoch, initial=standing.epoch * per_epoch, unit="step",
                       disable=not is_main)
    first_epoch, complete, last_save = standing.epoch, True, time.time()
    shown = {}  # the last G loss read, on the progress bar
    stop_request.graceful = True  # from here a first Ctrl-C / SIGTERM ends the epoch and saves
    try:
        for epoch in range(first_epoch, cfg.epochs):
            started = time.time()
            losses = train_epoch(session, standing, writer, bar, epoch, shown)
            session.trainer.plateau_step(losses)
            if is_main:  # In fp32 whatever the training precision: the validation F1 picks the checkpoint.
                summary, drawing = validate(session.nets, val_set, cfg.batch_size, session.device, splits=val_splits)
            standing.epoch = epoch + 1
            final = standing.epoch == cfg.epochs
            asked = stop_request.signum is not None
            # One more epoch as long as this one, its validation counted, would pass --time-limit?
            stop = should_stop(cfg.time_limit, run_started, time.time() - started, asked, session.device)
            if is_main:  # log, keep the best networks, save last.pth
                show_image = cfg.image_every and (epoch == first_epoch or standing.epoch % cfg.image_every == 0
                                                  or final or stop)
                log_validation(writer, summary, drawing if show_image else None, session.trainer, standing.step,
                               standing.epoch, time.time() - started)
                keep_if_best(session, standing, summary["average"]["f1"])
                # last.pth (all four networks and Adam's moments: 400 MB at width 32) at most every
                # --save-every minutes, not after every short epoch; and after a new run's first
                # epoch, so that its folder is resumable from then on.
                if final or stop or epoch == 0 or time.time() - last_save >= 60 * cfg.save_every:
                    save_last_state(session, standing)
                    last_save = time.time()
                bar.write(f"epoch {standing.epoch}/{cfg.epochs}: val F1 {100 * summary['average']['f1']:.2f} % "
                          f"(best {100 * standing.best_f1:.2f}), G loss {losses['G']:.4f}, "
                          f"{time.time() - started:.1f}s")
            if stop and not final:
                why = (signal_name(stop_request.signum) if asked else
                       f"--time-limit {cfg.time_limit:g} min (another epoch would not end in time)")
                if is_main:  # on a line of its own, not after the progress bar's
                    bar.write(f"{why}: stopped after epoch {standing.epoch}/{cfg.epochs}; --resume continues from "
                              f"{run_dir / LAST_STATE}")
                complete = False
                break
    finally:  # also on an error or a second Ctrl-C: the scalars written so far reach the disk
        stop_request.graceful = False
        bar.close()
        if writer:
            writer.close()
    best = f" (epoch {standing.best_epoch})" if standing.best_epoch else ""
    unfinished = "" if complete else f" (stopped after epoch {standing.epoch} of {cfg.epochs}: --resume continues)"
    session.log(f"best validation F1 {100 * standing.best_f1:.2f} %{best}; checkpoints in {run_dir}"
                f"{unfinished}")
    session.ctx.close()
    return standing.best_f1, complete


def start_session(cfg: RunConfig, run_dir: Path, log_dir: Path, load, resume, adopt, held: ExitStack) -> Session:
    """Everything before the first step, cheapest checks first: the device, the run's folders held,
    --load's weights, the memory a CPU step needs, then the data decoded and the networks built
    (and initialised from --load); says what the run is (rank 0)."""
    size = cfg.input_size  # a DATASETS row of a size the networks cannot take fails here, before any file is read
    device = pick_device(cfg.device)
    keep_freed_memory()
    ctx = distributed.init(device.type)
    if ctx.enabled and device.type == "cuda":  # one GPU per process
        device = torch.device("cuda", ctx.local_rank)
    seed_everything(cfg.seed)
    if device.type == "cuda":
        cuda_settings(cfg)
    hold_run_folders(held, ctx, run_dir, log_dir, resume)
    if not resume:
        last_state.check_nothing_to_overwrite(run_dir)
    initial = read_initial_weights(load, cfg, adopt, size, ctx.is_main) if load else None  # a wrong file fails now

    # Rank 0's choice on every rank: a CPU's bf16 is timed (cpu_bf16_speedup), once, not by every rank at once.
    amp_dtype = ctx.broadcast(amp_dtype_for(device, cfg.amp) if ctx.is_main else None)
    split = training_split(cfg)
    # Rank 0's verdict on every rank, so that all stop together (nodes may differ in memory).
    too_large = ctx.broadcast(cpu_memory_error(*cpu_step(cfg, ctx, len(split.train), amp_dtype))
                              if ctx.is_main and cfg.memory_check and device.type == "cpu" else None)
    if too_large:  # before any data is decoded (the kernel would kill the run at its first step)
        raise ConfigError(too_large)
    train_set, val_set = load_training_data(cfg, device, split)
    memory_format = training_memory_format(device, amp_dtype)
    nets, trainer = build_networks(cfg, ctx, device, memory_format, amp_dtype)
    session = Session(
        cfg, ctx, device, run_dir, train_set, val_set,
        split_names={"training": list(train_set.names), "validation": list(val_set.names)},
        memory_format=memory_format, amp_dtype=amp_dtype,
        precision=describe_precision(amp_dtype, cfg.amp_discriminator, cfg.tf32 and device.type == "cuda"),
        why_fp32=no_amp_reason(device) if ctx.is_main and cfg.amp and amp_dtype is None else "",  # rank 0 timed bf16
        nets=nets, trainer=trainer, rng=torch.Generator().manual_seed(cfg.seed))
    if ctx.is_main:
        log_run_start(session, split.subset)
    if initial is not None:
        nets.load_state_dict({**nets.state_dict(), **{k: v for k, v in initial.state_dict().items()
                                                      if not k.startswith("D.")}})
        session.log(f"initialised generators from {load}")
    return session


def hold_run_folders(held: ExitStack, ctx, run_dir: Path, log_dir: Path, resume: bool):
    """One train.py at a time in a run folder (two would mix their checkpoints), its lock file
    beside it (the folder appears with the first checkpoint: train.sh and test.sh take a folder
    for a seed started); and in its TensorBoard folder, where a new run sets an earlier run's
    curves aside (on --resume: checked to be this run's). Rank 0 holds them for all; a refusal
    is every rank's, so none waits for it."""
    refusal = None
    if ctx.is_main:
        try:
            held.enter_context(FolderLock(run_dir, "--output-root / --job_name",
                                          lock_file=run_dir.parent / f".{run_dir.name}{LOCK_FILE}"))
            held.enter_context(FolderLock(log_dir, "--runs-dir / --job_name"))
            if resume:
                check_curves_are_this_runs(log_dir, run_dir)
        except ConfigError as exc:
            refusal = str(exc)
    refusal = ctx.broadcast(refusal)
    if refusal:
        raise ConfigError(refusal)


def resume_session(session: Session) -> Standing:
    """last.pth restored into the session's networks, optimisers and generators; where it stood."""
    epoch, best_f1, best_epoch, step, trained_in = last_state.restore(
        session.run_dir, session.cfg, session.nets, session.trainer, session.rng, session.split_names)
    session.log(f"resumed {session.run_dir} after epoch {epoch} (best validation F1 {100 * best_f1:.2f} %"
                f"{f' at epoch {best_epoch}' if best_epoch else ''})")
    # Another precision is allowed (a run-time option), but never unsaid.
    if epoch < session.cfg.epochs and trained_in and trained_in != session.precision:
        why = (f"--amp is given but {session.why_fp32}" if session.why_fp32 else
               "--amp / --no-amp, AMP=1 for train.sh, --no-amp-discriminator and --tf32 choose")
        session.log(f"note: this run's last session trained in {trained_in} (up to epoch {epoch}); it goes on "
                    f"in {session.precision} ({why})")
    return Standing(epoch, step, best_f1, best_epoch)


def batches_per_epoch(session: Session) -> int:
    """Batches of an epoch (a distributed run drops a last batch smaller than the number of
    processes); an error where there would be none."""
    n, bs, world = len(session.train_set), session.cfg.batch_size, session.ctx.world
    count = sum(1 for b in range(0, n, bs) if min(bs, n - b) >= world)
    if bs > n:
        session.log(f"note: --batch-size {bs} is more than the {n} training images: one batch of {n} per epoch")
    if count == 0:
        raise ConfigError(f"{n} training images and --batch-size {bs} give no batch of at least one "
                          f"image for each of the {world} processes")
    return count


def train_epoch(session: Session, standing: Standing, writer, bar, epoch, shown: dict) -> dict:
    """One epoch of training steps; returns its last batch's losses as floats (checked finite),
    which the plateau schedulers step on. The losses are read (a host sync) every --log-every
    steps and at the epoch's end, never at every step. ``shown``: the last G loss read, shown
    beside the epoch on the progress bar (kept from one epoch to the next)."""
    cfg, ctx, run_dir = session.cfg, session.ctx, session.run_dir
    session.nets.train()
    bar.set_postfix(epoch=epoch + 1, **shown, refresh=False)
    for images, labels, weight in training_batches(session.train_set, cfg, ctx, session.rng, session.memory_format):
        losses = session.trainer.step(images, labels, weight)
        standing.step += 1
        bar.update()
        if standing.step % cfg.log_every == 0:
            shown["G"] = f"{report_losses(losses, weight, ctx, writer, standing.step, epoch, run_dir)['G']:.3f}"
            bar.set_postfix(epoch=epoch + 1, **shown, refresh=False)
    # The epoch's last losses too (a short run gets its curves), logged unless they just were.
    values = report_losses(losses, weight, ctx, writer if standing.step % cfg.log_every else None, standing.step,
                           epoch, run_dir)
    shown["G"] = f"{values['G']:.3f}"
    bar.set_postfix(epoch=epoch + 1, **shown, refresh=False)
    return values


def save_last_state(session: Session, standing: Standing):
    """last.pth: all that --resume needs to go on after the epoch just done."""
    last_state.save(session.run_dir, session.cfg, standing.epoch - 1, standing.step, standing.best_f1, session.nets,
                    session.trainer, session.rng, session.precision, session.split_names)


def keep_if_best(session: Session, standing: Standing, f1: float):
    """Save the networks as the run's best (CP_best_F1_*.pth) where this epoch's validation F1
    beats the best so far."""
    if f1 > standing.best_f1:
        standing.best_f1, standing.best_epoch = f1, standing.epoch
        save_best(session.run_dir, session.nets, session.cfg, standing.best_epoch, f1, session.precision)


def log_run_start(session: Session, subset):
    """What rank 0 says before the first step: the run in one line, its validation images, and
    the notes on this machine and these options (``subset``: what a pack holds, or None)."""
    cfg, train_set, val_set, size = session.cfg, session.train_set, session.val_set, session.cfg.input_size
    print(f"{cfg.spec.name}: {len(train_set)} training / {len(val_set)} validation images at "
          f"{size[0]} x {size[1]}; {cfg.activation} variant, fusion {cfg.fusion_mode}, width "
          f"{cfg.base_width}, device {session.device}, {session.precision}, "
          f"{'channels_last' if session.memory_format == torch.channels_last else 'contiguous'} memory"
          + (f", {session.ctx.world} processes" if session.ctx.enabled else ""), flush=True)
    print(f"validation images (--validation, drawn with the seed): {', '.join(val_set.names)}", flush=True)
    notes = []
    if session.device.type == "cpu":
        notes.append(busy_cpu_note(torch.get_num_threads(), usable_cores()))
        notes.append(cpu_memory_note(*cpu_step(cfg, session.ctx, len(train_set), session.amp_dtype)))
    if session.why_fp32:  # --amp is the default: say why it is fp32 here
        notes.append(f"mixed precision (--amp, the default): {session.why_fp32}, so this run trains in fp32")
    if subset:
        notes.append(f"this pack holds only {subset}, not the whole data set")
    grey = [*greyscale_names(train_set.names, train_set.images), *greyscale_names(val_set.names, val_set.images)]
    total = len(train_set) + len(val_set)
    if 0 < len(grey) < total:  # (a data set of greyscale photographs alone is the user's choice)
        notes.append(f"{len(grey)} of the {total} photographs are greyscale, the others colour (e.g. {grey[0]}): "
                     f"the networks tell artery from vein mostly by colour, so a mix of the two is a harder lesson")
    if cfg.compile and session.device.type == "cpu":
        notes.append("--compile on a CPU builds C++ kernels for minutes before the first step (the compiler may "
                     "print warnings): it pays only over a long run")
    for note in filter(None, notes):
        print(f"note: {note}", flush=True)


def cpu_step(cfg: RunConfig, ctx, n_train: int, amp_dtype) -> tuple:
    """What a CPU step's memory depends on, as cpu_memory_note and cpu_memory_error take it: the
    input size, the width, each process's share of a batch, bf16 or not, the processes of a node."""
    per_process = math.ceil(min(cfg.batch_size, n_train) / ctx.world)
    return (cfg.input_size, cfg.base_width, per_process, amp_dtype is not None,
            int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


@dataclass
class TrainingSplit:
    samples: list            # the data set's training split (scripts.data.Sample)
    train: list              # indices of the images trained on
    val: list                # indices of the validation images, drawn with the seed
    subset: Optional[str]    # which part of the data set a pack holds (None: all of it)


def training_split(cfg: RunConfig) -> TrainingSplit:
    """The training split's files, found and checked, and its division by the seed; nothing decoded."""
    samples = find_samples(cfg.data_root, cfg.spec, "training")
    subset = pack_subset(check_pack_size(cfg.data_root, cfg.spec, cfg.input_size))
    return TrainingSplit(samples, *split_train_val(len(samples), cfg.validation, cfg.seed), subset)


def load_training_data(cfg: RunConfig, device, split: TrainingSplit):
    """The training set (on ``device``) and the validation set (on the CPU, where validation
    scores it) at the network size, decoded once and cached."""
    data = load_tensor_set(split.samples, cfg.input_size, Path(cfg.cache_dir) / cfg.spec.name, desc="decode + cache")
    return data.subset(split.train).to(device), data.subset(split.val)


def read_initial_weights(load, cfg: RunConfig, adopt, size, say_notes=True):
    """--load: the networks to start G, G_A, G_V from. The fields named in ``adopt`` (of
    activation, base_width, fusion) are taken from them into ``cfg``; the others must match.
    The input size is this run's (``size``): a note says where the weights learned at another."""
    initial, saved = load_any(load)
    for key in adopt:
        if saved.get(key) is not None:
            setattr(cfg, key, saved[key])
    check_expected(load, saved, {"activation": cfg.activation, "base_width": cfg.base_width,
                                 "fusion": cfg.fusion_mode})
    # Kept with the run (its checkpoints, last.pth, bundles, TensorBoard's config, test.py's summary):
    # a fine-tuned run says what it was fine-tuned from, and the weights' fingerprint (predict.py's).
    trained = ", ".join(part for part in (f"trained on {saved['dataset']}" if saved.get("dataset") else "",
                                          f"epoch {saved['best_epoch']}" if saved.get("best_epoch") else "") if part)
    cfg.initialised_from = (f"{Path(load).absolute()} ({trained + ', ' if trained else ''}weights sha256 "
                            f"{weights_sha256(initial)})")
    trained_at = saved.get("image_size")
    if say_notes and trained_at and tuple(trained_at) != tuple(size):
        print(f"note: --load {load} was trained at {trained_at[0]} x {trained_at[1]}; this run trains at "
              f"{size[0]} x {size[1]} (the data set's, or --image-size / --uniform)", file=sys.stderr)
    return initial


def build_networks(cfg: RunConfig, ctx, device, memory_format, amp_dtype):
    """The four networks on the device, and their Trainer (optimisers, schedulers, the step)."""
    nets = Networks(cfg.activation, cfg.base_width, cfg.fusion)
    if ctx.enabled:
        distributed.sync_batchnorm(nets, device.type)
    nets = nets.to(device, memory_format=memory_format)
    if cfg.compile:  # in place: parameter names (and so checkpoints) stay the same
        for module in (nets.G, nets.G_A, nets.G_V, nets.D):
            module.compile()
    trainer = Trainer(nets, cfg, amp_dtype, fused=device.type == "cuda", ddp=ctx.enabled,
                      device_ids=[device.index] if device.type == "cuda" and ctx.enabled else None)
    return nets, trainer


def training_batches(train_set, cfg: RunConfig, ctx, rng, memory_format):
    """One epoch's batches, in a new random order: (images, labels, weight), augmented and
    normalised on the training set's device. Under torchrun every rank augments the whole
    batch alike (same ``rng``) and keeps its slice; ``weight`` is that slice's share times the
    number of processes, so that the summed gradients are the whole batch's mean."""
    device = train_set.images.device
    for idx in torch.randperm(len(train_set), generator=rng).split(cfg.batch_size):
        if len(idx) < ctx.world:  # a last batch smaller than the number of processes is dropped
            continue
        idx = idx.to(device, non_blocking=True)  # a blocking copy would wait for the GPU's queue
        images = train_set.images[idx].float() / 255
        # No turned mask is needed here: normalize() finds the fundus (non-black) itself.
        images, labels, _ = augment(images, train_set.labels[idx].long(), None, rng, cfg.rotation_step)
        weight = 1.0
        if ctx.enabled:
            mine = torch.arange(len(idx), device=device).tensor_split(ctx.world)[ctx.rank]
            weight = ctx.world * len(mine) / len(idx)
            images, labels = images[mine], labels[mine]
        yield normalize(images).contiguous(memory_format=memory_format), labels, weight


def report_losses(losses, weight, ctx, writer, step, epoch, run_dir):
    """The last batch's losses as floats (a host sync), checked finite, and logged to TensorBoard
    when ``writer`` is given."""
    values = batch_losses(losses, weight, ctx)
    check_finite(values, epoch, run_dir)
    if writer:
        log_losses(writer, values, step)
    return values


def open_tensorboard(log_dir: Path, run_dir: Path, cfg: RunConfig, resume: bool, step: int, log):
    """The run's SummaryWriter. A new run under a name used before sets the earlier run's events
    apart (its curves would otherwise be drawn on top of this one's) and writes whose they are
    (CURVES_OF: ``run_dir``); on resume, events after the saved step (a stopped epoch's) are
    dropped, those of the saved step stay."""
    from torch.utils.tensorboard import SummaryWriter  # imported late: it is slow to import
    if not resume:
        kept = set_aside_old_events(log_dir)
        if kept:
            log(f"note: {log_dir} held the TensorBoard logs of an earlier run under this name: moved to {kept}")
        log_dir.mkdir(parents=True, exist_ok=True)
        (log_dir / CURVES_OF).write_text(os.path.realpath(run_dir) + "\n")
    writer = SummaryWriter(log_dir=str(log_dir), purge_step=step + 1 if step else None)
    writer.add_text("config", str(cfg.to_dict()), step)
    return writer


def log_losses(writer, values, step):
    for k, v in values.items():
        writer.add_scalar(f"loss/{k}", v, step)


def log_validation(writer, summary, drawing, trainer, step, epoch, epoch_seconds):
    """An epoch's validation metrics, learning rates and time, at the training step it ended on
    (TensorBoard's axis), and the epoch's number (``time/epoch``: step to epoch in TensorBoard);
    ``drawing`` (the mixed segments picture) when not None."""
    for k, v in metrics.flatten({g: summary[g] for g in ("average", "extra", "segments")}).items():
        writer.add_scalar(f"val/{k}", v, step)
    for name in ("G", "D"):
        writer.add_scalar(f"lr/{name}", trainer.optimizers[name].param_groups[0]["lr"], step)
    writer.add_scalar("time/epoch_seconds", epoch_seconds, step)
    writer.add_scalar("time/epoch", epoch, step)
    if drawing is not None:
        writer.add_image("val/mixed_segments", drawing, step, dataformats="HWC")


CURVES_OF = "run_folder.txt"  # in a TensorBoard folder: the run folder its curves are of


def check_curves_are_this_runs(log_dir: Path, run_dir: Path):
    """--resume: one line where the run's TensorBoard folder now holds another run's curves (a
    later run of this --job_name from another --output-root set this one's aside): going on
    there would draw the two runs as one."""
    try:
        owner = (log_dir / CURVES_OF).read_text().strip()
        # Another run that is there (this one seen by another path is not; one moved since is no
        # longer there). A run whose folder is gone while its curves stay is not told apart.
        other = (Path(owner) / LAST_STATE).is_file() and not os.path.samefile(owner, run_dir)
    except (OSError, ValueError):  # none yet (a version before the file), or this run not there: resume says
        return
    if other:
        raise ConfigError(f"--resume: {log_dir} now holds the TensorBoard curves of {owner}, a later run of this "
                          f"name (this run's earlier curves are in {log_dir}/earlier_*): give this run another "
                          f"--runs-dir")


def set_aside_old_events(log_dir: Path):
    """Move the TensorBoard event files in ``log_dir`` (an earlier run's under the same name, its
    checkpoints since deleted) into a sub-folder ``earlier_<time>``, where TensorBoard shows them
    as a run of their own; returns that folder, or None when there were none. Nothing is deleted."""
    events = sorted(log_dir.glob("events.out.tfevents.*"))
    if not events:
        return None
    events += [log_dir / CURVES_OF] if (log_dir / CURVES_OF).is_file() else []  # whose they were goes with them
    name = time.strftime("earlier_%Y%m%d-%H%M%S", time.localtime(max(e.stat().st_mtime for e in events)))
    kept, k = log_dir / name, 1
    while kept.exists():  # two earlier runs whose last events share a second
        k += 1
        kept = log_dir / f"{name}_{k}"
    kept.mkdir()
    for event in events:
        event.rename(kept / event.name)
    return kept


def should_stop(limit_minutes, run_started, epoch_seconds, asked, device):
    """True (on every rank alike) when a stop was asked for (Ctrl-C, SIGTERM) on any rank, or
    when --time-limit is set and one more epoch as long as the last would end after it."""
    over = limit_minutes is not None and time.time() - run_started + epoch_seconds > 60 * limit_minutes
    return distributed.all_reduce_sum(torch.tensor([float(over or asked)], device=device)).item() > 0


def batch_losses(losses, weight, ctx):
    """The last batch's losses as floats; across ranks, the batch-weighted mean."""
    names = sorted(losses)
    stacked = torch.stack([losses[k].float() for k in names]) * (weight / ctx.world)
    values = distributed.all_reduce_sum(stacked).tolist()
    return dict(zip(names, values, strict=True))


class NonFiniteLoss(ConfigError):
    """A NaN or infinite loss: one line and exit status 2, like an error in the options (a lower
    --learning-rate, or --no-amp, is what to change)."""


def check_finite(values, epoch, run_dir):
    bad = {k: v for k, v in values.items() if not math.isfinite(v)}
    if bad:
        saved = (f"the last good checkpoints in {run_dir} are kept" if any(Path(run_dir).glob("*.pth"))
                 else "no checkpoint had been saved yet")
        raise NonFiniteLoss(f"non-finite loss {bad} in epoch {epoch + 1}; stopped, {saved} (try a lower "
                            f"--learning-rate or --no-amp)")


def given_options(argv):
    """Names of the options written on the command line (not left at their defaults)."""
    parser = build_parser()
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv)))


def main(argv=None):
    args = build_parser().parse_args(argv)
    cfg = None
    # Ctrl-C and SIGTERM (kill, a scheduler's stop) end the current epoch, save, and exit 130 /
    # 143; a second one, or one before the epochs, stops at once in one line.
    stop_request = StopRequest("at the end of this epoch, with last.pth saved")
    with signals_handled_by(stop_request):
        try:
            cfg = config_from_args(args)
            given = given_options(argv)
            if args.load and args.resume:
                raise ConfigError("--load starts a new run from other weights, --resume continues this one: give one")
            if args.resume:
                cfg = last_state.resume_config(cfg, given, args.output_root)
            adopt = {"activation", "base_width", "fusion"} - given  # --load: the weights' own, unless named
            _, complete = train(cfg, args.runs_dir, args.output_root, args.load, args.resume, stop_request, adopt)
        except ConfigError as exc:
            if distributed.launched_as_rank_zero():  # under torchrun every process meets it: one line
                print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
        except (KeyboardInterrupt, Terminated) as exc:
            how = said_of(exc)
            if distributed.launched_as_rank_zero():
                print(FRESH_LINE + last_state.stopped_message(how, cfg, args.output_root), file=sys.stderr)
            sys.exit(EXIT_STATUS[signal_of(exc)])
    if not complete:
        sys.exit(TIME_LIMIT_EXIT if stop_request.signum is None else EXIT_STATUS[stop_request.signum])


if __name__ == "__main__":
    run_main(main)
