"""The synthetic data set generator (scripts/synthetic.py): layout, values, determinism."""
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from scripts.synthetic import make_synthetic_dataset, synthetic_sample
from tests.conftest import ROOT

SIZE = (160, 144)  # (W, H): small keeps the tests fast


def read(path):
    with Image.open(path) as img:
        return img.mode, np.asarray(img)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    return make_synthetic_dataset(root, n_train=3, n_test=2, size=SIZE, seed=0)


def test_layout_and_names(dataset):
    assert dataset.name == "SYNTHETIC" and dataset.is_dir()
    expected = {"training": ["s01", "s02", "s03"], "test": ["s04", "s05"]}
    for split, ids in expected.items():
        assert sorted(p.name for p in (dataset / split / "images").iterdir()) == [f"{i}.png" for i in ids]
        assert sorted(p.name for p in (dataset / split / "1st_manual").iterdir()) == [f"{i}.png" for i in ids]
        assert sorted(p.name for p in (dataset / split / "mask").iterdir()) == [f"{i}_mask.png" for i in ids]


def test_files_sizes_modes_and_values(dataset):
    with_all_classes = 0
    for split in ("training", "test"):
        for image_path in sorted((dataset / split / "images").iterdir()):
            stem = image_path.stem
            mode, image = read(image_path)
            label_mode, label = read(dataset / split / "1st_manual" / f"{stem}.png")
            mask_mode, mask = read(dataset / split / "mask" / f"{stem}_mask.png")
            assert (mode, label_mode, mask_mode) == ("RGB", "L", "L")
            assert image.shape == (SIZE[1], SIZE[0], 3)
            assert label.shape == mask.shape == (SIZE[1], SIZE[0])
            assert set(np.unique(label)) <= {0, 1, 2, 3}
            assert set(np.unique(mask)) == {0, 255}
            fov = mask > 0
            assert 0.5 < fov.mean() < 0.9
            assert not image[~fov].any(), "image must be black outside the FOV"
            assert not label[~fov].any(), "no vessel labels outside the FOV"
            assert image[fov].mean() > 60, "the fundus should not be dark"
            with_all_classes += {1, 2, 3} <= set(np.unique(label))
    assert with_all_classes >= 4  # of 5


def test_most_samples_have_every_class():
    rng_counts = []
    for i in range(12):
        _, label, fov = synthetic_sample(SIZE, np.random.default_rng([7, i]))
        rng_counts.append({1, 2, 3} <= set(np.unique(label)))
        assert fov.dtype == bool and label.dtype == np.uint8
    assert sum(rng_counts) >= 9


def test_veins_darker_and_wider_than_arteries():
    image, label, fov = synthetic_sample((320, 288), np.random.default_rng(3))
    brightness = image.astype(float).mean(axis=2)
    fundus = brightness[(label == 0) & fov].mean()
    assert brightness[label == 2].mean() < brightness[label == 1].mean() < fundus
    assert (label == 2).sum() > (label == 1).sum() * 0.8  # fewer but wider vessels: comparable area


def test_deterministic_for_a_seed_and_different_across_seeds(tmp_path):
    a = make_synthetic_dataset(tmp_path / "a", n_train=2, n_test=1, size=SIZE, seed=5)
    b = make_synthetic_dataset(tmp_path / "b", n_train=2, n_test=1, size=SIZE, seed=5)
    c = make_synthetic_dataset(tmp_path / "c", n_train=2, n_test=1, size=SIZE, seed=6)
    for rel in ("training/images/s01.png", "training/1st_manual/s02.png", "test/images/s03.png",
                "test/mask/s03_mask.png"):
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    for rel in ("training/images/s01.png", "training/1st_manual/s01.png", "test/1st_manual/s03.png"):
        assert (a / rel).read_bytes() != (c / rel).read_bytes(), rel
    x = synthetic_sample(SIZE, np.random.default_rng(11))
    y = synthetic_sample(SIZE, np.random.default_rng(11))
    assert all(np.array_equal(p, q) for p, q in zip(x, y, strict=True))


def test_rerun_overwrites_and_removes_stale_ids(tmp_path):
    make_synthetic_dataset(tmp_path, n_train=3, n_test=2, size=SIZE, seed=0)
    keep = tmp_path / "SYNTHETIC" / "training" / "images" / "notes.txt"
    keep.write_text("not ours")
    out = make_synthetic_dataset(tmp_path, n_train=1, n_test=1, size=SIZE, seed=1)
    assert sorted(p.name for p in (out / "training" / "images").iterdir()) == ["notes.txt", "s01.png"]
    assert sorted(p.name for p in (out / "test" / "mask").iterdir()) == ["s02_mask.png"]
    fresh = synthetic_sample(SIZE, np.random.default_rng([1, 0]))[0]
    assert np.array_equal(read(out / "training" / "images" / "s01.png")[1], fresh)


def test_bad_arguments():
    with pytest.raises(ValueError):
        make_synthetic_dataset("/nonexistent-never-written", n_train=0)
    with pytest.raises(ValueError):
        make_synthetic_dataset("/nonexistent-never-written", size=(32, 32))


def test_cli(tmp_path):
    cmd = [sys.executable, "-m", "scripts.synthetic", "--out", str(tmp_path), "--train", "2",
           "--test", "1", "--size", "96", "80", "--seed", "3"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert str(tmp_path / "SYNTHETIC") in done.stdout
    assert read(tmp_path / "SYNTHETIC" / "test" / "images" / "s03.png")[1].shape == (80, 96, 3)
    helped = subprocess.run([sys.executable, "-m", "scripts.synthetic", "--help"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert helped.returncode == 0 and "--size" in helped.stdout
