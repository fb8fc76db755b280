"""Prediction and the evaluation protocol of DESIGN.md section 6, shared by validation,
test.py and the benchmarks.

The table's metrics are computed from the uint8 pictures that are written as PNGs (R artery,
G uncertain, B vein), so anyone can recompute them from ``raw_pre`` and the labels. The
probability-based extras read the probabilities at 16 bits (``score_picture``): recomputed
from the 8-bit PNGs they differ a little, most for a network whose outputs saturate.
"""
import os
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn.functional as F

from . import metrics, segments
from .bfnet import Networks, to_picture
from .config import VARIANTS
from .data import load_truth, normalize
from .device import MEMORY_FORMAT, exact_fp32, thread_count_restored
from .files import write_png


@torch.no_grad()
def predict_probs(nets: Networks, images_u8, batch_size=4, device="cpu", amp_dtype=None,
                  channels_last=True, progress=None):
    """G's probabilities at the network size: images_u8 Nx3xhxw uint8 -> NxCxhxw float32 (CPU).
    ``amp_dtype`` None: exact fp32 (the default of every evaluation), else autocast to it."""
    nets.eval()
    batches = list(torch.split(torch.arange(len(images_u8)), batch_size))
    out = []
    for idx in (progress(batches) if progress else batches):
        n = len(idx)
        if nets.compiled_for_inference and n < batch_size:
            idx = torch.cat([idx, idx[-1:].expand(batch_size - n)])  # one shape: no second compile
        x = normalize(images_u8[idx].to(device, non_blocking=True).float() / 255)
        if channels_last:
            x = x.contiguous(memory_format=MEMORY_FORMAT)
        if amp_dtype is None:
            with exact_fp32():
                out.append(nets.predict(x)[:n].cpu())
        else:
            with torch.autocast(x.device.type, dtype=amp_dtype):
                out.append(nets.predict(x)[:n].float().cpu())
    return torch.cat(out)


def compile_for_inference(nets: Networks) -> Networks:
    """torch.compile the prediction path (G_A, G_V, G without side heads) with the weights
    frozen as constants, so inductor pre-packs the weights and fuses what follows the
    convolutions. It pays only after a compile of up to a minute (measured gains: README,
    Performance): meant for long cohorts and GPUs. The outputs agree with eager ones to float rounding. For evaluation only: frozen
    weights must not change afterwards."""
    nets.eval()
    nets.predict = torch.compile(nets.predict, dynamic=False, options={"freezing": True})
    nets.compiled_for_inference = True  # predict_probs then pads the last batch
    return nets


def _u8_hwc(chw):
    """3xHxW floats in [0, 1] -> HxWx3 uint8 (x 255, rounded); a contiguous array when ``chw``
    is stored channels-last, as full_size_picture makes it (one pass less for the PNG)."""
    x = chw * 255
    return x.round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


def picture_u8(probs, activation):
    """CxHxW probabilities -> HxWx3 uint8 picture (probabilities x 255, rounded)."""
    return _u8_hwc(to_picture(probs.unsqueeze(0), activation)[0])


def full_size_picture(probs_small, size_wh, fov, activation, with_scores=False):
    """Resize the probabilities to the original (W, H) bilinearly, decode, zero outside the FOV.
    ``with_scores``: also return ``score_picture`` of the resized probabilities."""
    w, h = size_wh
    # channels-last: the same numbers, about 2x faster at HRF-AV's size (one-thread timing), and already the
    # HxWx3 layout of the picture
    probs = F.interpolate(probs_small.unsqueeze(0).contiguous(memory_format=MEMORY_FORMAT), size=(h, w),
                          mode="bilinear", align_corners=False)[0]
    pic = picture_u8(probs, activation)
    pic[~fov] = 0
    return (pic, score_picture(probs, activation)) if with_scores else pic


def score_picture(probs, activation):
    """The probabilities behind a picture, for the probability-based extras: HxWx3 uint16
    (x 65535, rounded) of artery, uncertain and vein, the picture's channel order.

    16 bits, not the picture's 8: below 1/510 every probability rounds to 0 in 8 bits, and a
    network whose outputs saturate (as the adversarial loss pushes them to) then ties most of
    its misses with the background, pulling its AUC towards (sens + spec) / 2."""
    order = [VARIANTS[activation].channels.index(c) for c in ("artery", "uncertain", "vein")]
    chw = probs if order == [0, 1, 2] else probs[order]  # (no copy of a full-size map when in order)
    return (chw * 65535).round_().clamp_(0, 65535).to(torch.uint16).permute(1, 2, 0).numpy()


def score_image(label, picture, fov, segment_split=None, scores=None, settings=segments.DEFAULT_SETTINGS):
    """Pixel metrics (metrics.evaluate_image) plus the segment metrics under "segments".

    ``segment_split``: ``segments.split_segments(label, fov, settings.min_length)``, reusable
    across runs. Returns (result, mixed segment ids)."""
    result = metrics.evaluate_image(label, picture, fov, scores)
    split = segment_split if segment_split is not None else segments.split_segments(label, fov, settings.min_length)
    scores = segments.segment_scores(label, segments.pred_classes_from_picture(picture), fov,
                                     minority=settings.minority, segments=split)
    mixed = scores.pop("mixed_ids")
    result["segment_classes"] = scores.pop("class_pixels")  # for segments.caveats, not a summary's
    scores["count"] = scores.pop("segments")
    result["segments"] = scores
    return result, mixed


def evaluate_test_image(name, label, fov, probs, activation, out_dir, segment_split=None,
                        settings=segments.DEFAULT_SETTINGS):
    """One test image of one run, as test.py does it: the pictures at the network and the
    original size, every metric, and the picture of the mixed segments, written under
    ``out_dir/{small_pre,raw_pre,mixed_segments}/<name>.png``. Returns the metrics."""
    split = segment_split if segment_split is not None else segments.split_segments(label, fov, settings.min_length)
    raw, scores = full_size_picture(probs, (label.shape[1], label.shape[0]), fov, activation, with_scores=True)
    write_png(out_dir / "small_pre" / f"{name}.png", picture_u8(probs, activation))
    write_png(out_dir / "raw_pre" / f"{name}.png", raw)
    result, mixed = score_image(label, raw, fov, split, scores, settings)
    drawing = segments.draw_mixed_segments(raw, split[0], mixed, label)
    write_png(out_dir / "mixed_segments" / f"{name}.png", segments.with_legend(drawing, settings.minority))
    return result


def usable_cores():
    """The cores this process may run on (its affinity, where the system tells)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_workers():
    """Test images evaluated at a time by default: the usable cores, at most 8 (0.3-0.5 GB
    each at HRF-AV's size)."""
    return min(8, usable_cores())


def in_threads(work, n, workers):
    """work(0), ..., work(n - 1) in order, ``workers`` at a time in threads (numpy, scipy, PIL and
    torch release the GIL); on an error, the items not yet started are dropped."""
    if workers <= 1:
        yield from map(work, range(n))
        return
    pool = ThreadPoolExecutor(workers, thread_name_prefix="evaluate")
    try:
        yield from pool.map(work, range(n))
    finally:
        pool.shutdown(cancel_futures=True)


def evaluate_images(samples, probs, activations, run_outs, workers=1, settings=segments.DEFAULT_SETTINGS):
    """evaluate_test_image for every test image (in order) and run: yields, per image, the list
    of the runs' results. The truth is read and split into segments once per image for all runs;
    ``settings``: the segment metric's.

    ``workers`` > 1 evaluates that many images at a time in threads: the work is in numpy, scipy,
    PIL and torch, which release the GIL, and it would otherwise run on one core (on a GPU
    machine, most of test.py's time). Each image is scored with torch on one thread while this
    generator runs: the bilinear resize rounds differently with other thread counts (a few
    pixels of a picture change), so this keeps the scores of given probabilities the same for
    any ``workers`` and any number of cores. (The segment split's k-d tree, whose answers do
    not depend on it, shares the cores out among the workers.)"""
    def one(i):
        label, fov = load_truth(samples[i])  # full size (the photograph is not decoded: it is cached)
        split = segments.split_segments(label, fov, settings.min_length, threads=split_threads)  # same on any count
        return [evaluate_test_image(samples[i].name, label, fov, probs[r][i], activation, run_out, split, settings)
                for r, (activation, run_out) in enumerate(zip(activations, run_outs, strict=True))]

    split_threads = max(1, torch.get_num_threads() // max(workers, 1))
    with thread_count_restored():
        torch.set_num_threads(1)  # this thread's, and the count the workers' threads start with
        yield from in_threads(one, len(samples), workers)


def validate(nets: Networks, val_set, batch_size, device, splits=None):
    """Mean metrics over the validation images at the network size (labels resized nearest),
    and a picture of the first image's mixed segments. Always in fp32, whatever the training's
    precision: the validation F1 picks the checkpoint. ``splits``: precomputed
    ``segments.split_segments`` of the validation labels (they never change)."""
    probs, activation = predict_probs(nets, val_set.images, batch_size, device, None), nets.activation
    per_image, drawing = [], None
    for i in range(len(val_set)):
        label, fov = val_set.labels[i].numpy(), val_set.fovs[i].numpy()
        pic = picture_u8(probs[i], activation)
        pic[~fov] = 0
        result, mixed = score_image(label, pic, fov, splits[i] if splits else None,
                                    score_picture(probs[i], activation))
        per_image.append(result)
        if i == 0:
            split = splits[0] if splits else segments.split_segments(label, fov)
            drawing = segments.with_legend(segments.draw_mixed_segments(pic, split[0], mixed, label))
    return metrics.summarize(per_image), drawing
