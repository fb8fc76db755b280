"""Loading and augmentation (DESIGN.md section 5).

Files are found through the table in ``config.DATASETS``, decoded once, resized to the
network size and cached as ``.npy`` under the cache folder, so a training epoch never
decodes a photograph. A whole split then lives in one uint8 tensor (on the GPU when training
there), and augmentation and normalisation run on batches on that device.
"""
import fnmatch
import hashlib
import math
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from .cli import progress_bar
from .config import ConfigError, DatasetSpec

# The largest image read (pixels): 200 MP, far above any fundus camera (HRF: 8 MP, ultra-
# widefield: about 16 MP), and a guard against a decompression bomb among a user's own files.
MAX_PIXELS = 200_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS  # PIL's own check (an error above twice this) as a fallback
# PIL's warnings on odd files (TIFF tags, EXIF) are not the user's business: a file is read or
# refused with one line. Silenced once here, not with catch_warnings around each read, which
# swaps a process-wide list and so is not safe in test.py's and predict.py's threads.
warnings.filterwarnings("ignore", module=r"PIL(\.|$)")
CACHE_VERSION = 1


class DataError(ConfigError):
    """A missing, unreadable or inconsistent data file; the message names the file."""


@dataclass(frozen=True)
class Sample:
    name: str          # image stem, e.g. '21_training'; output PNGs use it
    image: Path
    label: Path
    mask: Path


# ----------------------------------------------------------------------------- finding files

def where_the_data_is_not(root: Path, spec: DatasetSpec) -> str:
    """A hint for a data folder not found: a link to nowhere, or a relative --data-root read from
    another folder than the checkout (the default ./data is the checkout's link: ``make data``)."""
    for path in (root, root / spec.name):
        if path.is_symlink() and not path.exists():
            return f"; {path} is a link to {os.readlink(path)}, which does not exist"
    if root.is_absolute() or (root / spec.name).is_dir():
        return ""
    checkout = Path(__file__).resolve().parents[1] / root
    if checkout.resolve() == root.resolve() and root == Path("data"):  # the default, in the checkout
        return "; the checkout has no data/: `make data` links ../shared/data there where it exists, or give --data-root"
    there = f": did you mean --data-root {checkout}?" if (checkout / spec.name).is_dir() else ""
    return f"; {root} is read from the current folder, {Path.cwd()}{there}"


def find_samples(data_root, spec: DatasetSpec, split: str):
    """All (image, label, mask) triples of ``<data_root>/<spec.name>/<split>``."""
    split_dir = Path(data_root) / spec.name / split
    folders = {k: split_dir / k for k in ("images", "1st_manual", "mask")}
    for folder in folders.values():
        if not folder.is_dir():
            root = Path(data_root)
            hint = (f"; {root} holds a data set's splits itself: did you mean --data-root {root.parent}?"
                    if (root / split).is_dir() and not (root / spec.name).is_dir() else "")
            raise DataError(f"missing folder {folder} (expected <data-root>/<Dataset>/{{training,test}}/"
                            f"{{images,1st_manual,mask}}; {spec.where}){hint or where_the_data_is_not(root, spec)}")
    images = sorted(p for p in folders["images"].iterdir() if not p.name.startswith(".") and p.is_file() and any(
        fnmatch.fnmatch(p.name.lower(), pattern.lower()) for pattern in spec.image_patterns))  # in any case: .JPG
    if not images:
        raise DataError(f"no images matching {' '.join(spec.image_patterns)} in {folders['images']}")
    samples, seen, missing = [], {}, []
    for image in images:
        stem = image.stem
        if stem in seen:
            raise DataError(f"{image} and {seen[stem]} are two photographs of one name in {folders['images']}")
        seen[stem] = image
        label = folders["1st_manual"] / spec.label_name.format(stem=stem)
        mask = folders["mask"] / spec.mask_name.format(stem=stem)
        missing += [(image, kind, path) for kind, path in (("label", label), ("FOV mask", mask)) if not path.is_file()]
        samples.append(Sample(stem, image, label, mask))
    if missing:  # all of them counted in the one line, not found one per attempt
        image, kind, path = missing[0]
        other = _named_otherwise(path.parent, lambda p: p.name.lower() == path.name.lower() or p.stem == path.stem)
        hint = f" ({other} is there: the DATASETS row's file names are exact, case and extension included)" if other else ""
        more = f" (and {len(missing) - 1} more missing labels or masks in {split_dir})" if len(missing) > 1 else ""
        raise DataError(f"{image}: its {kind} {path} is missing{hint}{more}")
    # A label whose photograph is missing or not found (another extension) would silently
    # shrink the split: a test score over 19 DRIVE images is not the protocol's.
    labelled = {s.label.name for s in samples}
    orphans = sorted(p for p in folders["1st_manual"].glob(spec.label_name.format(stem="*")) if p.name not in labelled)
    if orphans:
        more = f" (and {len(orphans) - 1} more)" if len(orphans) > 1 else ""
        prefix, suffix = spec.label_name.split("{stem}")
        stem = orphans[0].name[len(prefix):len(orphans[0].name) - len(suffix)]
        other = _named_otherwise(folders["images"], lambda p: p.stem == stem)
        hint = f" ({other} is there: add its pattern to the DATASETS row's photographs)" if other else ""
        raise DataError(f"{orphans[0]}: a label with no photograph {' or '.join(spec.image_patterns)} of its name "
                        f"in {folders['images']}{hint}{more}")
    return samples


def _named_otherwise(folder: Path, alike) -> Optional[str]:
    """The name of a file of ``folder`` that ``alike`` accepts (the one looked for under another
    case or extension), for an error's hint; None when there is none."""
    return next((p.name for p in sorted(folder.iterdir()) if alike(p)), None)


# ----------------------------------------------------------------------------- decoding

def open_header(path):
    """The image file opened lazily (size and mode known, pixels not decoded yet)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file")
    too_large = f"more than the {MAX_PIXELS // 10**6} MP this reads (no fundus photograph is that large)"
    try:
        img = Image.open(path)
    except Image.DecompressionBombError:  # PIL's own check, above twice the limit
        raise DataError(f"{path}: {too_large}") from None
    except Exception as exc:  # PIL raises several types for unknown or corrupt files
        raise DataError(f"{path}: cannot decode image ({exc})") from None
    if img.width * img.height > MAX_PIXELS:
        img.close()
        raise DataError(f"{path}: {img.width} x {img.height} pixels, {too_large}")
    return img


def _open(path, img=None):
    """The image file decoded (``img``: its header, opened already)."""
    img = img or open_header(path)
    try:
        img.load()
        return img
    except Exception as exc:  # PIL raises several types for corrupt or truncated files
        img.close()
        raise DataError(f"{path}: cannot decode image ({exc})") from None


# Pillow reads a colour image of 16 bits per channel (PNG, TIFF) as its high 8 bits. Those are
# the image where its values span the 16-bit range; a camera's 12-bit data kept in 16 bits
# (values below 4096) leaves 16 levels, too few to segment, and is refused rather than guessed at.
MIN_LEVELS = 64


def _sixteen_bit_colour(img: Image.Image) -> bool:
    """Colour stored at 16 bits per channel, known from the header: its decoder's raw mode, such
    as PNG's "RGB;16B" or TIFF's "RGBA;16L" (not a 16-bit BMP's "BGR;16": 5-6-5 bits a pixel)."""
    if img.mode not in ("RGB", "RGBA"):
        return False
    for tile in img.tile:  # (decoder, box, offset, args): a plain tuple before Pillow 11
        args = tile[3]
        raw_mode = args if isinstance(args, str) else args[0] if isinstance(args, tuple) and args else ""
        if isinstance(raw_mode, str) and re.fullmatch(r"RGBA?;16[BLN]?", raw_mode):
            return True
    return False


def _check_16_bit_levels(path, rgb: np.ndarray):
    levels = int(rgb.max()) + 1
    if levels < MIN_LEVELS:
        raise DataError(f"{path}: a 16-bit colour image whose values stay below {256 * levels} (of up to 65535; a "
                        f"camera's 12-bit data?): its high 8 bits, which Pillow reads, hold {levels} levels, too "
                        f"few to segment; save it with its values scaled to the full 16-bit range, or as 8 bits")


def to_rgb8(img: Image.Image) -> np.ndarray:
    """Any PIL image (RGB, RGBA, P, L, 16-bit greyscale, ...) as HxWx3 uint8."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(img, dtype=np.float64)
        a = a * (255.0 / max(a.max(), 1.0)) if a.max() > 255 else a
        return np.repeat(a.round().astype(np.uint8)[..., None], 3, axis=2)
    return np.asarray(img.convert("RGB"))


# Each reader closes its file (PIL keeps a GIF, such as DRIVE's and LES-AV's masks, open after
# decoding, in case of more frames).

EXIF_ORIENTATION = 0x0112  # 1: as stored; 2-8: mirrored and/or turned by 90, 180 or 270 degrees


def _upright(img: Image.Image) -> Image.Image:
    """Turned as image viewers show it, by its EXIF orientation tag (a copy only when it has one)."""
    return ImageOps.exif_transpose(img) if exif_orientation(img) != 1 else img


def exif_orientation(img: Image.Image) -> int:
    """The turn image viewers apply (1: none). A TIFF's is applied by Pillow's reader itself,
    so it counts as 1 here (turning it again would undo it)."""
    return 1 if img.format == "TIFF" else int(img.getexif().get(EXIF_ORIENTATION) or 1)


def transparent(img: Image.Image) -> Optional[np.ndarray]:
    """HxW bool: the pixels an opened image shows transparent (alpha below 128), which labels and
    prediction pictures read as background; None for an image without alpha or a transparent colour."""
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        return np.asarray(img.convert("RGBA"))[..., 3] < 128
    return None


def read_image(path, upright=False) -> np.ndarray:
    """HxWx3 uint8. ``upright``: as image viewers show it (predict.py's own photographs); the
    data sets' files carry no orientation tag, and their labels are drawn on the stored pixels."""
    header = open_header(path)
    sixteen_bits = _sixteen_bit_colour(header)
    with _open(path, header) as img:
        rgb = to_rgb8(_upright(img) if upright else img)
    if sixteen_bits:
        _check_16_bit_levels(path, rgb)
    return rgb


# The classes of colours, as labels drawn in colour and this project's pictures show them: which of
# R, G, B are at 128 or more -> class (red artery, blue vein, green or white uncertain, black none).
CLASS_OF_CHANNELS = {(False, False, False): 0, (True, False, False): 1, (False, False, True): 2,
                     (False, True, False): 3, (True, True, True): 3}
LABEL_NAMES = ("background", "artery", "vein", "uncertain")  # label values 0..3


def read_label(path) -> np.ndarray:
    """Single-channel index label, 0 background, 1 artery, 2 vein, 3 uncertain."""
    with _open(path) as img:
        if img.mode not in ("L", "P"):
            raise DataError(f"{path}: label must be a single-channel index image (mode L or P), got {img.mode} "
                            f"(labels drawn in colour: python -m scripts.labels converts them)")
        label = np.asarray(img, dtype=np.uint8)
        palette = img.getpalette() if img.mode == "P" else None
    if label.max() > 3:
        bad = np.unique(label[label > 3])[:5].tolist()
        raise DataError(f"{path}: label values must be 0..3 (0 bg, 1 artery, 2 vein, 3 uncertain), found {bad}")
    if palette:
        _check_palette(path, palette, np.unique(label).tolist())
    return label


def _check_palette(path, palette, values):
    """A palette label whose artery value is drawn as a vein's colour or the other way round
    (index 1 blue, 2 red: a paint tool's colour label, read by its values, would swap artery and
    vein unsaid). Other palettes (grey ones, as Pillow makes; labelme's, whose index 2 is green)
    say nothing about the classes and are read by their values."""
    for v in set(values) & {1, 2}:
        rgb = tuple(palette[3 * v:3 * v + 3])
        said = CLASS_OF_CHANNELS.get(tuple(c >= 128 for c in rgb)) if len(rgb) == 3 else None
        if said in (1, 2) and said != v:
            raise DataError(f"{path}: a palette label whose value {v} ({LABEL_NAMES[v]}) is drawn as {rgb} "
                            f"({LABEL_NAMES[said]} in colour): if the colours are right, python -m scripts.labels "
                            f"converts it by them")


def read_mask(path, upright=False) -> np.ndarray:
    """FOV mask: any non-zero value (in any channel) is inside. ``upright``: as in read_image."""
    with _open(path) as img:
        a = np.asarray(_upright(img) if upright else img)
    return (a.reshape(a.shape[0], a.shape[1], -1) > 0).any(axis=2)


def load_truth(sample: Sample, image_size=None):
    """(label HxW uint8, fov HxW bool) at the original size, checked against the photograph's
    size (W, H) and for an empty mask; without ``image_size`` it is read from the file's header,
    not decoded."""
    if image_size is None:
        with open_header(sample.image) as img:
            image_size = img.size
    label, fov = read_label(sample.label), read_mask(sample.mask)
    for kind, arr, path in (("label", label, sample.label), ("mask", fov, sample.mask)):
        if arr.shape != (image_size[1], image_size[0]):
            raise DataError(f"{path}: {kind} is {arr.shape[1]} x {arr.shape[0]} but its image "
                            f"{sample.image.name} is {image_size[0]} x {image_size[1]}")
    if not fov.any():  # every metric of the image would be 0, and counted in the means
        raise DataError(f"{sample.mask}: the FOV mask is empty (no pixel above 0), so {sample.image.name} would "
                        f"score nothing")
    return label, fov


def truth_fingerprint(samples) -> str:
    """SHA-256 of the labels and masks of ``samples`` (names and file contents): the summaries
    of tests scored against other truth (an edited copy of a data set) tell themselves apart
    in scripts.compare, wherever the copies lie."""
    digest = hashlib.sha256()
    for sample in sorted(samples, key=lambda s: s.name):
        for path in (sample.label, sample.mask):
            digest.update(f"{sample.name}|{path.suffix}|{path.stat().st_size}|".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def load_sample(sample: Sample):
    """(image HxWx3 uint8, label HxW uint8, fov HxW bool) at the original size, checked."""
    image = read_image(sample.image)
    return (image, *load_truth(sample, (image.shape[1], image.shape[0])))


def resize(image, label, fov, size):
    """Image bilinear (PIL, anti-aliased), label and mask nearest; size is (W, H)."""
    image = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
    label = np.asarray(Image.fromarray(label).resize(size, Image.NEAREST))
    fov = np.asarray(Image.fromarray(fov.astype(np.uint8) * 255).resize(size, Image.NEAREST)) > 0
    return image, label, fov


def load_resized(sample: Sample, size, cache_dir=None):
    """``load_sample`` + ``resize``, cached as one .npy per sample and size. An entry is of the
    files as they are: their path, size, modification time, and the inode and change time (ctime,
    which no copy can set: a photograph replaced by ``cp -p`` or unpacked from an archive, same
    size and modification time, is decoded again)."""
    if cache_dir is None:
        return resize(*load_sample(sample), size)
    stamp = "|".join(f"{p.resolve()}:{s.st_mtime_ns}:{s.st_size}:{s.st_ino}:{s.st_ctime_ns}"
                     for p in (sample.image, sample.label, sample.mask) for s in (p.stat(),))
    key = hashlib.sha1(f"{CACHE_VERSION}|{stamp}|{size}".encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"{sample.name}-{size[0]}x{size[1]}-{key}.npy"
    if path.is_file():
        try:
            packed = np.load(path)
            return packed[..., :3], packed[..., 3], packed[..., 4] > 0
        except (OSError, ValueError):
            pass  # a damaged cache entry is rebuilt below
    image, label, fov = resize(*load_sample(sample), size)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")  # several processes may fill the cache at once
    np.save(tmp, np.concatenate([image, label[..., None], fov[..., None].astype(np.uint8)], axis=2))
    tmp.replace(path)
    return image, label, fov


@dataclass
class TensorSet:
    """A split held in memory: images Nx3xHxW uint8, labels NxHxW uint8, fovs NxHxW bool."""
    names: list
    images: torch.Tensor
    labels: torch.Tensor
    fovs: torch.Tensor

    def __len__(self):
        return len(self.names)

    def subset(self, idx):
        idx = list(idx)
        return TensorSet([self.names[i] for i in idx], self.images[idx], self.labels[idx], self.fovs[idx])

    def to(self, device):
        return TensorSet(self.names, self.images.to(device), self.labels.to(device), self.fovs.to(device))


def greyscale_names(names, images) -> list:
    """The ``names`` of ``images`` (Nx3xHxW) whose three channels are equal (a greyscale or
    red-free capture)."""
    grey = ((images[:, 0] == images[:, 1]) & (images[:, 1] == images[:, 2])).flatten(1).all(dim=1)
    return [name for name, g in zip(names, grey.tolist(), strict=True) if g]


def load_tensor_set(samples, size, cache_dir=None, desc=None) -> TensorSet:
    """Every sample decoded (or read from the cache) and checked; ``desc`` shows a progress bar."""
    with progress_bar(samples, desc=desc, leave=False, disable=desc is None) as bar:
        items = [load_resized(s, size, cache_dir) for s in bar]
    empty = [s for s, item in zip(samples, items, strict=True) if not item[2].any()]  # (a cache entry of old)
    if empty:
        raise DataError(f"{empty[0].mask}: the FOV mask is empty at {size[0]} x {size[1]} (no pixel above 0), so "
                        f"{empty[0].image.name} would score nothing")
    return TensorSet([s.name for s in samples],
                     torch.from_numpy(np.stack([i[0] for i in items])).permute(0, 3, 1, 2).contiguous(),
                     torch.from_numpy(np.stack([i[1] for i in items])),
                     torch.from_numpy(np.stack([i[2] for i in items])))


def split_train_val(n, percent, seed):
    """Indices (train, val): ``max(1, int(n * percent / 100))`` images held out, drawn with the seed."""
    n_val = max(1, int(n * percent / 100))
    if n - n_val < 1:
        raise DataError(f"{n} training image(s) cannot give a {percent}% validation split and a "
                        f"non-empty training set")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(order[n_val:]), sorted(order[:n_val])


# ----------------------------------------------------------------------------- augmentation

GREY_WEIGHTS = torch.tensor([0.299, 0.587, 0.114])  # luma, for the saturation change


def augment(images, labels, fovs, generator, rotation_step=3):
    """Random horizontal flip (p 0.5), rotation by a multiple of ``rotation_step`` degrees and
    saturation factor U(0.8, 1.2); image, label and mask move together.

    images: Bx3xHxW float in [0, 1]; labels BxHxW long; fovs BxHxW bool, or None where the
    turned mask is not wanted (training: normalize() finds the fundus itself). Random numbers come
    from ``generator`` (CPU) so runs are reproducible on any device; the few numbers drawn go
    to the device without a host sync (non_blocking), so the CPU can queue the next step early.
    """
    b, device = images.shape[0], images.device
    flip = torch.rand(b, generator=generator) < 0.5
    steps = max(1, 360 // rotation_step)
    angle = torch.randint(0, steps, (b,), generator=generator).double() * rotation_step * math.pi / 180
    saturation = (0.8 + 0.4 * torch.rand(b, generator=generator)).to(device, images.dtype, non_blocking=True)

    # One affine grid per sample: rotation about the centre, then the flip (x -> -x).
    h, w = images.shape[-2:]
    cos, sin = angle.cos(), angle.sin()
    sign = torch.where(flip, -1.0, 1.0).double()
    theta = torch.zeros(b, 2, 3, dtype=torch.float64)
    theta[:, 0, 0], theta[:, 0, 1] = cos * sign, -sin * h / w
    theta[:, 1, 0], theta[:, 1, 1] = sin * sign * w / h, cos
    grid = F.affine_grid(theta.float().to(device, non_blocking=True), (b, 1, h, w), align_corners=False)
    images = F.grid_sample(images, grid.to(images.dtype), mode="bilinear", align_corners=False)
    maps = [labels] if fovs is None else [labels, fovs]
    stacked = torch.stack([m.to(images.dtype) for m in maps], 1)
    stacked = F.grid_sample(stacked, grid.to(images.dtype), mode="nearest", align_corners=False)
    labels = stacked[:, 0].round().long()
    fovs = None if fovs is None else stacked[:, 1] > 0.5

    grey = (images * GREY_WEIGHTS.to(images, non_blocking=True).view(1, 3, 1, 1)).sum(1, keepdim=True)
    images = (grey + saturation.view(b, 1, 1, 1) * (images - grey)).clamp(0, 1)
    return images, labels, fovs


def normalize(images, eps=1e-6):
    """Per image and channel: subtract the mean, divide by the std of the non-black pixels."""
    inside = (images.amax(1, keepdim=True) > 0).to(images.dtype)
    count = inside.sum((2, 3), keepdim=True).clamp_min(1)
    mean = (images * inside).sum((2, 3), keepdim=True) / count
    var = (((images - mean) * inside) ** 2).sum((2, 3), keepdim=True) / count
    return (images - mean) / (var + eps).sqrt()
