"""Prediction and the evaluation protocol of DESIGN.md section 6, shared by validation,
test.py and the benchmarks.

Metrics are always computed from the uint8 pictures that are written as PNGs (R artery,
G uncertain, B vein), so anyone can recompute them from ``raw_pre`` and the labels.
"""
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from . import metrics
from .bfnet import Networks, to_picture
from .checkpoint import atomic_write
from .data import normalize


@torch.no_grad()
def predict_probs(nets: Networks, images_u8, batch_size=4, device="cpu", amp_dtype=None,
                  channels_last=False, progress=None):
    """G's probabilities at the network size: images_u8 Nx3xhxw uint8 -> NxCxhxw float32 (CPU)."""
    nets.eval()
    batches = list(torch.split(torch.arange(len(images_u8)), batch_size))
    out = []
    for idx in (progress(batches) if progress else batches):
        x = normalize(images_u8[idx].to(device, non_blocking=True).float() / 255)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(x.device.type, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None):
            out.append(nets.predict(x).float().cpu())
    return torch.cat(out)


def picture_u8(probs, activation):
    """CxHxW probabilities -> HxWx3 uint8 picture (probabilities x 255, rounded)."""
    pic = to_picture(probs.unsqueeze(0), activation)[0]
    return (pic * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


def full_size_picture(probs_small, size_wh, fov, activation):
    """Resize the probabilities to the original (W, H) bilinearly, decode, zero outside the FOV."""
    w, h = size_wh
    probs = F.interpolate(probs_small.unsqueeze(0), size=(h, w), mode="bilinear", align_corners=False)[0]
    pic = picture_u8(probs, activation)
    pic[~fov] = 0
    return pic


def write_png(path, array):
    atomic_write(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG", compress_level=1))


def validate(nets: Networks, val_set, activation, batch_size, device, amp_dtype=None, channels_last=False):
    """Mean metrics over the validation images at the network size (labels resized nearest)."""
    probs = predict_probs(nets, val_set.images, batch_size, device, amp_dtype, channels_last)
    per_image = []
    for i in range(len(val_set)):
        fov = val_set.fovs[i].numpy()
        pic = picture_u8(probs[i], activation)
        pic[~fov] = 0
        per_image.append(metrics.evaluate_image(val_set.labels[i].numpy(), pic, fov))
    return metrics.summarize(per_image), probs
