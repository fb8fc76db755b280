"""The README's Results tables give the numbers of the files under results/ (to the tables' two
decimals), so that neither can change without the other."""
import json
import re

import pytest

from scripts.metrics import TABLE_METRICS
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()
GPU_RUN = ROOT / "results" / "sigmoid" / "DRIVE_AV" / "cuda_bf16_20261130-172842"
CPU_RUNS = ROOT / "results" / "reduced_cpu" / "sigmoid" / "DRIVE_AV"


def table_row(label):
    """The numbers of the last five cells (the table metrics) of the README's one table row whose
    first cell is ``label``: [mean] or [mean, std] per cell."""
    rows = [line for line in README.splitlines()
            if line.startswith("|") and line.strip("|").split("|")[0].strip() == label]
    assert len(rows) == 1, f"{len(rows)} README table rows named {label!r}"
    cells = rows[0].strip().strip("|").split("|")[-len(TABLE_METRICS):]
    return [[float(x) for x in re.findall(r"\d+(?:\.\d+)?", cell)] for cell in cells]


def summary_numbers(path, run=None):
    """[mean, std] of each table metric of a summary.json of several runs (percent), [mean] of
    a summary of one run, [value] of one run of a summary (``run``)."""
    summary = json.loads(path.read_text())
    if run is not None:
        return [[summary["per_run"][run][m]] for m in TABLE_METRICS]
    several = len(summary["runs"]) > 1
    return [[summary["average"][m]["mean"]] + [summary["average"][m]["std"]] * several for m in TABLE_METRICS]


def assert_same(readme, recorded):
    """Each cell's numbers are the file's: [mean, std] for a row over seeds, [value] for one run."""
    for metric, shown, exact in zip(TABLE_METRICS, readme, recorded, strict=True):
        assert len(shown) == len(exact), (metric, shown)
        assert shown == pytest.approx(exact, abs=0.005 + 1e-9), metric


@pytest.mark.parametrize("label, run", [
    ("**ours, H200, mean ± std of 3 seeds** (std ddof 0)", None),
    ("seed 42", "sigmoid_seed42"), ("seed 40", "sigmoid_seed40"), ("seed 38", "sigmoid_seed38")])
def test_the_gpu_run_rows_are_its_summary(label, run):
    assert_same(table_row(label), summary_numbers(GPU_RUN / "summary.json", run))


def test_the_gpu_runs_bundle_row_is_its_cpu_test():
    assert_same(table_row("seed 42's fp16 bundle, tested on this project's CPU"),
                summary_numbers(GPU_RUN / "bundle_summary_cpu.json"))


@pytest.mark.parametrize("label, file", [
    ("**shipped bundle** (`pretrained/`, fp16)", "w8_592_seed42/bundle_summary.json"),
    ("the same run folder (fp32 weights)", "w8_592_seed42/summary.json"),
    ("the same configuration trained in fp32 (not shipped)", "w8_592_fp32_seed42/summary.json"),
    ("the shipped configuration, seed 43 (not shipped)", "w8_592_seed43/summary.json"),
    ("first reduced run", "w8_256_seed42/summary.json")])
def test_the_reduced_cpu_rows_are_their_summaries(label, file):
    assert_same(table_row(label), summary_numbers(CPU_RUNS / file))
