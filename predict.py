"""Segment your own fundus photographs into arteries, veins and uncertain vessels.

Inputs (--input, one or more): a folder (searched recursively for .jpg .jpeg .png .tif .tiff
.bmp), a glob ("photos/**/*.jpg", quoted; its extension matches in any case, .JPG too), a list
file (.txt/.lst/.list: one path per line, relative paths from the list's folder, '#'
comments; output names under their common folder), or single image files. A file named
<stem>_mask.* beside a photograph <stem>.* is its FOV mask (--masks), not a photograph; files named
like the outputs in a folder holding predict.py's predictions.csv or predict_run.json are earlier
outputs, skipped. RGB, RGBA, palette,
greyscale and 16-bit images are read, as
image viewers show them (an EXIF orientation tag applied; the outputs are made that way up).
A file that cannot be read (missing, empty, truncated, not an image) is recorded in the CSV
and on stderr and the run goes on; the exit status is then 1. When no image is found at all (no input path exists, or none holds an
image), one error line and exit 2, before any network loads.

Weights (--weights, one or more): run folders (ours, or the original authors'
CP_best_F1_*.pth / CP_epoch<N>_*.pth), bundle files or index JSONs of `python -m
scripts.bundle export`. Several weights form an ensemble: the probabilities are averaged and
an uncertainty map (per-pixel standard deviation over the members) is written too. Without
--weights, the project's shipped DRIVE_AV bundle in pretrained/ (when there is one).

Per image, under --output, at the image's own size (the sub-folders of the input are kept):
  <stem>_classes.png      index PNG: 0 background, 1 artery, 2 vein, 3 uncertain (with a palette)
  <stem>_colour.png       artery red, vein blue, uncertain green (test.py's raw_pre picture:
                          sigmoid: channel probabilities x 255; softmax: the likeliest class)
  <stem>_overlay.png      the class colours blended onto the photograph where a vessel is predicted
                          (not with --no-overlay)
  <stem>_uncertainty.png  ensembles only: grey = 510 x std over members, the largest over the
                          channels (255: members disagree fully)
  <stem>_probs.npz        --save-probs: "probs" (float16, C x H x W), "channels", "fov"
and one predictions.csv: path, output (the <stem> above), status, reason, width, height,
artery/vein/uncertain fractions and vessel_density (of the FOV pixels), av_ratio (artery / vein
pixels), fov_source, notes (why its maps may be poor: greyscale, enlarged, distorted, blank, no
mask; turned by its EXIF orientation);
and predict_run.json: the weights (with a SHA-256 of their values) and the
settings that made the outputs. --resume refuses to add to a folder made with other ones, and
to overwrite the outputs of another photograph of the same output name (each class map names
its photograph in PNG text fields: "source", the path, and "source_sha256", the content, which
is what is compared); it keeps the CSV rows of earlier images that are not among this run's
inputs. An output folder that holds an earlier run needs --resume (add to it) or --overwrite
(replace it: the earlier run's files are deleted first), so no run silently drops another's
CSV rows or leaves its pictures beside the new ones.

The FOV is the mask in --masks named like the image (<stem>.*, <stem>_mask.*; where several
have that name, the one in the photograph's own nearest folders, masks/patB/OD.png for
.../patB/OD.jpg, never another patient's; any non-zero value is inside; fov_source "mask"),
else estimated from the photograph (scripts/fov.py; "estimated"; "whole image" where no disc
is found or the photograph has no dark border, a crop of the retina). Everything outside it is background. An empty mask fails its image.

Exit status: 0 when every image was segmented, 1 when some failed (see the CSV), 2 for an
error in the arguments or the weights (one line on stderr), 130 / 143 when Ctrl-C / SIGTERM
stopped it: the batch being predicted is finished and predictions.csv written (a second one
stops at once, the CSV not written); the same command with --resume does the rest.

Examples:
    python predict.py --weights DRIVE_AV/sigmoid_seed42 --input photos --output predictions
    python predict.py --weights bfnet.pth --input "scans/*.jpg" list.txt --output out --tta
    python predict.py --weights run42 run40 run38 --input photos --output out   # ensemble
    python -m torch.distributed.run --standalone --nproc_per_node 2 predict.py --weights ... \\
        --input photos --output out        # two processes (GPUs or CPU), one merged CSV
"""
import argparse
import datetime
import json
import os
import re
import signal
import sys
from collections import Counter, deque
from contextlib import ExitStack
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from tqdm import tqdm

from scripts import distributed, evaluate, predict_resume as resume
from scripts.bundle import about_line, load_any, pretrained_bundle, weights_sha256
from scripts.checkpoint import describe
from scripts.cli import FRESH_LINE, ArgumentParser, progress_bar, signal_name
from scripts.config import DATASETS, VARIANTS, ConfigError, network_input_size, saved_dataset_name
from scripts.device import (MEMORY_FORMAT, amp_dtype_for, describe_precision, keep_freed_memory, no_amp_reason,
                            one_torch_thread_here, pick_device, thread_count_restored)
from scripts.evaluate import compile_for_inference, predict_probs
from scripts.files import FolderLock, atomic_write, make_folder
from scripts.predict_inputs import MaskFinder, fingerprint, prepare
from scripts.predict_outputs import (RUN_RECORD, check_no_other_run_in_the_way, earlier_run, one_line_reason, output_kinds,
                             remove_earlier_run, row, write_outputs, write_predictions_csv)
from scripts.provenance import commit
from scripts.stopping import EXIT_STATUS, StopRequest, Terminated, run_main, signal_of, signals_handled_by

FALLBACK_SIZE = DATASETS["DRIVE_AV"].size  # for checkpoints that do not save their input size
NOTES_SHOWN = 3  # images a note is printed for; the CSV has every image's


# ----------------------------------------------------------------------------- the networks


class Ensemble:
    """One or more (Networks, size) members on one device; probabilities at the first
    member's size (others resized bilinearly to it)."""

    def __init__(self, members, device, amp_dtype, tta, batch_size):
        self.members, self.device, self.amp_dtype, self.tta = members, device, amp_dtype, tta
        self.batch_size = batch_size  # a smaller last batch is padded to it for compiled networks
        self.activation = members[0][0].activation
        self.size = members[0][1]

    @property
    def sizes(self):
        return sorted({s for _, s in self.members})

    def _one(self, nets, images):
        p = predict_probs(nets, images, self.batch_size, self.device, self.amp_dtype)
        if self.tta:
            p = (p + predict_probs(nets, images.flip(-1), self.batch_size, self.device, self.amp_dtype).flip(-1)) / 2
        return p

    def __call__(self, batch):
        outs = []
        for nets, size in self.members:
            p = self._one(nets, torch.stack([b.resized[size] for b in batch]))
            if size != self.size:
                p = F.interpolate(p, size=(self.size[1], self.size[0]), mode="bilinear", align_corners=False)
            outs.append(p)
        if len(outs) == 1:
            return outs[0], None
        stacked = torch.stack(outs)
        return stacked.mean(0), stacked.std(0, unbiased=False).amax(1)


# ----------------------------------------------------------------------------- main

def default_weights(activation):
    """The shipped DRIVE_AV bundle of the variant asked for (sigmoid, the paper's, by default)."""
    path = pretrained_bundle("DRIVE_AV", activation or "sigmoid")
    if not path.is_file():
        raise ConfigError(f"no --weights given and no shipped bundle at {path}: train a model (README: Train) "
                          f"or pass --weights")
    return [str(path)]


def compiled(nets, size, batch_size, device, amp_dtype, log):
    """``compile_for_inference`` with the compile done now, on a dummy batch of the real shape
    and precision (autocast is part of what is compiled), so that a machine where it cannot
    work gets one clear error instead of a failure per image."""
    log(f"compiling the networks for {size[0]} x {size[1]} (tens of seconds to a minute on a CPU) ...")
    compile_for_inference(nets)
    try:
        predict_probs(nets, torch.zeros(batch_size, 3, size[1], size[0], dtype=torch.uint8), batch_size, device,
                      amp_dtype)
    except Exception as exc:  # inductor raises many types (no compiler, unsupported device, ...)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"--compile failed ({type(exc).__name__}: {first}); run without --compile") from None
    return nets


@dataclass
class Member:
    """One set of weights of the ensemble (often the only one)."""
    nets: torch.nn.Module
    size: tuple          # network input (W, H)
    cfg: dict            # the configuration saved with the weights
    weights: str         # as given on the command line
    sha256: str          # of the weight values: what --resume compares


def load_members(args, device, amp_dtype, log):
    expected = {"activation": args.activation, "base_width": args.base_width}
    members = []
    for w in args.weights or default_weights(args.activation):
        nets, cfg = load_any(w, expected)
        sha256 = weights_sha256(nets)
        size = network_input_size(args.image_size, cfg, FALLBACK_SIZE)
        if not (args.image_size or cfg.get("image_size")):
            log(f"note: {w} saves no input size; using {size[0]} x {size[1]} (DRIVE_AV's): set --image-size")
        elif cfg.get("image_size") and tuple(cfg["image_size"]) != tuple(size):
            log(f"note: {w} was trained at {cfg['image_size'][0]} x {cfg['image_size'][1]}; --image-size "
                f"{size[0]} x {size[1]} shows it vessels of other widths than it learned from: expect other maps")
        nets = nets.fold_for_inference().to(device, memory_format=MEMORY_FORMAT)
        if args.compile:
            nets = compiled(nets, size, args.batch_size, device, amp_dtype, log)
        members.append(Member(nets, size, cfg, w, sha256))
    for i, m in enumerate(members):
        twin = next((o for o in members[:i] if o.sha256 == m.sha256), None)
        if twin is not None and Path(twin.weights).resolve() == Path(m.weights).resolve():
            log(f"note: {m.weights} is given twice: this ensemble counts it twice")
        elif twin is not None:
            log(f"note: {m.weights} holds the same weights as {twin.weights} (SHA-256 of their values): "
                f"this ensemble counts them twice")
    if len({m.cfg["activation"] for m in members}) > 1:
        raise ConfigError("the weights of an ensemble must be one variant: " + ", ".join(
            f"{m.weights} is {m.cfg['activation']}" for m in members))
    trained_on = [saved_dataset_name(m.cfg.get("dataset")) for m in members]
    if len(set(trained_on) - {None}) > 1:  # allowed: a deliberate mix, or a slip
        log("note: the members of this ensemble were trained on different data sets (" + ", ".join(
            f"{m.weights}: {d or 'not saved'}" for m, d in zip(members, trained_on, strict=True)) + "); their maps are averaged")
    return members


def run_record(args, members, amp_dtype) -> dict:
    """What made the outputs of this run: written to predict_run.json, compared by --resume."""
    return {"weights": [{"given": m.weights, "sha256": m.sha256, "networks": describe(m.cfg),
                         "input_size": list(m.size), "about": m.cfg.get("about", "")} for m in members],
            "tta": args.tta, "precision": describe_precision(amp_dtype),
            "masks": str(Path(args.masks).resolve()) if args.masks else "estimated from each photograph",
            "overlay_alpha": args.overlay_alpha if args.overlay else None}  # None: --no-overlay


def file_sha256(item) -> str:
    """A failed photograph's SHA-256 where its file can be read (a corrupt copy is then told
    apart from a good one in the CSV); empty where it cannot (missing, a dead link)."""
    try:
        return "" if item.missing else fingerprint(item.path)
    except OSError:
        return ""


def invocation(args, processes: int) -> dict:
    """When, with what options, from where and with what code predict.py was run: one entry of
    predict_run.json's "invocations" (a --resume adds one; they are not compared). The working
    folder is what relative paths in predictions.csv start from."""
    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "options": json.loads(json.dumps(vars(args), default=str)),  # paths as text, tuples as lists
            "working_folder": os.getcwd(), "processes": processes, "commit": commit(), "torch": torch.__version__}


def workers_per_process():
    """The usable cores, at most 8, shared among torchrun's processes on this node."""
    return max(1, evaluate.default_workers() // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def build_parser():
    p = ArgumentParser(prog="python predict.py", description=__doc__)
    p.add_argument("--weights", "-w", nargs="+", action="extend", default=None,
                   help="run folder(s), bundle file(s) or index JSON(s); several = an ensemble "
                        f"(default: the shipped bundle pretrained/{pretrained_bundle().name})")
    p.add_argument("--input", "-i", nargs="+", action="extend", required=True,
                   help="folder(s) (recursive), glob(s), list file(s) or image file(s); -i a -i b adds up")
    p.add_argument("--output", "-o", required=True, help="output folder")
    p.add_argument("--masks", default=None, help="folder of FOV masks named like the images "
                                                 "(default: estimate the FOV from each photograph)")
    p.add_argument("--image-size", type=int, nargs=2, metavar=("W", "H"), default=None, dest="image_size",
                   help="network input size, multiples of 16 (default: the one saved with the weights)")
    p.add_argument("--batch-size", "-b", type=int, default=2, dest="batch_size",
                   help="images per forward pass (default %(default)s)")
    p.add_argument("--device", default="", help="cuda, cuda:1, cpu (default: cuda when present)")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=False,
                   help="mixed precision where it pays (CUDA; CPUs with AVX512-BF16/AMX where bf16 is measured "
                        "faster, about 2x on some): outputs then differ slightly between machines (default: fp32)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the networks with their weights frozen, for large cohorts: a compile of "
                        "tens of seconds per member; on a 2-core CPU it gained only 1.03-1.3x (README: Performance)")
    p.add_argument("--tta", action="store_true", help="average with the prediction of the mirrored image")
    p.add_argument("--save-probs", action="store_true", dest="save_probs",
                   help="also write <stem>_probs.npz (float16 probabilities at the original size)")
    p.add_argument("--resume", action="store_true",
                   help="skip images whose outputs all exist and were made from the same photograph (its "
                        "SHA-256 in the class map); refuses a folder whose predict_run.json names other weights or "
                        "settings, and outputs of another photograph under the same name")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the earlier run in --output: its files (those its predictions.csv names or "
                        "whose class map names its photograph, so an interrupted run's too), the CSV and "
                        "predict_run.json are deleted first; nothing else (without --resume or --overwrite, a "
                        "folder holding an earlier run is refused)")
    p.add_argument("--overlay-alpha", type=float, default=0.6, dest="overlay_alpha",
                   help="opacity of the class colours in _overlay.png (default %(default)s)")
    p.add_argument("--no-overlay", action="store_false", dest="overlay",
                   help="do not write _overlay.png (a copy of the photograph: about 9 MB for one of HRF-AV's size; "
                        "the class and colour maps are written as always)")
    p.add_argument("--workers", type=int, default=workers_per_process(),
                   help="threads decoding and writing images, while the networks work (default: the usable "
                        "cores, at most 8, shared among the processes of one node under torchrun: %(default)s)")
    p.add_argument("--activation", choices=list(VARIANTS), default=None,
                   help="check the weights are this variant; without --weights, which shipped bundle")
    p.add_argument("--base-width", type=int, default=None, dest="base_width",
                   help="check the weights have this width")
    return p


def run(args, stop_request: Optional[StopRequest] = None) -> int:
    """Segment the inputs; the exit status. ``stop_request``: the handler of Ctrl-C and SIGTERM
    that main() installed (a first one stops after the current batch, with the CSV written)."""
    for option, value in (("--batch-size", args.batch_size), ("--workers", args.workers)):
        if value < 1:
            raise ConfigError(f"{option} {value}: must be at least 1")
    if not 0 <= args.overlay_alpha <= 1:
        raise ConfigError("--overlay-alpha must be in [0, 1]")
    # Each rank waits for the others at the end: up to 12 h, for cohorts split unevenly.
    ctx = distributed.init(pick_device(args.device).type, timeout=datetime.timedelta(hours=12))
    finished = False
    try:
        with ExitStack() as held:
            def hold_output():  # one predict.py at a time in --output: two would drop each other's CSV rows
                held.enter_context(FolderLock(args.output, "--output"))
            on_rank_zero(ctx, hold_output)  # rank 0 holds it for all; every rank hears if it cannot
            code = run_process(args, ctx, stop_request or StopRequest())
        finished = True
        return code
    finally:
        ctx.close(wait=finished)


def on_rank_zero(ctx: distributed.Context, work):
    """``work()`` done by rank 0 alone (a look at the file system), its result on every rank;
    a ConfigError it raises is raised on every rank alike, so none waits for the others."""
    outcome = None
    if ctx.rank == 0:
        try:
            outcome = (True, work())
        except ConfigError as exc:
            outcome = (False, str(exc))
    done, value = ctx.broadcast(outcome)
    if not done:
        raise ConfigError(value)
    return value


def check_output_folder(out_dir: Path, items, resume_asked: bool, overwrite: bool, ctx: distributed.Context) -> str:
    """What --output holds, checked on rank 0 before any network loads: an earlier run there
    needs --resume or --overwrite (not both), and no other run's folder may be in the way.
    Returns the earlier run's description ('' when none)."""
    if resume_asked and overwrite:
        raise ConfigError("--resume adds to an earlier run, --overwrite replaces it: give one")
    earlier = on_rank_zero(ctx, lambda: earlier_run(out_dir) if out_dir.is_dir() else "")
    if earlier and not (resume_asked or overwrite):
        raise ConfigError(f"--output {out_dir} holds an earlier run ({earlier}): --resume adds to it (same weights "
                          f"and settings), --overwrite replaces it (its files are deleted first), or choose another "
                          f"--output")
    on_rank_zero(ctx, lambda: check_no_other_run_in_the_way(out_dir, items))
    return earlier


def run_process(args, ctx: distributed.Context, stop_request: StopRequest) -> int:
    """The work of one process (one of torchrun's, or the only one): the inputs found, the
    networks loaded, this process's share of the images segmented, predictions.csv written
    together; the exit status."""
    main = ctx.rank == 0
    log = (lambda m: tqdm.write(m, file=sys.stderr)) if main else (lambda m: None)
    out_dir = Path(args.output)
    masks = MaskFinder(args.masks)
    # Inputs first: a wrong path fails in one line, before the networks load.
    items, warnings = on_rank_zero(ctx, lambda: resume.inputs_named(args.input, out_dir, args.masks, args.resume))
    if all(it.missing for it in items):  # nothing to segment: what each argument lacked, in one line
        missing = [it.path for it in items]
        raise ConfigError("; ".join(([f"file or folder not found: {' '.join(missing)}"] if missing else [])
                                    + warnings) or f"no images found in {' '.join(args.input)}")
    for w in warnings:
        log(f"warning: {w}")
    masks.note_shared(items)  # over every process's photographs
    earlier = check_output_folder(out_dir, items, args.resume, args.overwrite, ctx)
    device = pick_device(args.device, ctx.local_rank)
    keep_freed_memory()
    # Rank 0's choice on every rank: a CPU's bf16 is timed (cpu_bf16_speedup), once, not by every rank at once.
    amp_dtype = ctx.broadcast(amp_dtype_for(device, args.amp) if main else None)
    why_fp32 = no_amp_reason(device) if main and args.amp and amp_dtype is None else ""
    if why_fp32:
        log(f"note: --amp: {why_fp32}, so this runs in fp32")
    members = load_members(args, device, amp_dtype, log)
    ensemble = Ensemble([(m.nets, m.size) for m in members], device, amp_dtype, args.tta, args.batch_size)
    record = run_record(args, members, amp_dtype)
    if args.resume:
        resume.check_resume(out_dir, record, why_fp32)
    mine = [it for i, it in enumerate(items) if i % ctx.world == ctx.rank]
    kinds = output_kinds(len(members) > 1, args.save_probs, args.overlay)
    done_rows, todo, conflicts = resume.plan(mine, out_dir, kinds, masks, ensemble.sizes, args.resume)
    if ctx.sum(len(conflicts)):
        raise ConfigError(conflicts[0] if conflicts else f"--output {out_dir}: files there are in the way of this "
                                                         f"run's outputs (another process says which)")
    make_folder(out_dir, "--output")  # one line for a file of that name, before any image
    for m in members:
        log(f"{m.weights}: {describe(m.cfg)}, input {m.size[0]} x {m.size[1]}")
        if m.cfg.get("about"):
            log(f"  about these weights: {about_line(m.cfg['about'], m.weights)}")
    if args.overwrite and earlier:
        if main:
            log(f"--overwrite: deleted the earlier run's {remove_earlier_run(out_dir)} file(s) in {out_dir}")
        ctx.sum(0)  # no rank writes before they are gone
    if main:
        written = {**record, "invocations": resume.invocations(out_dir, args.resume) + [invocation(args, ctx.world)]}
        atomic_write(out_dir / RUN_RECORD, lambda tmp: Path(tmp).write_text(json.dumps(written, indent=2)))
        missing = sum(bool(it.missing) for it in items)  # failed in the CSV, not photographs
        log(f"{len(items) - missing} image(s){f' and {missing} input(s) not found' if missing else ''}"
            f"{f' over {ctx.world} processes' if ctx.enabled else ''}; "
            f"{'ensemble of ' + str(len(members)) if len(members) > 1 else 'one network'}"
            f"{', with flip TTA' if args.tta else ''}; device {device}, {describe_precision(amp_dtype)}")
    kept = resume.rows_kept_by_resume(out_dir, items) if args.resume and main else []
    skipped = ctx.sum(len(done_rows)) if args.resume else 0
    if skipped:
        log(f"--resume: {skipped} image(s) already done, skipped")
    # From here to the end a first Ctrl-C / SIGTERM ends the batch and the CSV is still written:
    # a rank never leaves the others waiting in the collectives below.
    stop_request.graceful = stop_request.began = True
    rows, failed, hidden = segment(todo, ensemble, masks, args, show_progress=main, stop_request=stop_request)
    total_failed = write_predictions_csv(out_dir, done_rows + rows + kept, failed, ctx)
    for line in notes_hidden_lines(sum(ctx.gather(hidden), Counter())):  # every rank's (the first few: each its own)
        log(line)
    handled = ctx.sum(len(done_rows) + len(rows))  # every rank takes part in both sums
    stopped = ctx.sum(stop_request.signum is not None)  # one rank may have been signalled alone
    stop_request.graceful = False
    if stopped and handled < len(items):
        signum = stop_request.signum or signal.SIGTERM  # a rank not signalled itself stops as by SIGTERM
        log(f"{signal_name(signum)}: stopped with {handled - total_failed} of {len(items)} image(s) segmented, "
            f"{total_failed} failed; wrote {out_dir}/predictions.csv; the same command with --resume does the rest")
        return EXIT_STATUS[signum]
    if main:
        earlier = f" ({skipped} of them by the earlier run)" if skipped else ""
        log(f"{len(items) - total_failed} of {len(items)} image(s) segmented{earlier}, {total_failed} failed; "
            f"wrote {out_dir}/predictions.csv")
    return 1 if total_failed else 0


# ----------------------------------------------------------------------------- the batch loop

class Segmenter:
    """predict.py's loop over batches: decoding the next batch and writing the last one's files
    run in threads while the networks work on this one; a file that fails is recorded as a
    failed row and the rest go on. A stop request (Ctrl-C, SIGTERM) ends the loop after the
    current batch, once its files are written."""

    def __init__(self, ensemble, masks, batch_size, workers, overlay_alpha, stop_request=None):
        self.ensemble, self.masks, self.stop_request = ensemble, masks, stop_request
        self.batch_size, self.workers, self.overlay_alpha = batch_size, workers, overlay_alpha
        self.rows, self.failed = [], []  # CSV rows; the items that failed
        self.writes = deque()  # (item, future) of the files being written
        self.notes_seen = Counter()  # kind of note -> images it concerns (a cohort shares its notes)

    def note(self, item, note):
        """A note on stderr for the first NOTES_SHOWN images its kind concerns (``note_kind``:
        the same note of other sizes is one kind); the rest are counted (every image's notes
        are in the CSV)."""
        kind = note_kind(note)
        self.notes_seen[kind] += 1
        if self.notes_seen[kind] <= NOTES_SHOWN:
            tqdm.write(f"note: {item.path}: {note}", file=sys.stderr)

    @property
    def notes_hidden(self) -> Counter:
        """kind of note -> images it concerns beyond the first NOTES_SHOWN, which were not told it."""
        return Counter({kind: n - NOTES_SHOWN for kind, n in self.notes_seen.items() if n > NOTES_SHOWN})

    def fail(self, item, exc, sha256=None):
        """A row of a failed image; ``sha256``: its file's, where it was hashed already."""
        reason = one_line_reason(exc, item.path)
        self.rows.append(row(item, "failed", reason, sha256=file_sha256(item) if sha256 is None else sha256))
        self.failed.append(item)
        tqdm.write(f"failed: {item.path}: {reason}", file=sys.stderr)

    def collect(self):
        """Wait for the oldest write; its row, or its failure."""
        item, fut = self.writes.popleft()
        try:
            self.rows.append(fut.result())
        except Exception as exc:  # noqa: BLE001
            self.fail(item, exc)

    def decode(self, pool, batch):
        return [pool.submit(prepare, it, self.ensemble.sizes, self.masks) for it, _ in batch]

    def predict_and_write(self, pool, batch, decoding):
        """This batch's photographs (decoded in ``decoding``) through the networks; their files
        queued for writing."""
        ready = []
        for (it, paths), fut in zip(batch, decoding, strict=True):
            try:
                ready.append((fut.result(), paths))
            except Exception as exc:  # noqa: BLE001 - one bad file never stops the run
                self.fail(it, exc)
                continue
            for note in ready[-1][0].notes:
                self.note(it, note)
        if not ready:
            return
        try:
            probs, std = self.ensemble([p for p, _ in ready])
        except Exception as exc:  # noqa: BLE001 - e.g. out of memory: these images fail
            for p, _ in ready:
                self.fail(p.item, RuntimeError(f"prediction failed: {one_line_reason(exc, '')}"), p.sha256)
            return
        for j, (p, paths) in enumerate(ready):
            self.writes.append((p.item, pool.submit(write_outputs, p, probs[j], None if std is None else std[j],
                                                    paths, self.ensemble.activation, self.overlay_alpha)))

    def run(self, todo, pool, bar):
        batches = [todo[i:i + self.batch_size] for i in range(0, len(todo), self.batch_size)]
        ahead = self.decode(pool, batches[0]) if batches else []
        for k, batch in enumerate(batches):
            decoding = ahead
            ahead = self.decode(pool, batches[k + 1]) if k + 1 < len(batches) else []  # while this one runs
            self.predict_and_write(pool, batch, decoding)
            while len(self.writes) > max(2 * self.batch_size, self.workers):  # bounds the memory held
                self.collect()
            bar.update(len(batch))
            if self.stop_request is not None and self.stop_request.signum is not None:
                for fut in ahead:  # the next batch's decoding: not needed now
                    fut.cancel()
                break
        while self.writes:
            self.collect()


def segment(todo, ensemble, masks, args, show_progress=True, stop_request=None):
    """Segment and write every (item, paths): (CSV rows, number failed, the notes not repeated
    on stderr with the images they concern); see Segmenter."""
    segmenter = Segmenter(ensemble, masks, args.batch_size, args.workers, args.overlay_alpha, stop_request)
    # The threads work with torch on one thread each, as test.py's scoring: the full-size resize
    # rounds a few pixels differently on other thread counts, and the networks keep the cores.
    # The bar is closed on the way out, also when a second Ctrl-C stops at once (before its message).
    with progress_bar(total=len(todo), desc="predict", unit="img", disable=not show_progress,
                      dynamic_ncols=True) as bar, thread_count_restored(), ThreadPoolExecutor(max_workers=args.workers,
                                                        initializer=one_torch_thread_here) as pool:
        try:
            segmenter.run(todo, pool, bar)
        except BaseException:  # a second Ctrl-C: what is queued is dropped; only what runs is awaited
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return segmenter.rows, len(segmenter.failed), segmenter.notes_hidden


def note_kind(note: str) -> str:
    """A note with its numbers left out ('a small photograph (... x ...), ...'): photographs of
    a cohort differ in size, not in what is said of them."""
    return re.sub(r"\d+(?:\.\d+)?", "...", note)


def notes_hidden_lines(hidden: Counter) -> list:
    """One line per kind of note told for the first NOTES_SHOWN images only: on how many more."""
    return [f"note: and {n} more image(s): {kind} (each image's notes, with its numbers: predictions.csv, column "
            f"notes)" for kind, n in hidden.items()]


def main(argv=None):
    args = build_parser().parse_args(argv)
    # Ctrl-C and SIGTERM (kill, a scheduler's stop) end the current batch, write predictions.csv
    # and exit 130 / 143; a second one, or one before the images, stops at once in one line.
    stop_request = StopRequest("after this batch, with its outputs and predictions.csv written")
    with signals_handled_by(stop_request):
        try:
            code = run(args, stop_request)
        except ConfigError as exc:
            if distributed.launched_as_rank_zero():  # under torchrun every process meets it: one line
                print(f"error: {exc}", file=sys.stderr)
            code = 2
        except (KeyboardInterrupt, Terminated) as exc:
            signum = signal_of(exc)
            if distributed.launched_as_rank_zero() and not stop_request.began:
                print(f"{FRESH_LINE}{signal_name(signum)}: stopped before the first image", file=sys.stderr)
            elif distributed.launched_as_rank_zero():
                print(f"{FRESH_LINE}{signal_name(signum)}: stopped at once; the outputs written so far are kept (not "
                      f"predictions.csv): the same command with --resume does the rest", file=sys.stderr)
            code = EXIT_STATUS[signum]
    sys.exit(code)


if __name__ == "__main__":
    run_main(main)
