"""One place for the facts that differ between data sets and between the two variants, and
the run configuration.

Everything data-set specific (folder, file names, network input size) lives in ``DATASETS``;
no other module branches on a data set's name. What tells the variants apart as data (their
output channels, their default fusion) lives in ``VARIANTS``.
"""
import argparse
import difflib
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Optional, Tuple


class ConfigError(ValueError):
    """What the user can act on, printed as one line with exit status 2: a wrong option, and (as
    the base of DataError, CheckpointError and train.py's NonFiniteLoss) a bad data file, a bad
    checkpoint, a loss gone non-finite. Everything else is a bug and keeps its traceback."""


@dataclass(frozen=True)
class DatasetSpec:
    name: str                   # canonical folder name under the data root
    image_patterns: Tuple[str, ...]  # globs of photographs in <split>/images, any case (PNG: scripts/pack.py copies)
    label_name: str             # label file in <split>/1st_manual, from the image stem
    mask_name: str              # FOV mask file in <split>/mask, from the image stem
    size: Tuple[int, int]       # network input (W, H), multiples of 16
    aliases: Tuple[str, ...] = ()
    where: str = "README, section Data"  # where to get it: said when its folder is missing
    test_images: Optional[int] = None    # in the published test split; test.py notes another count


DATASETS = {spec.name: spec for spec in (
    DatasetSpec("DRIVE_AV", ("*.tif", "*.png"), "{stem}.png", "{stem}_mask.gif", (592, 592), ("DRIVE-AV",),
                test_images=20),
    DatasetSpec("LES-AV", ("*.png",), "{stem}.png", "{stem}_mask.gif", (800, 720), ("LES_AV",), test_images=11),
    DatasetSpec("HRF-AV", ("*.JPG", "*.jpg", "*.png"), "{stem}_AVmanual.png", "{stem}_mask.tif", (880, 592),
                ("HRF_AV",), test_images=21),
    # Made by `python -m scripts.synthetic`: lets the pipeline run without the real data.
    DatasetSpec("SYNTHETIC", ("*.png",), "{stem}.png", "{stem}_mask.png", (256, 256),
                where="make it with python -m scripts.synthetic --out ./data-synthetic, then "
                      "--data-root ./data-synthetic"),
)}
UNIFORM_SIZE = (720, 720)  # --uniform True: one size for every data set


def dataset_names() -> str:
    """The data sets and their aliases, for --help: "DRIVE_AV (or DRIVE-AV), LES-AV (or LES_AV), ...; any case"."""
    return ", ".join(s.name + (f" (or {', '.join(s.aliases)})" if s.aliases else "")
                     for s in DATASETS.values()) + "; in any case"


def dataset_spec(name: str) -> DatasetSpec:
    for spec in DATASETS.values():  # any case: drive_av, hrf-av
        if name.upper() in (n.upper() for n in (spec.name, *spec.aliases)):
            return spec
    names = [n for s in DATASETS.values() for n in (s.name, *s.aliases)]
    near = [s.name for s in DATASETS.values() if any(
        n.upper().startswith(name.upper()) or difflib.get_close_matches(name.upper(), [n.upper()], cutoff=0.75)
        for n in (s.name, *s.aliases))] if name.strip() else []
    hint = f" (did you mean {' or '.join(near)}?)" if near else ""
    raise ConfigError(f"unknown data set {name!r}{hint}; known, in any case: {', '.join(names)} (one of your own: "
                      f"a row in DATASETS, scripts/config.py; README, section Data)")


def saved_dataset_name(name: Optional[str]) -> Optional[str]:
    """The canonical name of the data set a saved configuration names (DRIVE-AV -> DRIVE_AV);
    a name this version does not know as saved; None when none is saved."""
    if not name:
        return None
    try:
        return dataset_spec(name).name
    except ConfigError:
        return name


def network_input_size(image_size, saved: dict, fallback, uniform=False) -> Tuple[int, int]:
    """The size saved networks predict at: --image-size when given, else --uniform's size, else the
    size they were trained at (their saved configuration), else ``fallback``: a size, or a data
    set's row, whose size is checked when it is used (a row of one's own may be wrong)."""
    if image_size:
        return check_image_size(image_size)
    if uniform:
        return UNIFORM_SIZE
    if saved.get("image_size"):
        return check_image_size(saved["image_size"])
    if isinstance(fallback, DatasetSpec):
        try:
            return check_image_size(fallback.size)
        except (ConfigError, TypeError, ValueError):
            raise ConfigError(f"DATASETS row {fallback.name} (scripts/config.py): its size {fallback.size} must be "
                              f"(W, H), positive multiples of 16 (the encoder halves it four times), or give "
                              f"--image-size") from None
    return fallback


def check_image_size(size) -> Tuple[int, int]:
    w, h = (int(v) for v in size)
    if w <= 0 or h <= 0 or w % 16 or h % 16:
        raise ConfigError(f"image size {w} x {h} must be positive multiples of 16 "
                          f"(the encoder halves it four times)")
    return w, h


@dataclass(frozen=True)
class Variant:
    channels: Tuple[str, ...]   # the networks' output channels, in order (DESIGN.md section 3)
    fusion: str                 # how G merges the branch outputs when no --fusion is given


VARIANTS = {"sigmoid": Variant(("artery", "uncertain", "vein"), "concat"),
            "softmax": Variant(("background", "artery", "vein", "uncertain"), "mean")}


def fusion_or_default(activation: str, fusion: Optional[str]) -> str:
    """The fusion asked for, or the variant's own when none is (``--fusion`` not given, or a
    configuration saved without one)."""
    return fusion or VARIANTS[activation].fusion


def str2bool(text):
    """argparse type for True/False options (the original's --uniform True)."""
    if str(text).lower() in ("true", "1", "yes", "y"):
        return True
    if str(text).lower() in ("false", "0", "no", "n"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {text!r}")


def seed_run_name(job_name: str, seed: int) -> str:
    """The run of one seed of a job: <job_name>_seed<seed> (train.sh names its runs alike)."""
    return f"{job_name}_seed{seed}"


def split_seed_run_name(name: str) -> Optional[Tuple[str, int]]:
    """(job_name, seed) of a run named by ``seed_run_name``; None for another name."""
    match = re.fullmatch(r"(.+)_seed(\d+)", name)
    return (match.group(1), int(match.group(2))) if match else None


def tensorboard_dir(runs_dir, dataset: str, job_name: str) -> Path:
    """A run's TensorBoard folder: <runs-dir>/<Dataset>_<job_name>."""
    return Path(runs_dir) / f"{dataset}_{job_name}"


@dataclass
class RunConfig:
    """Everything a training run depends on; saved inside every checkpoint.

    The defaults of the schedule (240 epochs, batch 6, lr 2e-4, 5 % validation) are the
    original code's Python defaults (DESIGN.md section 4); the published schedule (1500
    epochs, batch 2, lr 8e-4, 10 %) is what train.sh passes."""
    dataset: str = "DRIVE_AV"
    data_root: str = "./data"
    job_name: str = "default"
    activation: str = "sigmoid"      # 'sigmoid' or 'softmax' (DESIGN.md section 3)
    fusion: Optional[str] = None     # None: the variant's fusion; 'none': ablation without branches
    base_width: int = 32
    image_size: Optional[Tuple[int, int]] = None  # (W, H); None: the data set's own size
    uniform: bool = False
    epochs: int = 240
    batch_size: int = 6
    learning_rate: float = 2e-4
    validation: float = 5.0          # percent of training images held out
    alpha: float = 0.5               # MSE weight
    beta: float = 1.1                # segmentation loss weight
    gamma: float = 0.08              # adversarial weight
    seed: int = 42
    rotation_step: int = 3           # degrees; 3 (paper) or 90 (later version)
    amp: bool = True                 # mixed precision where native (scripts/device.py)
    amp_discriminator: bool = True   # under amp, D too; False: D in fp32, the generators mixed
    tf32: bool = False               # CUDA: fp32 convolutions/matmuls may use TF32 (the paper's T4 had none)
    compile: bool = False            # torch.compile the four networks (slow first steps)
    memory_check: bool = True        # CPU: refuse a run whose step needs more than the machine's memory
    log_every: int = 10              # training steps between scalar logs
    image_every: int = 10            # epochs between TensorBoard pictures of the mixed segments
    save_every: float = 5.0          # minutes between saves of last.pth (0: every epoch)
    time_limit: Optional[float] = None  # minutes; stop before an epoch that would end later (None: no limit)
    cache_dir: str = "./.cache"
    device: str = ""                 # '' -> cuda if available else cpu
    initialised_from: Optional[str] = None  # --load: the weights G, G_A, G_V started from (train.py records them)

    @property
    def spec(self) -> DatasetSpec:
        return dataset_spec(self.dataset)

    @property
    def input_size(self) -> Tuple[int, int]:
        return network_input_size(self.image_size, {}, self.spec, self.uniform)

    def run_dir(self, output_root) -> Path:
        """The run folder: <output-root>/<Dataset>/<job_name> (checkpoints and last.pth)."""
        return Path(output_root) / self.spec.name / self.job_name

    @property
    def fusion_mode(self) -> str:
        return fusion_or_default(self.activation, self.fusion)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["image_size"] = list(self.input_size)
        d["fusion"] = self.fusion_mode
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


if __name__ == "__main__":
    # `python -m scripts.config NAME` prints the data set's folder name (an alias such as DRIVE-AV
    # names DRIVE_AV), or one error line with exit status 2: for the shell scripts.
    import sys
    if len(sys.argv) > 1 and sys.argv[1] in ("-h", "--help"):
        print("usage: python -m scripts.config NAME\n\nPrints the folder name of data set NAME (any case, or an "
              "alias: DRIVE-AV -> DRIVE_AV), or one error line and exit status 2. Used by the shell scripts.")
        sys.exit(0)
    if len(sys.argv) != 2:
        print("error: give one data set name: python -m scripts.config NAME; " + dataset_names(), file=sys.stderr)
        sys.exit(2)
    try:
        print(dataset_spec(sys.argv[1]).name)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
