"""Shared test fixtures. Real-data tests read ./data or $AVSEG_DATA and fail (never skip)
when the data is missing."""
import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("AVSEG_SHARED", ROOT.parent / "shared"))


def data_root() -> Path:
    return Path(os.environ.get("AVSEG_DATA", ROOT / "data"))


@pytest.fixture(scope="session")
def real_data() -> Path:
    root = data_root()
    missing = [d for d in ("DRIVE_AV", "LES-AV", "HRF-AV") if not (root / d).is_dir()]
    if missing:
        pytest.fail(f"real data sets {missing} not found under {root}: link ../shared/data to ./data "
                    f"or set AVSEG_DATA (tests never skip for missing data)")
    return root


@pytest.fixture(scope="module")
def one_thread():
    """Tiny networks: one intra-op thread is much faster than several on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
