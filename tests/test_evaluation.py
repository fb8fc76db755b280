"""test.py's evaluation around the metrics (DESIGN.md sections 6 and 7): the pictures' colours,
the probabilities resized back before they are decoded, the probability extras of the softmax
variant, the mean and std over runs, and where the outputs go by default."""
import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import test as test_script
import train
from scripts.bfnet import Networks
from scripts.checkpoint import save_best
from scripts.config import RunConfig
from scripts.evaluate import evaluate_test_image, full_size_picture
from tests.conftest import ROOT


@pytest.mark.parametrize("activation", ["sigmoid", "softmax"])
def test_pictures_are_artery_red_vein_blue_uncertain_green_and_black_outside_the_fov(activation):
    """Section 7's pictures: one pixel each of artery, uncertain, vein and background, certain."""
    channels = {"sigmoid": ("artery", "uncertain", "vein"), "softmax": ("background", "artery", "vein", "uncertain")}
    classes = ("artery", "uncertain", "vein", "background")
    probs = torch.zeros(len(channels[activation]), 1, 5)
    for x, name in enumerate(classes):
        if name in channels[activation]:
            probs[channels[activation].index(name), 0, x] = 1
    probs[:, 0, 4] = probs[:, 0, 0]  # an artery pixel outside the FOV
    fov = np.array([[True, True, True, True, False]])
    pic = full_size_picture(probs, (5, 1), fov, activation)
    assert pic[0].tolist() == [[255, 0, 0], [0, 255, 0], [0, 0, 255], [0, 0, 0], [0, 0, 0]]


def test_probabilities_are_resized_back_bilinearly_before_they_are_decoded():
    """A row of artery probabilities 0.4, 0.4, 0.9 at the network size, 4x wider at the original
    size: bilinear, the probability passes 0.5 a fifth of the way from 0.4 to 0.9 (output
    pixel 7, at 0.5875), where the decided classes, resized, would change only at pixel 8."""
    probs = torch.zeros(3, 1, 3)
    probs[0, 0] = torch.tensor([0.4, 0.4, 0.9])
    pic = full_size_picture(probs, (12, 1), np.ones((1, 12), bool), "sigmoid")
    assert (pic[0, :, 0] >= 128).astype(int).tolist() == [0] * 7 + [1] * 5


def test_softmax_extras_rank_each_class_by_its_own_probability(tmp_path):
    """Section 6's extras, "AUC-ROC and AUC-PR from the probabilities": background wins every
    pixel (the table's artery sensitivity is 0), while the artery and vein probabilities rank
    their pixels perfectly (AUC 1) and the uncertain one ranks its pixels last (AUC 0)."""
    label = np.zeros((4, 8), np.uint8)
    label[0, :4], label[1, :4], label[2, :4] = 1, 2, 3
    probs = torch.full((4, 4, 8), 0.1)
    probs[1][torch.from_numpy(label == 1)] = 0.2   # artery
    probs[2][torch.from_numpy(label == 2)] = 0.2   # vein
    probs[3][torch.from_numpy(label == 3)] = 0.0   # uncertain, ranked below everything else
    probs[0] = 1 - probs[1:].sum(0)
    result = evaluate_test_image("x", label, np.ones_like(label, bool), probs, "softmax", tmp_path)
    assert result["artery"]["sensitivity"] == 0
    extra = result["extra"]
    assert (extra["auc_roc_prob_artery"], extra["auc_roc_prob_vein"], extra["auc_roc_prob_uncertain"]) == (1, 1, 0)


def test_the_test_gives_mean_and_std_over_independent_runs(real_data, tmp_path):
    """Section 6: "mean and std of that average over independent runs". Two runs of other
    weights, tested together: their pictures differ, and summary.json's mean and (population)
    std are those of the two runs' own averages over the test images (metrics.csv)."""
    runs = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        runs.append(tmp_path / f"run{seed}")
        save_best(runs[-1], Networks("sigmoid", 4), RunConfig(base_width=4, image_size=(64, 64)), 1, 0.5)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(ROOT / "test.py"), "--dataset", "DRIVE_AV", "--data-root", str(real_data),
                           "--load", *map(str, runs), "--output", str(out), "--cache-dir", str(tmp_path / "cache")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    pictures = [(out / name / "raw_pre" / "01_test.png").read_bytes() for name in ("run0", "run1")]
    assert pictures[0] != pictures[1]
    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    per_run = [np.mean([float(r["average/f1"]) for r in rows if r["run"] == name]) for name in ("run0", "run1")]
    assert len(rows) == 40 and abs(per_run[0] - per_run[1]) > 0.01  # points: ddof 0 and 1 are told apart
    f1 = json.loads((out / "summary.json").read_text())["average"]["f1"]
    assert f1["mean"] == pytest.approx(np.mean(per_run), abs=1e-6)
    assert f1["std"] == pytest.approx(abs(per_run[0] - per_run[1]) / 2, abs=1e-6)


def test_outputs_go_where_section_7_puts_them_by_default():
    """Checkpoints under ./<Dataset>/<job name>/, TensorBoard event files under ./runs, test
    pictures under ./<Dataset>/Final_pre."""
    options = train.build_parser().parse_args([])
    assert (options.output_root, options.runs_dir) == (".", "./runs")
    assert RunConfig(dataset="DRIVE_AV", job_name="probe").run_dir(options.output_root).as_posix() == "DRIVE_AV/probe"
    tested = test_script.build_parser().parse_args(["--dataset", "DRIVE_AV"])
    assert tested.output_root == "." and tested.output is None
