"""What a results file records about where and from what code its numbers came: the machine
(CPU, GPU, torch) and the commit. Used by benchmarks/benchmark.py and reproduce.py."""
import hashlib
import os
import platform
import subprocess
from pathlib import Path

import torch

from .device import cpu_bf16_speedup, cpu_has_native_bf16

ROOT = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: str = "cpu") -> dict:
    """The machine and software; ``gpu`` (with CUDA's version) when ``device`` is a CUDA device."""
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_model": cpu_model(), "cpu_native_bf16": cpu_has_native_bf16(),
            "cpu_bf16_speedup": round(cpu_bf16_speedup(), 3) if cpu_has_native_bf16() else None,
            "cpu_cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version()}
    if str(device).startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
        info["cuda"] = torch.version.cuda
    return info


def commit(default: str = "unknown") -> str:
    """The checkout's short commit hash, with '+changes' when tracked files differ from it;
    ``default`` where there is no git checkout (a copy of the tree on another machine)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        if head.returncode:
            return default
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return head.stdout.strip() + ("+changes" if dirty else "")
    except OSError:
        return default


def code_fingerprint(root: Path = ROOT) -> str:
    """SHA-256 over the project's code (every .py and .sh file of the checkout's top folder,
    scripts/ and benchmarks/, names and contents): where a copy of the tree has no .git, this
    ties a results file to a commit (compute it at that commit to compare)."""
    digest = hashlib.sha256()
    files = sorted(p for pattern in ("*.py", "*.sh", "scripts/*.py", "benchmarks/*.py") for p in root.glob(pattern))
    for path in files:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()
