"""Speed and memory of training, inference, testing and data loading, plain vs tuned.

Each configuration runs in its own child process (so its peak RSS is its own) and is timed
after warm-up:
  plain  fp32, contiguous memory, photographs decoded from file for every batch and test
         image, metrics by one boolean pass per class and sort-based AUCs, PNGs at the default
         compression, no segment metric, the C library's default memory allocation
  tuned  the project's defaults: decoded-once cache held on the device, channels_last (in
         training where it is faster: not for fp32 on CPUs without AVX-512), mixed
         precision for training where the hardware has it and it pays (CUDA; CPUs with
         AVX512-BF16/AMX where bf16 is measured faster: scripts/device.py), fused Adam on
         CUDA, fp32 evaluation as test.py runs it (BatchNorm folded into the convolutions;
         test.py's own per-image code, segment metric included), vectorised metrics, fast
         PNG compression, freed memory kept for reuse (scripts/device.py,
         keep_freed_memory), test images evaluated at full size in threads (test.py's
         --workers; the row over --test-images); inference and test.py are also timed with
         --amp; --compile adds torch.compile to training and times predict.py --compile
         (inductor, weights frozen) and its compile time
It prints a table and writes JSON (machine, torch version, commit, settings, results, ratios).

Example:  python benchmarks/benchmark.py --dataset DRIVE_AV --device cpu --steps 2

Single runs on a shared machine vary by 10-30 %; at tiny sizes (--image-size 64 64) the numbers
measure overheads, not the networks, and their ratios mean little.
"""
import argparse
import functools
import json
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from scripts import metrics  # noqa: E402
from scripts.bfnet import Networks, Trainer  # noqa: E402
from scripts.cli import ArgumentParser  # noqa: E402
from scripts.config import VARIANTS, ConfigError, DatasetSpec, RunConfig, dataset_names, dataset_spec  # noqa: E402
from scripts.data import (augment, find_samples, load_resized, load_sample, load_tensor_set,  # noqa: E402
                          normalize)
from scripts.device import (MEMORY_FORMAT, amp_dtype_for, describe_precision, keep_freed_memory, no_amp_reason,  # noqa: E402
                            pick_device, release_freed_memory, set_tf32, training_memory_format)
from scripts.evaluate import (compile_for_inference, default_workers, evaluate_images,  # noqa: E402
                             full_size_picture, predict_probs)
from scripts.pack import pack_subset, read_pack_info  # noqa: E402
from scripts.provenance import commit, machine  # noqa: E402


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, repeat):
    sync(device)
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    sync(device)
    return (time.perf_counter() - start) / repeat


def sorted_auc(scores, truth):
    """ROC AUC by ranks and average precision by sorting: the general-purpose way."""
    from scipy.stats import rankdata
    p, n = truth.sum(), (~truth).sum()
    if p == 0 or n == 0:
        return 0.0, 0.0
    roc = (rankdata(scores)[truth].sum() - p * (p + 1) / 2) / (p * n)
    order = np.argsort(-scores, kind="stable")
    s, t = scores[order], truth[order]
    last = np.r_[s[1:] != s[:-1], True]          # last index of each distinct score
    tp, fp = np.cumsum(t)[last], np.cumsum(~t)[last]
    recall = np.r_[0, tp / p]
    return roc, float(np.sum(np.diff(recall) * tp / (tp + fp)))


def straightforward_metrics(label, rgb, fov):
    """The same numbers as metrics.evaluate_image, one boolean pass per class and count, and
    sort-based probability AUCs (what per-pixel library calls do)."""
    maps = metrics.decode_prediction(rgb)
    out, weights = {}, []
    for value, name in enumerate(metrics.CLASS_NAMES, start=1):
        t, p = (label == value)[fov], maps[name][fov]
        out[name] = metrics.binary_scores((t & p).sum(), (~t & p).sum(), (t & ~p).sum(), (~t & ~p).sum())
        out[name]["auc_prob"] = sorted_auc(rgb[..., metrics.CHANNEL[name]][fov].astype(np.float64), t)
        weights.append(t.sum())
    return out, weights


PICTURES = ROOT / ".cache" / "benchmark" / "png"  # the test rows' pictures


@dataclass
class Setting:
    """What every measurement of one configuration shares."""
    args: argparse.Namespace
    tuned: bool                        # the project's defaults; False: the plain configuration
    device: torch.device
    spec: DatasetSpec
    cfg: RunConfig
    amp: Optional[torch.dtype]         # training's mixed precision (None: fp32)
    memory_format: torch.memory_format  # training's
    samples: list                      # training photographs timed
    cache: Optional[Path]              # tuned: the decoded-once cache; plain decodes from file

    @property
    def size(self):
        return self.cfg.input_size


def setting_of(args) -> Setting:
    tuned = args.config == "tuned"
    device = torch.device(args.device)
    spec = dataset_spec(args.dataset)
    cfg = RunConfig(dataset=spec.name, activation=args.activation, base_width=args.base_width,
                    image_size=tuple(args.image_size) if args.image_size else None, batch_size=args.batch_size,
                    amp_discriminator=not args.no_amp_discriminator, tf32=args.tf32)
    amp = amp_dtype_for(device, tuned)  # training; evaluation is fp32 unless --amp
    # tuned: train.py's layout for this device and precision (channels_last for evaluation, as test.py)
    memory_format = training_memory_format(device, amp) if tuned else torch.contiguous_format
    return Setting(args, tuned, device, spec, cfg, amp, memory_format,
                   samples=find_samples(args.data_root, spec, "training")[:max(args.batch_size, 4)],
                   cache=ROOT / ".cache" / "benchmark" / spec.name if tuned else None)


def worker(args):
    """One configuration, in a child process of its own: its measurements as a JSON line on stdout."""
    s = setting_of(args)
    torch.manual_seed(0)
    if s.device.type == "cuda":
        torch.backends.cudnn.benchmark = s.tuned
        set_tf32(args.tf32)  # off: true fp32 in plain's training, as the paper's T4 (no TF32)
    kept = s.tuned and keep_freed_memory()  # as train.py, test.py and predict.py do
    result = {"training_precision": describe_precision(s.amp, s.cfg.amp_discriminator,
                                                       args.tf32 and s.device.type == "cuda"),
              "training_memory_format": "channels_last" if s.memory_format == torch.channels_last else "contiguous",
              "freed_memory_kept": kept}
    result.update(measure_data_loading(s))
    nets = Networks(s.cfg.activation, s.cfg.base_width).to(s.device, memory_format=s.memory_format)
    if not args.skip_train:
        result.update(measure_training(s, nets))
    result.update(measure_inference(s, nets))
    result.update(measure_test_image(s, nets))
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if s.device.type == "cuda":  # before the test-set row, as peak_rss_mib
        result["cuda_max_allocated_mib"] = torch.cuda.max_memory_allocated(s.device) / 2 ** 20
    result.update(measure_test_set(s, nets))
    print(json.dumps(result))


def measure_data_loading(s: Setting) -> dict:
    """Data loading per image: decode + resize from file (plain) or read the cache (tuned)."""
    if s.cache:
        load_tensor_set(s.samples, s.size, s.cache)  # fill the cache (not timed)
    start = time.perf_counter()
    for sample in s.samples:
        load_resized(sample, s.size, s.cache)
    return {"data_load_s_per_image": (time.perf_counter() - start) / len(s.samples)}


def measure_training(s: Setting, nets) -> dict:
    """The whole training step of DESIGN.md section 4 (the four networks), batch --batch-size:
    tuned from the data held on the device, plain decoding every photograph of the batch again."""
    args, device = s.args, s.device
    if s.tuned and args.compile:  # in place and before the Trainer, which holds the modules (as train.py)
        for m in (nets.G, nets.G_A, nets.G_V, nets.D):
            m.compile()
    trainer = Trainer(nets, s.cfg, s.amp, fused=s.tuned and device.type == "cuda")
    gen = torch.Generator().manual_seed(0)
    resident = load_tensor_set(s.samples, s.size, s.cache).to(device) if s.tuned else None

    def train_step():
        idx = torch.arange(args.batch_size)
        if s.tuned:
            images, labels, fovs = resident.images[idx.to(device)], resident.labels[idx.to(device)], None
        else:  # decode every photograph of the batch again, as the original loader did
            items = [load_resized(s.samples[i], s.size) for i in idx.tolist()]
            images = torch.from_numpy(np.stack([i[0] for i in items])).permute(0, 3, 1, 2).to(device)
            labels = torch.from_numpy(np.stack([i[1] for i in items])).to(device)
            fovs = torch.from_numpy(np.stack([i[2] for i in items])).to(device)  # turned too, as there
        x, y, _ = augment(images.float() / 255, labels.long(), fovs, gen)
        trainer.step(normalize(x).contiguous(memory_format=s.memory_format), y)

    nets.train()
    for _ in range(args.warmup):
        train_step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    result = {"train_s_per_step": timed(train_step, device, args.steps)}
    result["train_images_per_s"] = args.batch_size / result["train_s_per_step"]
    if device.type == "cuda":  # the training steps' own peak (the later rows' autotuning adds to the overall one)
        result["cuda_train_max_allocated_mib"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
    return result


def measure_inference(s: Setting, nets) -> dict:
    """Inference at the network size, one image; tuned as test.py runs it (BatchNorm folded, fp32,
    channels_last) and with --amp; with --compile also predict.py --compile and its compile time.
    Leaves ``nets`` as test.py holds them (tuned: folded)."""
    args, device, result = s.args, s.device, {}
    if s.tuned:
        nets.fold_for_inference()
    nets.to(memory_format=MEMORY_FORMAT if s.tuned else torch.contiguous_format)
    images = load_tensor_set(s.samples[:1], s.size, s.cache).images
    for key, dtype in (("inference_s_per_image", None), ("inference_amp_s_per_image", s.amp)):
        if key.startswith("inference_amp") and not (s.tuned and s.amp):
            continue
        infer = functools.partial(predict_probs, nets, images, 1, device, dtype, s.tuned)
        for _ in range(args.warmup):
            infer()
        result[key] = timed(infer, device, args.steps)
    if s.tuned and args.compile:  # predict.py --compile: inductor, weights frozen
        frozen = Networks(s.cfg.activation, s.cfg.base_width).to(device, memory_format=MEMORY_FORMAT)
        start = time.perf_counter()
        compile_for_inference(frozen)
        predict_probs(frozen, images, 1, device)
        result["inference_compile_s"] = time.perf_counter() - start
        result["inference_compiled_s_per_image"] = timed(lambda: predict_probs(frozen, images, 1, device),
                                                         device, args.steps)
    return result


def measure_test_image(s: Setting, nets) -> dict:
    """test.py per image (input, network, resize back, FOV, all metrics, the PNGs), and its
    metrics alone: plain the original's way (everything decoded again, metrics per class),
    tuned test.py's own code (segment metric included), also with --amp."""
    args, device, size, activation = s.args, s.device, s.size, s.cfg.activation
    sample = find_samples(args.data_root, s.spec, "test")[0]

    def tuned_test_image(dtype):
        probs = predict_probs(nets, load_tensor_set([sample], size, s.cache).images, 1, device, dtype)
        for _ in evaluate_images([sample], [probs], [activation], [PICTURES / "tuned"], 1):
            pass

    runs = [("test_s_per_image", lambda: plain_test_image(s, nets, sample))]
    if s.tuned:
        runs = [("test_s_per_image", lambda: tuned_test_image(None))]
        if s.amp:
            runs.append(("test_amp_s_per_image", lambda: tuned_test_image(s.amp)))
    result = {}
    for key, fn in runs:
        fn()  # warm-up (and fills the cache)
        result[key] = timed(fn, device, max(1, args.steps))
    _, label, fov = load_sample(sample)
    raw = full_size_picture(predict_probs(nets, load_tensor_set([sample], size, s.cache).images, 1, device)[0],
                            (label.shape[1], label.shape[0]), fov, activation)
    start = time.perf_counter()
    (metrics.evaluate_image if s.tuned else straightforward_metrics)(label, raw, fov)
    result["metrics_s_per_image"] = time.perf_counter() - start
    return result


def plain_test_image(s: Setting, nets, sample):
    """One test image the original's way: everything decoded again, the network, the resize back,
    metrics by one pass per class, the PNGs at the default compression."""
    _, label, fov = load_sample(sample)
    probs = predict_probs(nets, load_tensor_set([sample], s.size).images, 1, s.device, None, channels_last=False)
    raw = full_size_picture(probs[0], (label.shape[1], label.shape[0]), fov, s.cfg.activation)
    small = (probs[0, :3] * 255).byte().permute(1, 2, 0).numpy()
    straightforward_metrics(label, raw, fov)
    PICTURES.mkdir(parents=True, exist_ok=True)
    Image.fromarray(raw).save(PICTURES / f"plain_raw_{sample.name}.png")
    Image.fromarray(small).save(PICTURES / f"plain_small_{sample.name}.png")


def measure_test_set(s: Setting, nets) -> dict:
    """test.py over --test-images test images, as a whole: plain one image after the other (its
    per-image way above); tuned as test.py runs, every prediction first, then evaluate_images
    with its default workers (the networks' kept memory given back in between)."""
    args, device, size = s.args, s.device, s.size
    test_set = find_samples(args.data_root, s.spec, "test")[:args.test_images]
    if s.tuned:  # fill the cache and, on CUDA, let cuDNN autotune batch 2's shapes (not timed)
        predict_probs(nets, load_tensor_set(test_set, size, s.cache).images[:2], 2, device)

    def test_set_run():
        if not s.tuned:
            for sample in test_set:
                plain_test_image(s, nets, sample)
            return
        probs = predict_probs(nets, load_tensor_set(test_set, size, s.cache).images, 2, device)
        release_freed_memory()
        for _ in evaluate_images(test_set, [probs], [s.cfg.activation], [PICTURES / "tuned_set"], default_workers()):
            pass
    return {"test_set_images": len(test_set), "test_set_workers": default_workers() if s.tuned else 1,
            "test_set_s_per_image": timed(test_set_run, device, 1) / len(test_set),
            "test_set_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}  # all of it


ROWS = [("train_s_per_step", "training step (s)", False),
        ("train_images_per_s", "training throughput (images/s)", True),
        ("inference_s_per_image", "inference at network size (s/image)", False),
        ("inference_amp_s_per_image", "inference with --amp (s/image)", False),
        ("inference_compiled_s_per_image", "inference, predict.py --compile (s/image)", False),
        ("inference_compile_s", "  its compile time (s)", False),
        ("test_s_per_image", "test.py end to end (s/image)", False),
        ("metrics_s_per_image", "  of which metrics (s/image)", False),
        ("test_amp_s_per_image", "test.py with --amp (s/image)", False),
        ("test_set_s_per_image", "test.py over --test-images (s/image)", False),
        ("data_load_s_per_image", "data loading (s/image)", False),
        ("peak_rss_mib", "peak RSS (MiB)", False),
        ("test_set_peak_rss_mib", "  and after the test-set row (MiB)", False),
        ("cuda_train_max_allocated_mib", "CUDA max allocated in training (MiB)", False),
        ("cuda_max_allocated_mib", "CUDA max allocated (MiB)", False)]


def main(argv=None):
    p = ArgumentParser(prog="python benchmarks/benchmark.py", description=__doc__)
    p.add_argument("--dataset", default="DRIVE_AV", help=dataset_names() + " (sets the input size and the "
                                                          "test image; default %(default)s)")
    p.add_argument("--activation", choices=list(VARIANTS), default="sigmoid", help="variant (default %(default)s)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="cpu, cuda, cuda:1 (default: cuda when present, else cpu)")
    p.add_argument("--image-size", type=int, nargs=2, default=None, metavar=("W", "H"),
                   help="network input (default: the data set's)")
    p.add_argument("--base-width", type=int, default=32, help="network width (default %(default)s, the paper's)")
    p.add_argument("--batch-size", type=int, default=2, help="training batch (default %(default)s, the paper's)")
    p.add_argument("--steps", type=int, default=3, help="timed repetitions (default %(default)s)")
    p.add_argument("--warmup", type=int, default=1, help="untimed repetitions first (default %(default)s)")
    p.add_argument("--test-images", type=int, default=4, dest="test_images",
                   help="test images of the whole-test.py row (tuned: images evaluated in threads, as test.py; "
                        "default %(default)s)")
    p.add_argument("--compile", action="store_true", help="torch.compile the networks in the tuned run")
    p.add_argument("--no-amp-discriminator", action="store_true",
                   help="tuned training with D in fp32, the generators mixed (train.py's --no-amp-discriminator)")
    p.add_argument("--tf32", action="store_true",
                   help="CUDA: let fp32 training use TF32 in both runs (train.py's --tf32; default true fp32)")
    p.add_argument("--skip-train", action="store_true", help="measure inference, test and loading only")
    p.add_argument("--data-root", default=str(ROOT / "data"), help="data folder or pack (default ./data)")
    p.add_argument("--configs", nargs="+", default=["plain", "tuned"], choices=["plain", "tuned"],
                   help="which configurations to run (default: both, side by side)")
    p.add_argument("--out", default=None, help="JSON file (default benchmarks/results/<dataset>_<device>_<date-time>"
                                               ".json: a new file, never one of the recorded results)")
    p.add_argument("--config", help=argparse.SUPPRESS)  # set in the child processes
    args = p.parse_args(argv)
    if args.config:
        return worker(args)

    try:  # what the children would fail on, in one line before they start
        spec = dataset_spec(args.dataset)
        _ = RunConfig(dataset=spec.name, base_width=args.base_width, batch_size=args.batch_size,
                      image_size=tuple(args.image_size) if args.image_size else None).input_size  # checks it
        if min(args.steps, args.batch_size, args.test_images) < 1 or args.warmup < 0:
            raise ConfigError("--steps, --batch-size and --test-images must be at least 1, --warmup 0 or more")
        pick_device(args.device)
        for split in ("training", "test"):
            find_samples(args.data_root, spec, split)
        pack = read_pack_info(args.data_root, spec)  # recorded in the JSON
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(args.out) if args.out else (ROOT / "benchmarks" / "results" /
                                           f"{spec.name}_{args.device.split(':')[0]}_{stamp}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    results = {}
    for config in args.configs:
        child = [sys.executable, __file__, *[a for a in (argv or sys.argv[1:])], "--config", config]
        proc = subprocess.run(child, capture_output=True, text=True)
        if proc.returncode:  # the child's traceback (an unforeseen failure) is kept: it says where
            sys.exit(f"{config} run failed:\n{proc.stderr[-3000:]}")
        results[config] = json.loads(proc.stdout.strip().splitlines()[-1])
        report = make_report(args, results, pack)
        out.write_text(json.dumps(report, indent=2))  # after each configuration: a stopped run keeps the first
    print_table(args, report, pack)
    print(f"wrote {out}")


def make_report(args, results, pack=None) -> dict:
    """The JSON: machine, settings, each configuration's results and tuned's gain over plain."""
    ratios = {}
    if {"plain", "tuned"} <= set(results):
        for key, _, higher_better in ROWS:  # --amp and --compile rows are compared with plain's fp32 row
            p_, t_ = results["plain"].get(key.replace("_amp", "").replace("_compiled", "")), results["tuned"].get(key)
            if p_ and t_:
                ratios[key] = t_ / p_ if higher_better else p_ / t_   # > 1: tuned is better
    size = RunConfig(dataset=dataset_spec(args.dataset).name,
                     image_size=tuple(args.image_size) if args.image_size else None).input_size
    return {"machine": {**machine(args.device), "commit": commit()}, "settings": {
        "dataset": args.dataset, "activation": args.activation, "device": args.device, "image_size": list(size),
        "base_width": args.base_width, "batch_size": args.batch_size, "steps": args.steps, "warmup": args.warmup,
        "compile": args.compile, "no_amp_discriminator": args.no_amp_discriminator,
        "tf32": args.tf32, "skip_train": args.skip_train,
        "test_images": args.test_images, "data_root": str(args.data_root),
        "pack_first": (pack or {}).get("first")},
        "results": results, "speedup_tuned_over_plain": ratios}


def print_table(args, report, pack=None):
    results, ratios, size = report["results"], report["speedup_tuned_over_plain"], report["settings"]["image_size"]
    print(f"{args.dataset} {size[0]}x{size[1]}, {args.activation}, width {args.base_width}, batch "
          f"{args.batch_size}, {args.device} ({report['machine'].get('gpu', report['machine']['cpu_model'])}), "
          f"torch {torch.__version__}, commit {report['machine']['commit']}")
    if not args.skip_train:
        print("training precision: " + ", ".join(f"{c} {r['training_precision']}" for c, r in results.items()))
    print(f"{'':<40}" + "".join(f"{c:>12}" for c in results) + (f"{'tuned gain':>12}" if ratios else ""))
    for key, name, _ in ROWS:
        if any(key in r for r in results.values()):
            if key == "test_set_s_per_image":  # the count there was (a small pack may hold fewer)
                name = name.replace("--test-images", f"{next(r['test_set_images'] for r in results.values() if key in r)} test images")
            print(f"{name:<40}" + "".join(f"{r[key]:>12.4g}" if key in r else f"{'':>12}" for r in results.values())
                  + (f"{ratios[key]:>11.2f}x" if key in ratios else ""))
    if ratios:
        print("tuned gain: how many times faster, or smaller in memory, tuned is than plain (above 1: tuned is better)")
    if "inference_s_per_image" in results.get("tuned", {}) and "inference_amp_s_per_image" not in results["tuned"]:
        print(f"no --amp rows: no mixed precision that pays on this device: {no_amp_reason(torch.device(args.device))}")
    if pack_subset(pack):
        print(f"note: --data-root holds only {pack_subset(pack)}")


if __name__ == "__main__":
    main()
