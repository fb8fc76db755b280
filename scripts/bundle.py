"""Weights bundles: G, G_A and G_V with their configuration in one file, or in size-limited
shards with an index (like the large-model hubs), for sharing trained networks.

    python -m scripts.bundle export DRIVE_AV/sigmoid_seed42 bfnet_drive.pth            # one file
    python -m scripts.bundle export DRIVE_AV/sigmoid_seed42 bfnet_drive.pth --fp16     # half the size
    python -m scripts.bundle export DRIVE_AV/sigmoid_seed42 bfnet_drive.pth --shard-mib 15
        # -> bfnet_drive-00001-of-0000N.pth ... and bfnet_drive.index.json
    python -m scripts.bundle info bfnet_drive.index.json

Single file: ``{"format": "avseg-bundle", "version", "dtype", "config", "networks":
{"G": state_dict, "G_A": ..., "G_V": ...}}``. Sharded: every shard is a flat dict of tensors
named ``<network>.<parameter>`` ("G.inc.double_conv.0.weight"); the index JSON holds
``{"format": "avseg-bundle-index", "version", "dtype", "config", "metadata": {"total_size", "shards"},
"weight_map": {tensor name: shard file name}}``. Both may hold an ``"about"`` text (how the
weights were trained, what they score), kept when a bundle is exported again. Everything is read with
``torch.load(weights_only=True)``; fp16 bundles are cast back to fp32 on loading (the config
``load_any`` returns then says ``"stored_dtype": "float16"``, and a re-export keeps fp16 unless
told ``--no-fp16``).

``load_any(path)`` reads whatever a user may hold: a run folder (ours; the original
authors' plain state dicts ``CP_best_F1_{all,A,V}.pth`` or the 2021 ``CP_epoch<N>_*.pth``,
highest N), one of those network files, a bundle file, an index JSON, or a folder holding
one index JSON.
"""
import argparse
import hashlib
import json
import os
import re
import shlex
import sys
from pathlib import Path

import torch

from .bfnet import Networks
from .checkpoint import (EPOCH_FILE, FORMAT, NETWORK_FILES, CheckpointError, atomic_torch_save, build_networks,
                         check_expected, describe, epoch_files, is_state_dict, load_networks, load_state, read)
from .cli import ArgumentParser
from .config import ConfigError
from .files import atomic_write, make_folder
from .model import count_parameters

BUNDLE_FORMAT = "avseg-bundle"
INDEX_FORMAT = "avseg-bundle-index"
VERSION = 1
INDEX_SUFFIX = ".index.json"
SHARD_OVERHEAD = 64 * 1024   # zip directory and pickle of one shard file (bytes, generous)
TENSOR_OVERHEAD = 1024       # per tensor: zip entry, 64-byte alignment, pickle (generous)
# Bundles shipped with the project ($AVSEG_PRETRAINED points elsewhere, e.g. for tests).
PRETRAINED_DIR = Path(os.environ.get("AVSEG_PRETRAINED", Path(__file__).resolve().parents[1] / "pretrained"))


ABOUT_SHOWN = 200  # characters of a bundle's --about text that test.py and predict.py print each run


def about_line(about: str, source) -> str:
    """A bundle's --about text as test.py and predict.py print it: whole when short, else its
    beginning and where the whole text is (scripts.bundle info prints it)."""
    if len(about) <= ABOUT_SHOWN:
        return about
    cut = about.rfind(" ", 0, ABOUT_SHOWN)
    return (f"{about[:cut if cut > 0 else ABOUT_SHOWN].rstrip(' ,;:')} ... (all of it: python -m scripts.bundle "
            f"info {shlex.quote(str(source))})")


def pretrained_bundle(dataset="DRIVE_AV", activation="sigmoid") -> Path:
    """Where the project's shipped bundle of a data set and variant lives (it may not exist)."""
    return PRETRAINED_DIR / f"{dataset}_{activation}{INDEX_SUFFIX}"


# ----------------------------------------------------------------------------- export

def _networks_and_config(source, config=None):
    if isinstance(source, (tuple, list)):
        source, config = source
    if isinstance(source, Networks):
        if config is None:
            config = {"activation": source.activation, "fusion": source.fusion,
                      "base_width": source.base_width}
        return source, dict(config)
    nets, saved = load_any(source)
    return nets, dict(config or saved)


def _tensors(nets: Networks, fp16: bool):
    """{"G.inc...": tensor}: copies (no shared storage), floating tensors in fp16 if asked
    (a tensor that would overflow fp16 stays fp32)."""
    out = {}
    for net in nets.generator_names:
        for key, t in getattr(nets, net).state_dict().items():
            t = t.detach().cpu()
            if fp16 and t.is_floating_point():
                half = t.half()
                if torch.isfinite(half).all() or not torch.isfinite(t).all():
                    t = half
            out[f"{net}.{key}"] = t.clone().contiguous()
    return out


def _stem(out_path: Path) -> str:
    name = out_path.name
    if name.endswith(INDEX_SUFFIX):
        return name[: -len(INDEX_SUFFIX)]
    return out_path.stem


def _plan(tensors: dict, budget: int, per_tensor: int):
    shards, current, size = [], [], 0
    for name, t in tensors.items():
        cost = t.numel() * t.element_size() + per_tensor
        if cost > budget:
            raise CheckpointError(f"tensor {name} ({cost / 2**20:.3f} MiB with its index entry) does not fit "
                                  f"in the {budget / 2**20:.3f} MiB that --shard-mib leaves for tensors after a "
                                  f"shard file's own overhead: raise --shard-mib")
        if current and size + cost > budget:
            shards.append(current)
            current, size = [], 0
        current.append(name)
        size += cost
    if current:
        shards.append(current)
    return shards


def by_network(tensors: dict) -> dict:
    """Flat tensor names (``G.inc.double_conv.0.weight``) as one state dict per network
    ({'G': {'inc.double_conv.0.weight': ...}, ...})."""
    networks = {}
    for name, t in tensors.items():
        net, key = name.split(".", 1)
        networks.setdefault(net, {})[key] = t
    return networks


def export_bundle(run_dir_or_nets, out_path, fp16=None, shard_mib=None, config=None, about=None) -> Path:
    """Write G, G_A, G_V and the config as one bundle file, or (``shard_mib``) as shards of at
    most ``shard_mib`` MiB plus ``<stem>.index.json``. ``run_dir_or_nets``: anything
    ``load_any`` reads, a ``Networks`` (``config`` then gives its config dict), or a
    ``(Networks, config)`` pair. ``fp16``: store floating tensors in float16; None keeps the
    source's precision (float32 for a run folder). ``about``: how the weights were made and what they score, one
    text kept in the bundle (``info`` and predict.py print it). Returns the path to load."""
    nets, cfg = _networks_and_config(run_dir_or_nets, config)
    nets.check_not_folded()
    about = about or cfg.pop("about", None)  # re-exporting a bundle keeps its text unless given a new one
    cfg.pop("about", None)
    source_dtype = cfg.pop("stored_dtype", "float32")
    if fp16 is None:  # as the source: fp32 values of fp16-rounded weights would only double the size
        fp16 = source_dtype == "float16"
    extra = {"about": about} if about else {}
    tensors = _tensors(nets, fp16)
    dtype = "float16" if fp16 else "float32"
    out_path = Path(out_path)
    if out_path.is_dir():
        raise CheckpointError(f"{out_path} is a folder; name the bundle file (e.g. {out_path / 'bfnet.pth'})")
    make_folder(out_path.parent, "the bundle's folder")
    if shard_mib is None:
        atomic_torch_save({"format": BUNDLE_FORMAT, "version": VERSION, "dtype": dtype, "config": cfg,
                           "networks": by_network(tensors), **extra}, out_path)
        return out_path

    limit = int(float(shard_mib) * 2**20)
    if limit <= SHARD_OVERHEAD:
        raise CheckpointError(f"--shard-mib {shard_mib} is too small (at least {2 * SHARD_OVERHEAD / 2**20} MiB)")
    stem, folder = _stem(out_path), out_path.parent
    per_tensor = TENSOR_OVERHEAD
    for _ in range(4):  # re-plan with more headroom in the (unexpected) case a shard came out too big
        plan = _plan(tensors, limit - SHARD_OVERHEAD, per_tensor)
        n = len(plan)
        names = [f"{stem}-{i + 1:05d}-of-{n:05d}.pth" for i in range(n)]
        too_big = False
        for shard_name, members in zip(names, plan, strict=True):
            atomic_torch_save({k: tensors[k] for k in members}, folder / shard_name)
            too_big |= (folder / shard_name).stat().st_size > limit
        if not too_big:
            break
        for shard_name in names:
            (folder / shard_name).unlink(missing_ok=True)
        per_tensor *= 4
    else:
        raise CheckpointError(f"could not keep the shards under {shard_mib} MiB")
    index = {"format": INDEX_FORMAT, "version": VERSION, "dtype": dtype, "config": cfg, **extra,
             "metadata": {"total_size": sum(t.numel() * t.element_size() for t in tensors.values()),
                          "shards": n},
             "weight_map": {k: shard_name for shard_name, members in zip(names, plan, strict=True) for k in members}}
    index_path = folder / f"{stem}{INDEX_SUFFIX}"
    atomic_write(index_path, lambda tmp: Path(tmp).write_text(json.dumps(index, indent=1)))
    # Shards of an earlier export to the same stem with another shard count are stale now.
    stale = re.compile(rf"^{re.escape(stem)}-\d{{5}}-of-\d{{5}}\.pth$")
    for p in folder.iterdir():
        if stale.match(p.name) and p.name not in names:
            p.unlink(missing_ok=True)
    return index_path


# ----------------------------------------------------------------------------- loading

def _find_index(folder: Path):
    found = sorted(folder.glob(f"*{INDEX_SUFFIX}"))
    if len(found) > 1:
        raise CheckpointError(f"{folder} holds {len(found)} index files ({', '.join(p.name for p in found)}): name one")
    return found[0] if found else None


def _read_index(path: Path):
    try:
        index = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot read index JSON ({exc})") from None
    if not isinstance(index, dict) or index.get("format") != INDEX_FORMAT:
        raise CheckpointError(f"{path}: not a bundle index (format {INDEX_FORMAT!r} expected)")
    weight_map = index.get("weight_map")
    if not (isinstance(weight_map, dict) and weight_map
            and all(isinstance(k, str) and "." in k and isinstance(v, str) for k, v in weight_map.items())):
        raise CheckpointError(f"{path}: its weight_map (network.tensor name -> shard file) is missing or damaged")
    flat = {}
    by_shard = {}
    for name, shard in weight_map.items():
        by_shard.setdefault(shard, []).append(name)
    for shard, names in by_shard.items():
        shard_path = path.parent / shard
        if Path(shard).name != shard or not shard_path.is_file():
            raise CheckpointError(f"{path}: shard {shard_path} is missing")
        data = read(shard_path)
        if not isinstance(data, dict):
            raise CheckpointError(f"{shard_path}: not a bundle shard (a dict of tensors expected)")
        missing = [n for n in names if not torch.is_tensor(data.get(n))]
        if missing:
            raise CheckpointError(f"{shard_path}: lacks {len(missing)} tensor(s) of the index, e.g. {missing[0]}")
        flat.update({n: data[n] for n in names})
    return _bundle_config(path, index), by_network(flat)


def _bundle_config(source, bundle: dict) -> dict:
    """The bundle's config, with its ``about`` text (if any) under "about" and the precision
    its weights are stored in under "stored_dtype"."""
    if not isinstance(bundle.get("config"), dict):
        raise CheckpointError(f"{source}: a bundle without its config; is it damaged?")
    config = dict(bundle["config"])
    if bundle.get("about"):
        config["about"] = str(bundle["about"])
    config["stored_dtype"] = str(bundle.get("dtype", "float32"))
    return config


def _bundle_networks(source, bundle: dict) -> dict:
    networks = bundle.get("networks")
    if not (isinstance(networks, dict) and all(map(is_state_dict, networks.values()))):
        raise CheckpointError(f"{source}: a bundle without its networks' weights; is it damaged?")
    return networks


def _build(source, config, networks, expected=None):
    check_expected(source, config, expected)
    nets = build_networks(source, config)
    needed = set(nets.generator_names)
    if not needed <= set(networks):
        raise CheckpointError(f"{source}: holds {', '.join(sorted(networks))}, needs {', '.join(sorted(needed))}")
    for name in sorted(needed):
        state = {k: (t.float() if t.is_floating_point() else t) for k, t in networks[name].items()}
        load_state(getattr(nets, name), state, f"{source}: {name}", config)
    return nets.eval()


def load_bundle(path, expected: dict = None):
    """A bundle file, an index JSON, or a folder holding one index JSON ->
    (Networks in eval mode on the CPU, fp32; config dict)."""
    path = Path(path)
    if path.is_dir():
        index = _find_index(path)
        if index is None:
            raise CheckpointError(f"{path}: no *{INDEX_SUFFIX} in this folder")
        path = index
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    if path.name.endswith(".json"):
        config, networks = _read_index(path)
    else:
        data = read(path)
        if not isinstance(data, dict) or data.get("format") != BUNDLE_FORMAT:
            raise CheckpointError(f"{path}: not a weights bundle (format {BUNDLE_FORMAT!r} expected)")
        config, networks = _bundle_config(path, data), _bundle_networks(path, data)
    return _build(path, config, networks, expected), config


def weights_sha256(nets) -> str:
    """A fingerprint of the values of the networks prediction uses (G, and G_A, G_V unless the
    fusion is 'none'; fp32, names included), whatever file held them. D is never loaded."""
    digest = hashlib.sha256()
    for part in nets.generator_names:
        for name, tensor in sorted(getattr(nets, part).state_dict().items()):
            digest.update(f"{part}.{name}".encode())
            digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def load_any(path, expected: dict = None):
    """(Networks in eval mode, config dict) from a run folder (ours, or the original's plain
    state dicts CP_best_F1_*.pth / CP_epoch<N>_*.pth), one network file of such a folder, a
    bundle file, an index JSON or a folder with one index JSON. ``expected`` (e.g.
    {"activation": "sigmoid", "base_width": 32}): a checkpoint that disagrees raises
    ``CheckpointError`` with one line naming both."""
    path = Path(path)
    if path.is_dir():
        index = _find_index(path)
        has_networks = (path / NETWORK_FILES["G"]).is_file() or any(
            EPOCH_FILE.match(p.name) for p in path.iterdir())
        if index is not None and not has_networks:
            return load_bundle(index, expected)
        return load_networks(path, expected)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file or folder (weights: a run folder, a bundle file or an index JSON)")
    if path.name.endswith(".json"):
        return load_bundle(path, expected)
    # One network file of a run folder: load the folder's three files of that name pattern.
    match = re.match(r"^CP_epoch(\d+)_(all|A|V)\.pth$", path.name)
    if match:
        return load_networks(path.parent, expected, epoch_files(int(match.group(1))))
    if path.name in NETWORK_FILES.values():
        return load_networks(path.parent, expected, NETWORK_FILES)
    shard = re.match(r"^(.+)-\d{5}-of-\d{5}\.pth$", path.name)
    if shard and (path.parent / (shard.group(1) + INDEX_SUFFIX)).is_file():  # one piece: its index names all
        raise CheckpointError(f"{path}: one shard of a sharded bundle; give its index, "
                              f"{path.parent / (shard.group(1) + INDEX_SUFFIX)}")
    data = read(path)
    if isinstance(data, dict) and data.get("format") == BUNDLE_FORMAT:
        config = _bundle_config(path, data)
        return _build(path, config, _bundle_networks(path, data), expected), config
    if isinstance(data, dict) and data.get("format") == FORMAT:
        raise CheckpointError(f"{path}: one network of a run; name its folder {path.parent} instead")
    raise CheckpointError(f"{path}: neither a weights bundle nor a run's network file "
                          f"(expected a run folder, a bundle .pth or an {INDEX_SUFFIX})")


# ----------------------------------------------------------------------------- CLI

def earlier_bundle(out: Path, sharded: bool):
    """The file an export to ``out`` would replace (the bundle file, or a sharded bundle's
    index), or None."""
    target = out.parent / (_stem(out) + INDEX_SUFFIX) if sharded else out
    return target if target.is_file() else None  # (a folder there is export_bundle's one line)


def build_parser():
    p = ArgumentParser(prog="python -m scripts.bundle", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("export", help="write a run's G, G_A, G_V and config as one bundle (or shards)")
    e.add_argument("source", metavar="RUN_DIR", help="run folder (ours or the original CP_*.pth), bundle or index JSON")
    e.add_argument("out", metavar="OUT", help="bundle file (.pth); with --shard-mib the shards and "
                                              "<stem>.index.json go next to it")
    e.add_argument("--fp16", action=argparse.BooleanOptionalAction, default=None,
                   help="store floating tensors as float16 (half the size); default: as the source "
                        "(float32 for a run folder, a bundle's own precision)")
    e.add_argument("--shard-mib", type=float, default=None, dest="shard_mib",
                   help="split into shards of at most this many MiB plus an index JSON (e.g. 15)")
    e.add_argument("--about", default=None,
                   help="how the weights were trained and what they score (kept in the bundle, printed on use)")
    e.add_argument("--overwrite", action="store_true",
                   help="replace a bundle already at OUT (without it that is refused: nothing is written)")
    i = sub.add_parser("info", help="print what a run folder, bundle or index holds")
    i.add_argument("path", help="a run folder, a bundle .pth, an .index.json, or the authors' CP_*.pth folder")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        if args.command == "export":
            taken = earlier_bundle(Path(args.out), args.shard_mib is not None)
            if taken and not args.overwrite:
                raise ConfigError(f"{taken} exists: --overwrite replaces it, or name another OUT")
            written = export_bundle(args.source, args.out, fp16=args.fp16, shard_mib=args.shard_mib, about=args.about)
            if written.name.endswith(INDEX_SUFFIX):
                index = json.loads(written.read_text())
                shards = sorted(set(index["weight_map"].values()))
                print(f"wrote {len(shards)} shard(s) ({', '.join(shards)}) and {written}")
            else:
                print(f"wrote {written} ({written.stat().st_size / 2**20:.1f} MiB)")
        else:
            nets, cfg = load_any(args.path)
            names = nets.generator_names
            count = sum(count_parameters(getattr(nets, n)) for n in names)
            size = cfg.get("image_size")
            print(f"{args.path}: {describe(cfg)}, {count:,} parameters in {', '.join(names)}, "
                  f"input size {'x'.join(map(str, size)) if size else 'not saved'}, "
                  f"trained on {cfg.get('dataset') or 'an unsaved data set'}"
                  + (f", best validation F1 {cfg['best_val_f1']:.2f} % at epoch {cfg['best_epoch']}"
                     if cfg.get("best_epoch") and cfg.get("best_val_f1") is not None else "")
                  + (f", trained in {cfg['trained_precision']}" if cfg.get("trained_precision") else "")
                  + f", stored as {cfg.get('stored_dtype', 'float32')}")
            if cfg.get("about"):
                print(f"about: {cfg['about']}")
            if cfg.get("initialised_from"):
                print(f"initialised from: {cfg['initialised_from']}")
    except ConfigError as exc:  # CheckpointError included
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
