"""torchrun with 2 CPU processes (gloo) equals the single-process run with the same global batch."""
import subprocess
import sys

import torch

from scripts.checkpoint import load_networks
from tests.conftest import ROOT


def train(real_data, tmp_path, out, launcher):
    args = ["--dataset", "DRIVE_AV", "--data-root", str(real_data), "--epochs", "1", "--batch-size", "6",
            "--image-size", "64", "64", "--base-width", "4", "--device", "cpu", "--seed_num", "1",
            "--job_name", "ddp", "--cache-dir", str(tmp_path / "cache"), "--output-root", str(tmp_path / out),
            "--runs-dir", str(tmp_path / out / "runs"), "--learning-rate", "1e-3",
            "--no-amp"]  # fp32 on every CPU: the tolerance below was set for fp32
    proc = subprocess.run([sys.executable, *launcher, str(ROOT / "train.py"), *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600, env={"OMP_NUM_THREADS": "1", "PATH": ""})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_two_processes_match_one(real_data, tmp_path):
    two = train(real_data, tmp_path, "two", ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"])
    train(real_data, tmp_path, "one", [])
    assert two.stdout.count("best validation F1") == 1  # rank 0 alone reports, validates and saves
    one_nets, _ = load_networks(tmp_path / "one/DRIVE_AV/ddp")
    two_nets, _ = load_networks(tmp_path / "two/DRIVE_AV/ddp")
    # Same batches, same augmentation, BatchNorm synchronised across ranks: the same training
    # up to float summation order (Adam turns the noise on zero-gradient biases into +-lr steps).
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    assert (one_nets.predict(x) - two_nets.predict(x)).abs().max() < 2e-2  # probabilities
