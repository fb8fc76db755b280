"""The shipped bundle (pretrained/): what the README says it is, and what it scores.

The scores are those test.py gave the bundle when it was exported, kept in
results/<...>/bundle_summary.json (and image by image in bundle_metrics.csv); the README's
numbers come from that file."""
import csv
import json
import subprocess
import sys

import pytest

from scripts.bundle import INDEX_SUFFIX, load_any
from scripts.config import DATASETS
from scripts import score
from scripts.metrics import TABLE_METRICS, flatten
from tests.conftest import ROOT

SHIPPED = ROOT / "pretrained" / f"DRIVE_AV_sigmoid{INDEX_SUFFIX}"
RESULTS = ROOT / "results" / "reduced_cpu" / "sigmoid" / "DRIVE_AV" / "w8_592_seed42"


def test_the_shipped_bundle_is_in_shards_of_at_most_15_mib_and_says_how_it_was_made():
    index = json.loads(SHIPPED.read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert sorted(p.name for p in SHIPPED.parent.glob("DRIVE_AV_sigmoid-*.pth")) == shards
    for name in shards:
        assert (SHIPPED.parent / name).stat().st_size <= 15 * 2**20, name
    nets, cfg = load_any(SHIPPED)
    assert (cfg["activation"], cfg["dataset"], cfg["stored_dtype"]) == ("sigmoid", "DRIVE_AV", "float16")
    assert tuple(cfg["image_size"]) == DATASETS["DRIVE_AV"].size
    run = json.loads((RESULTS / "run.json").read_text())
    assert cfg["base_width"] == run["base_width"] and "REDUCED CPU run" in cfg["about"]


def test_the_shipped_bundle_scores_what_its_results_file_says(real_data, tmp_path):
    """test.py --pretrained on the 20 DRIVE_AV test images, fp32 on the CPU: the numbers the
    README gives (within 0.02 points: another CPU's kernels round differently)."""
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(ROOT / "test.py"), "--dataset", "DRIVE_AV", "--pretrained",
                           "--data-root", str(real_data), "--cache-dir", str(tmp_path / "cache"),
                           "--output", str(out)], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "about these weights: REDUCED CPU run" in proc.stdout
    ours = json.loads((out / "summary.json").read_text())
    (details,) = ours["run_details"]  # a reduced run says so in the summary too, with its best epoch
    assert details["about"].startswith("REDUCED CPU run") and details["best_epoch"] == 149
    recorded = json.loads((RESULTS / "bundle_summary.json").read_text())
    assert ours["images"] == recorded["images"] == 20
    for key in TABLE_METRICS:
        assert ours["average"][key]["mean"] == pytest.approx(recorded["average"][key]["mean"], abs=0.02), key
    # Image by image too (bundle_metrics.csv, the per-image rows of that test).
    rows = {r["image"]: r for r in csv.DictReader((out / "metrics.csv").open())}
    kept = {r["image"]: r for r in csv.DictReader((RESULTS / "bundle_metrics.csv").open())}
    assert sorted(rows) == sorted(kept) and len(kept) == 20
    for image, row in kept.items():
        for key in TABLE_METRICS:
            assert float(rows[image][f"average/{key}"]) == pytest.approx(float(row[f"average/{key}"]), abs=0.05), \
                (image, key)

    # python -m scripts.score on test.py's own pictures: the same table and segment metric (the
    # probability extras differ: 8-bit pictures against 16-bit probabilities).
    scored = flatten(score.score_folder("DRIVE_AV", out / "raw_pre", "", real_data, tmp_path / "scores"))
    tested = flatten(ours)
    assert scored["test_truth_sha256"] == tested["test_truth_sha256"] and len(tested["test_truth_sha256"]) == 64
    for group in ("average", "artery", "vein", "uncertain", "segments"):
        keys = [k for k in tested if k.startswith(group + "/")]
        assert keys and all(scored[k] == pytest.approx(tested[k], abs=1e-9) for k in keys), group
