"""A compact copy of a data set, for a machine that can only be sent a little (a lent GPU).

The training split is written at the network size, exactly as the data cache would hold it:
photographs as lossless PNG, labels and masks resized with nearest neighbour. Resizing to the
size an image already has changes nothing, so training on the copy is training on the
original (every written file is read back through the project's own loader and compared).
The test split is copied as it is, because the protocol scores at the original size.
``pack.json`` records the size, and train.py refuses to train on the copy at another one.

    python -m scripts.pack --dataset HRF-AV --out packs        # 78 MiB -> 46 MiB
    python train.py --dataset HRF-AV --data-root packs ...     # on the other machine

``--first N`` packs only the first N images of each split (by name): enough for
benchmarks/benchmark.py (4 training and 4 test images) where the whole packs of several data
sets would not travel together. train.py notes such a pack; reproduce.py refuses it.
"""
import json
import os
import shutil
import socket
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from .cli import FRESH_LINE, ArgumentParser, progress_bar
from .config import ConfigError, check_image_size, dataset_names, dataset_spec
from .data import DataError, Sample, find_samples, load_resized, load_sample
from .files import make_folder
from .stopping import EXIT_STATUS, StopRequest, Terminated, said_of, signal_of, signals_handled_by

PACK_FILE = "pack.json"


def pack_dataset(data_root, dataset, out_root, size=None, progress=True, first=None):
    """Write the compact copy of ``dataset`` under ``<out_root>/<Dataset>``; returns its folder.
    ``first``: only the first that many images of each split.

    It is written beside the target and moved into place at the end, so an interrupted run
    leaves the earlier pack (or nothing), never a half-written folder that looks like data."""
    spec = dataset_spec(dataset)
    size = check_image_size(size) if size else spec.size
    if "*.png" not in spec.image_patterns:
        raise ConfigError(f"{spec.name}: its DATASETS entry does not accept *.png photographs, "
                          f"which a pack writes")
    source, target = Path(data_root) / spec.name, Path(out_root) / spec.name
    if source.resolve() == target.resolve():
        raise ConfigError(f"--out {out_root} is the data root itself; choose another folder")
    if target.exists() and not (target / PACK_FILE).is_file():
        raise ConfigError(f"{target} exists and is not a packed copy (no {PACK_FILE}); "
                          f"choose another --out, nothing was written")
    if first is not None and first < 1:
        raise ConfigError(f"--first {first}: give at least 1 image")
    subset = pack_subset(read_pack_info(data_root, spec))
    if subset:
        raise ConfigError(f"{source} holds only {subset}; pack the original data")
    check_pack_size(data_root, spec, size)  # re-packing a pack at another size would resize twice
    test_samples, training_samples = (find_samples(data_root, spec, split) for split in ("test", "training"))
    if first is not None and first >= max(len(test_samples), len(training_samples)):
        first = None  # it cuts nothing: the whole data set, and pack.json says nothing of --first
    test_samples, training_samples = test_samples[:first], training_samples[:first]
    make_folder(out_root, "--out")  # only now: a wrong --data-root leaves no empty --out behind

    me = f"{socket.gethostname()}-{os.getpid()}"  # the host too: an --out shared over the network
    partial, earlier = (target.with_name(f"{target.name}.{kind}-{me}") for kind in ("partial", "old"))
    for kind in ("partial", "old"):  # ours, and those of packs killed here (LES-AV: the prefix has a '-' itself)
        prefix = f"{target.name}.{kind}-"
        for left in target.parent.glob(prefix + "*"):
            if left == partial or not _running_here(left.name[len(prefix):]):
                shutil.rmtree(left, ignore_errors=True)
    try:
        # The test split first: a bad test file is found before minutes of resizing.
        test = _copy_test(test_samples, partial, progress)
        training = _pack_training(training_samples, size, partial, progress)
        info = {"dataset": spec.name, "training_size": list(size), "source": str(source.resolve()),
                "training": training, "test": test,
                "note": "training split resized to the network size (lossless); test split as it is"}
        if first is not None:
            info.update(first=first, note=info["note"] + f"; only the first {first} images of each split")
        (partial / PACK_FILE).write_text(json.dumps(info, indent=1))
        if target.exists():  # an earlier pack: set aside, replaced, then removed (never half-deleted in place)
            target.rename(earlier)
        partial.rename(target)
    except BaseException:
        if earlier.exists() and not target.exists():  # stopped between the two renames: the earlier one back
            earlier.rename(target)
        raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    shutil.rmtree(earlier, ignore_errors=True)
    return target


def _pack_training(samples, size, target, progress):
    """Each training sample at the network size, read back through the loader and compared."""
    for sample in progress_bar(samples, desc=f"training split at {size[0]} x {size[1]}", disable=not progress):
        image, label, fov = load_resized(sample, size)
        copy = Sample(sample.name, *(target / "training" / folder / name for folder, name in (
            ("images", f"{sample.name}.png"),
            ("1st_manual", sample.label.name),
            ("mask", sample.mask.name))))
        for path in (copy.image, copy.label, copy.mask):
            path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(copy.image)
        Image.fromarray(label).save(copy.label)
        Image.fromarray(fov).save(copy.mask)  # bilevel (mode 1): small in any format
        again = load_resized(copy, size)
        if not all(np.array_equal(a, b) for a, b in zip((image, label, fov), again, strict=True)):
            raise DataError(f"{copy.image}: the written copy does not read back identically")
    return len(samples)


def _copy_test(samples, target, progress):
    """Each test sample as it is, after the checks the test will make (decodes, label values
    0..3, sizes), so that a bad file is found here and not on the other machine."""
    for sample in progress_bar(samples, desc="test split, checked and copied", disable=not progress):
        load_sample(sample)
        for path in (sample.image, sample.label, sample.mask):
            dest = target / "test" / path.parent.name / path.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest)
    return len(samples)


def read_pack_info(data_root, spec):
    """The pack's description (``pack.json``), or None where ``data_root`` holds original data."""
    info_path = Path(data_root) / spec.name / PACK_FILE
    if not info_path.is_file():
        return None
    try:
        info = json.loads(info_path.read_text())
        tuple(info["training_size"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{info_path}: unreadable pack description ({exc})") from None
    return info


def check_pack_size(data_root, spec, size, size_option="--image-size {w} {h}"):
    """A packed copy holds its training split at one size only: training at another would
    resize the already-resized photographs, silently losing detail. Returns the pack's
    description, or None for original data. ``size_option``: how the caller's user sets the size."""
    info = read_pack_info(data_root, spec)
    if info is None:
        return None
    packed = tuple(info["training_size"])
    if packed != tuple(size):
        raise DataError(f"{Path(data_root) / spec.name} is a copy packed at {packed[0]} x {packed[1]} "
                        f"(scripts/pack.py): use it with {size_option.format(w=packed[0], h=packed[1])}, or "
                        f"pack the original data with --image-size {size[0]} {size[1]}")
    return info


def pack_subset(info):
    """What a pack made with --first holds ("the first N images of each split (...)"), or None
    for a whole data set (``info``: read_pack_info's, None for original data)."""
    if info and info.get("first"):
        return f"the first {info['first']} images of each split (scripts.pack --first)"
    return None


def _running_here(owner: str) -> bool:
    """Whether the pack that owns a .partial-<host>-<pid> (or, of older versions, .partial-<pid>)
    folder may still be running: on another host it may, here only if its process does."""
    host, _, pid = owner.rpartition("-")
    if host and host != socket.gethostname():
        return True
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:  # another user's process
        return True
    return True


def folder_mib(path):
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file()) / 2 ** 20


def main(argv=None):
    p = ArgumentParser(prog="python -m scripts.pack", description=__doc__)
    p.add_argument("--dataset", required=True, help=dataset_names())
    p.add_argument("--data-root", default="./data", help="where the original data set is (default ./data)")
    p.add_argument("--out", required=True, help="the copy goes to <out>/<Dataset> (replaced if present)")
    p.add_argument("--image-size", type=int, nargs=2, metavar=("W", "H"), default=None,
                   help="network input size of the training split (default: the data set's)")
    p.add_argument("--first", type=int, default=None, metavar="N",
                   help="only the first N images of each split, by name (for benchmarks; train.py notes "
                        "such a pack, reproduce.py refuses it)")
    args = p.parse_args(argv)
    with signals_handled_by(StopRequest()):  # Ctrl-C, SIGTERM: the partial copy removed, one line
        try:
            target = pack_dataset(args.data_root, args.dataset, args.out, args.image_size, first=args.first)
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except (KeyboardInterrupt, Terminated) as exc:
            print(f"{FRESH_LINE}{said_of(exc)}: pack stopped; {Path(args.out) / dataset_spec(args.dataset).name} is "
                  f"as it was (an earlier pack there is kept)", file=sys.stderr)
            return EXIT_STATUS[signal_of(exc)]
    size = f" --image-size {args.image_size[0]} {args.image_size[1]}" if args.image_size else ""
    print(f"{target}: {folder_mib(target):.1f} MiB, from {folder_mib(Path(args.data_root) / target.name):.1f} MiB "
          f"(train with --data-root {args.out}{size})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
