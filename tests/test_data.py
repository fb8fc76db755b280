"""Data handling of DESIGN.md section 5 and data/README.md, on the real data sets."""
import gc
import math
import os
import shutil
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from scripts.config import ConfigError, DATASETS, RunConfig, check_image_size, dataset_spec
from scripts.data import (augment, find_samples, load_resized, load_sample, normalize, resize,
                          split_train_val)

# (data set, split, number of images, original sizes (H, W), first image name)
LAYOUTS = [
    ("DRIVE_AV", "training", 20, {(584, 565)}, "21_training"),
    ("DRIVE_AV", "test", 20, {(584, 565)}, "01_test"),
    ("LES-AV", "training", 11, {(1444, 1620), (1958, 2196)}, "111"),
    ("LES-AV", "test", 11, {(1444, 1620)}, "224"),
    ("HRF-AV", "training", 24, {(2336, 3504)}, "01_dr"),
    ("HRF-AV", "test", 21, {(2336, 3504)}, "09_dr"),
]


@pytest.mark.parametrize("name,split,count,sizes,first", LAYOUTS)
def test_real_layouts_are_read(real_data, name, split, count, sizes, first):
    samples = find_samples(real_data, DATASETS[name], split)
    assert len(samples) == count and samples[0].name == first
    # Decoding every HRF image is slow: check the first, the last and the odd-sized LES one.
    for sample in {samples[0], samples[-1], *[s for s in samples if s.name == "34"]}:
        image, label, fov = load_sample(sample)
        assert image.dtype == np.uint8 and image.shape[2] == 3
        assert image.shape[:2] in sizes and label.shape == image.shape[:2] == fov.shape
        assert set(np.unique(label)) <= {0, 1, 2, 3} and {1, 2} <= set(np.unique(label))
        assert fov.dtype == bool and 0.5 < fov.mean() < 0.95  # FOV masks in all three encodings


def test_les_av_has_one_larger_training_image(real_data):
    sample = [s for s in find_samples(real_data, DATASETS["LES-AV"], "training") if s.name == "34"][0]
    assert load_sample(sample)[0].shape[:2] == (1958, 2196)


def test_resized_cache_matches_direct_decoding(real_data, tmp_path):
    sample = find_samples(real_data, DATASETS["DRIVE_AV"], "training")[0]
    direct = load_resized(sample, (592, 592))
    first = load_resized(sample, (592, 592), tmp_path)
    cached = load_resized(sample, (592, 592), tmp_path)
    assert len(list(tmp_path.glob("*.npy"))) == 1
    for a, b, c in zip(direct, first, cached, strict=True):
        assert a.shape[:2] == (592, 592) and np.array_equal(a, b) and np.array_equal(a, c)


def test_a_photograph_replaced_by_one_of_the_same_size_and_time_is_decoded_again(real_data, tmp_path):
    """cp -p, rsync -a and unpacked archives keep the modification time; uncompressed TIFFs of
    one size have one byte count: the cache must still not serve the photograph that was there."""
    from dataclasses import replace
    sample = find_samples(real_data, DATASETS["DRIVE_AV"], "training")[0]
    other = find_samples(real_data, DATASETS["DRIVE_AV"], "training")[1]
    first, second = tmp_path / "a.tif", tmp_path / "b.tif"
    for source, path in ((sample.image, first), (other.image, second)):
        Image.open(source).save(path, compression=None)  # uncompressed: the same byte count
    os.utime(second, ns=(first.stat().st_atime_ns, first.stat().st_mtime_ns))
    assert first.stat().st_size == second.stat().st_size
    copy = replace(sample, image=first)
    before = load_resized(copy, (64, 64), tmp_path / "cache")[0]
    shutil.copy2(second, first)  # cp -p: the other photograph, same size, same modification time
    assert first.stat().st_mtime_ns == second.stat().st_mtime_ns and first.stat().st_size == second.stat().st_size
    after = load_resized(copy, (64, 64), tmp_path / "cache")[0]
    assert np.array_equal(after, load_resized(replace(sample, image=second), (64, 64))[0])
    assert not np.array_equal(after, before)


def test_readers_close_their_files(real_data):
    """DRIVE_AV's masks are GIFs, which PIL leaves open after decoding unless closed: a test.py
    or predict.py run over a cohort would hold one file handle per image until collected."""
    sample = find_samples(real_data, dataset_spec("DRIVE_AV"), "test")[0]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        load_sample(sample)
        gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []


def test_dataset_table_names_and_sizes():
    assert dataset_spec("DRIVE-AV").name == "DRIVE_AV"
    assert RunConfig(dataset="DRIVE_AV").input_size == (592, 592)
    assert RunConfig(dataset="LES-AV").input_size == (800, 720)
    assert RunConfig(dataset="HRF-AV").input_size == (880, 592)
    assert RunConfig(dataset="HRF-AV", uniform=True).input_size == (720, 720)
    assert dataset_spec("les-av").name == "LES-AV"  # any case
    with pytest.raises(ConfigError, match="unknown data set 'STARE'; known"):
        dataset_spec("STARE")
    for near, name in (("HRF", "HRF-AV"), ("drive", "DRIVE_AV"), ("LESAV", "LES-AV")):
        with pytest.raises(ConfigError, match=f"unknown data set '{near}' \\(did you mean {name}\\?\\)"):
            dataset_spec(near)
    with pytest.raises(ConfigError, match="multiples of 16"):
        check_image_size((600, 592))


def test_a_row_of_ones_own_with_a_wrong_size_is_one_line_before_any_data_is_read(monkeypatch, tmp_path, capsys):
    import train
    from scripts import config
    monkeypatch.setitem(config.DATASETS, "MySet", config.DatasetSpec("MySet", ("*.png",), "{stem}.png",
                                                                     "{stem}_mask.png", (600, 590)))
    with pytest.raises(SystemExit) as info:
        train.main(["--dataset", "myset", "--data-root", str(tmp_path)])
    assert info.value.code == 2 and capsys.readouterr().err.strip() == (
        "error: DATASETS row MySet (scripts/config.py): its size (600, 590) must be (W, H), positive multiples of 16 "
        "(the encoder halves it four times), or give --image-size")
    assert RunConfig(dataset="MySet", image_size=(64, 64)).input_size == (64, 64)  # the row's size unused: fine


def test_validation_split_is_drawn_with_the_seed():
    train, val = split_train_val(20, 10, seed=42)
    assert len(val) == 2 and sorted(train + val) == list(range(20))
    assert split_train_val(20, 10, seed=42) == (train, val)
    assert split_train_val(20, 10, seed=40) != (train, val)
    assert len(split_train_val(11, 10, seed=0)[1]) == 1  # LES-AV: at least one image
    with pytest.raises(ConfigError):
        split_train_val(1, 10, seed=0)


def test_augmentation_moves_image_label_and_mask_together():
    torch.manual_seed(0)
    label = torch.zeros(1, 32, 48, dtype=torch.long)
    label[0, 4:10, 6:20] = 1
    label[0, 20:28, 30:40] = 2
    image = torch.stack([label == 1, label == 2, label == 2], 1).float()  # image encodes the label
    fov = torch.ones(1, 32, 48, dtype=torch.bool)
    for seed in range(8):
        gen = torch.Generator().manual_seed(seed)
        img, lab, msk = augment(image, label, fov, gen, rotation_step=90)
        assert set(lab.unique().tolist()) <= {0, 1, 2}
        # Where the label survived, the image (saturation only scales colour) agrees with it.
        red_dominant = img[:, 0] > img[:, 1] + 0.2
        assert torch.equal(red_dominant[lab == 1], torch.ones_like(red_dominant[lab == 1]))
        assert not red_dominant[lab == 2].any()


def test_without_a_mask_augmentation_turns_image_and_label_alike():
    """Training asks for no turned mask (normalize() finds the fundus): the same draw of the
    generator gives the same image and label with or without one."""
    label = torch.randint(0, 4, (2, 24, 40), generator=torch.Generator().manual_seed(3))
    image, fov = torch.rand(2, 3, 24, 40), torch.rand(2, 24, 40) > 0.3
    with_mask = augment(image, label, fov, torch.Generator().manual_seed(5))
    without = augment(image, label, None, torch.Generator().manual_seed(5))
    assert torch.equal(with_mask[0], without[0]) and torch.equal(with_mask[1], without[1])
    assert without[2] is None and with_mask[2].dtype == torch.bool


def test_flip_and_quarter_rotation_are_exact_permutations():
    label = torch.randint(0, 4, (1, 16, 16), generator=torch.Generator().manual_seed(1))
    image = torch.rand(1, 3, 16, 16)
    fov = torch.ones(1, 16, 16, dtype=torch.bool)
    seen = set()
    for seed in range(40):
        _, lab, _ = augment(image, label, fov, torch.Generator().manual_seed(seed), rotation_step=90)
        candidates = [torch.rot90(f, k, (1, 2)) for f in (label, label.flip(2)) for k in range(4)]
        match = [i for i, c in enumerate(candidates) if torch.equal(c, lab)]
        assert match, "a flip + multiple-of-90 rotation must permute pixels exactly"
        seen.add(match[0])
    assert len(seen) == 8  # all of the dihedral group


def test_rotation_is_by_multiples_of_3_degrees_by_default():
    """Section 5, the paper's version: a random angle, a multiple of 3 degrees (not only quarter
    turns), as train.py passes it by default. A bar from the centre rightwards, 120 pixels long, shows the angle it was turned by."""
    size, centre = 257, 128
    label = torch.zeros(1, size, size, dtype=torch.long)
    label[0, centre, centre + 8:centre + 128] = 1
    image = torch.zeros(1, 3, size, size)
    angles = []
    for seed in range(20):
        _, lab, _ = augment(image, label, None, torch.Generator().manual_seed(seed), RunConfig().rotation_step)
        ys, xs = torch.nonzero(lab[0] == 1, as_tuple=True)
        angles.append(math.degrees(math.atan2(float(ys.float().mean() - centre), float(xs.float().mean() - centre))))
    assert all(abs(a / 3 - round(a / 3)) < 0.1 for a in angles), angles  # within 0.3 degrees of a multiple of 3
    assert any(abs(a / 90 - round(a / 90)) > 0.1 for a in angles), angles  # not quarter turns only


def test_saturation_factor_is_drawn_from_0_8_to_1_2():
    """Section 5: colour saturation scaled by U(0.8, 1.2): a pixel's distance from its grey (luma)
    level is multiplied by the factor. Measured at the centre of a uniformly coloured frame,
    which no rotation or flip moves."""
    colour = torch.tensor([0.6, 0.4, 0.2])
    image = colour.view(1, 3, 1, 1).expand(1, 3, 33, 33).contiguous()
    label = torch.zeros(1, 33, 33, dtype=torch.long)
    grey = float((colour * torch.tensor([0.299, 0.587, 0.114])).sum())
    factors = []
    for seed in range(200):
        out, _, _ = augment(image, label, None, torch.Generator().manual_seed(seed))
        factors.append(float((out[0, 0, 16, 16] - grey) / (colour[0] - grey)))
    assert 0.8 - 1e-4 <= min(factors) < 0.82 and 1.18 < max(factors) <= 1.2 + 1e-4, (min(factors), max(factors))


def test_labels_and_masks_are_resized_with_nearest_neighbour():
    """Section 5: images are resized to the network's input, labels with nearest neighbour (no
    class between two others appears at their border); masks stay 0/1."""
    label = np.zeros((50, 70), np.uint8)
    label[:, 35:] = 3
    fov = np.zeros((50, 70), bool)
    fov[10:40, 10:60] = True
    image = np.zeros((50, 70, 3), np.uint8)
    _, small, small_fov = resize(image, label, fov, (37, 29))  # a non-integer scale
    assert set(np.unique(small).tolist()) == {0, 3} and small_fov.dtype == bool and small_fov.any()
    _, large, _ = resize(image, label, fov, (111, 83))
    assert set(np.unique(large).tolist()) == {0, 3}


def test_normalisation_uses_the_fundus_pixels_only():
    image = torch.zeros(1, 3, 10, 10)
    image[:, :, 2:8, 2:8] = torch.rand(1, 3, 6, 6) * 0.5 + 0.2
    out = normalize(image)
    inside = out[:, :, 2:8, 2:8]
    assert torch.allclose(inside.mean((2, 3)), torch.zeros(1, 3), atol=1e-5)
    assert torch.allclose(inside.std((2, 3), unbiased=False), torch.ones(1, 3), atol=1e-3)


def test_data_set_names_are_read_in_any_case():
    from scripts.config import dataset_spec
    assert [dataset_spec(n).name for n in ("drive_av", "Drive-AV", "les_av", "hrf-av")] == [
        "DRIVE_AV", "DRIVE_AV", "LES-AV", "HRF-AV"]
