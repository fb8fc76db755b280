"""scripts/pack.py: a compact copy of a data set trains exactly like the original and fits
a lent machine's transfer limit."""
import filecmp
import json
import re
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from scripts.config import ConfigError, DATASETS
from scripts.data import DataError, find_samples, load_resized
from scripts.pack import PACK_FILE, check_pack_size, folder_mib, pack_dataset
from tests.conftest import ROOT

CARRY_LIMIT_MIB = 64  # what one call to the lent GPU can take along (the whole tree together)


def test_drive_pack_trains_like_the_original_and_keeps_the_test_split(real_data, tmp_path):
    spec = DATASETS["DRIVE_AV"]
    target = pack_dataset(real_data, "DRIVE_AV", tmp_path / "packs", progress=False)
    originals = find_samples(real_data, spec, "training")
    copies = find_samples(tmp_path / "packs", spec, "training")
    assert [s.name for s in copies] == [s.name for s in originals]  # same order: same validation split
    for original, copy in zip(originals, copies, strict=True):
        assert copy.image.suffix == ".png"
        for a, b in zip(load_resized(original, spec.size), load_resized(copy, spec.size), strict=True):
            assert a.dtype == b.dtype and np.array_equal(a, b)
    for original, copy in zip(find_samples(real_data, spec, "test"), find_samples(tmp_path / "packs", spec, "test"), strict=True):
        for a, b in ((original.image, copy.image), (original.label, copy.label), (original.mask, copy.mask)):
            assert a.name == b.name and filecmp.cmp(a, b, shallow=False)
    info = json.loads((target / PACK_FILE).read_text())
    assert info["training_size"] == [592, 592] and (info["training"], info["test"]) == (20, 20)
    assert folder_mib(target) < 0.8 * folder_mib(real_data / "DRIVE_AV")


def test_hrf_pack_fits_one_transfer_to_the_lent_gpu(real_data, tmp_path):
    """HRF-AV (79 MB of 3504 x 2336 photographs) does not fit a 64 MiB carry; its pack does,
    and every training file was read back identical while it was written."""
    target = pack_dataset(real_data, "HRF-AV", tmp_path / "packs", progress=False)
    assert folder_mib(real_data / "HRF-AV") > CARRY_LIMIT_MIB > folder_mib(target) + 8  # room for the code
    assert len(find_samples(tmp_path / "packs", DATASETS["HRF-AV"], "training")) == 24


def test_training_on_a_pack_at_another_size_is_refused(real_data, tmp_path):
    spec = DATASETS["DRIVE_AV"]
    root = tmp_path / "packs"
    (root / spec.name).mkdir(parents=True)
    (root / spec.name / PACK_FILE).write_text(json.dumps({"training_size": [592, 592]}))
    check_pack_size(root, spec, (592, 592))
    check_pack_size(real_data, spec, (256, 256))  # not a pack: any size
    with pytest.raises(DataError, match=r"packed at 592 x 592 .* --image-size 256 256"):
        check_pack_size(root, spec, (256, 256))


def test_train_py_refuses_a_pack_at_another_size_in_one_line(real_data, tmp_path):
    pack_dataset(real_data, "DRIVE_AV", tmp_path / "packs", progress=False)
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "--data-root", str(tmp_path / "packs"),
                           "--epochs", "1", "--image-size", "64", "64", "--base-width", "4",
                           "--cache-dir", str(tmp_path / "c"), "--output-root", str(tmp_path / "o")],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "packed at 592 x 592" in proc.stderr and not (tmp_path / "o" / "DRIVE_AV").exists()


def test_pack_replaces_an_earlier_pack_but_never_other_files(real_data, tmp_path):
    target = pack_dataset(real_data, "DRIVE_AV", tmp_path / "packs", progress=False)
    (target / "training" / "images" / "stray.png").write_bytes(b"")
    pack_dataset(real_data, "DRIVE_AV", tmp_path / "packs", progress=False)
    assert not (target / "training" / "images" / "stray.png").exists()

    shutil.copytree(real_data / "DRIVE_AV", tmp_path / "copy" / "DRIVE_AV")
    with pytest.raises(ConfigError, match="is not a packed copy"):
        pack_dataset(real_data, "DRIVE_AV", tmp_path / "copy", progress=False)
    assert len(list((tmp_path / "copy" / "DRIVE_AV" / "training" / "images").glob("*.tif"))) == 20

    from scripts import pack
    assert pack.main(["--dataset", "DRIVE_AV", "--data-root", str(real_data), "--out", str(tmp_path / "copy")]) == 2


def test_two_photographs_of_one_name_are_an_error(real_data, tmp_path):
    spec = DATASETS["DRIVE_AV"]
    root = tmp_path / "data"
    shutil.copytree(real_data / "DRIVE_AV" / "training", root / "DRIVE_AV" / "training")
    first = find_samples(root, spec, "training")[0]
    shutil.copy(first.label, first.image.with_suffix(".png"))
    with pytest.raises(DataError, match="two photographs of one name"):
        find_samples(root, spec, "training")


def test_a_pack_is_never_its_own_source_nor_packed_again_at_another_size(real_data, tmp_path):
    pack_dataset(real_data, "DRIVE_AV", tmp_path / "packs", progress=False)
    with pytest.raises(ConfigError, match="is the data root itself"):
        pack_dataset(tmp_path / "packs", "DRIVE_AV", tmp_path / "packs", progress=False)
    with pytest.raises(DataError, match="packed at 592 x 592"):
        pack_dataset(tmp_path / "packs", "DRIVE_AV", tmp_path / "again", size=(256, 256), progress=False)
    assert (tmp_path / "packs" / "DRIVE_AV" / PACK_FILE).is_file() and not (tmp_path / "again").exists()
    (tmp_path / "packs" / "DRIVE_AV" / PACK_FILE).write_text("{not json")
    with pytest.raises(DataError, match="unreadable pack description"):
        check_pack_size(tmp_path / "packs", DATASETS["DRIVE_AV"], (592, 592))


def test_an_interrupted_pack_leaves_the_earlier_one(real_data, tmp_path, monkeypatch, capsys):
    from scripts import pack
    target = pack_dataset(real_data, "DRIVE_AV", tmp_path / "packs", progress=False)
    before = sorted(p.relative_to(target) for p in target.rglob("*"))

    def interrupted(samples, dest, progress):
        raise KeyboardInterrupt
    monkeypatch.setattr(pack, "_copy_test", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pack_dataset(real_data, "DRIVE_AV", tmp_path / "packs", progress=False)
    assert sorted(p.relative_to(target) for p in target.rglob("*")) == before
    assert [p.name for p in (tmp_path / "packs").iterdir()] == ["DRIVE_AV"]  # no partial folder left

    # SIGTERM (pack has no epoch to finish): one line, exit 143; and a partial folder of a pack
    # that was killed outright (its process gone) is removed by the next pack.
    def terminated(samples, dest, progress):
        raise pack.Terminated
    monkeypatch.setattr(pack, "_copy_test", terminated)
    assert pack.main(["--dataset", "DRIVE_AV", "--data-root", str(real_data), "--out", str(tmp_path / "packs")]) == 143
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"terminated (SIGTERM): pack stopped; {tmp_path / 'packs' / 'DRIVE_AV'} is as it was (an earlier pack there "
        f"is kept)")
    monkeypatch.undo()
    (tmp_path / "packs" / "DRIVE_AV.partial-999999999").mkdir()  # no such process (an older version's name)
    (tmp_path / "packs" / f"DRIVE_AV.partial-{socket.gethostname()}-999999999").mkdir()
    (tmp_path / "packs" / "DRIVE_AV.partial-elsewhere-1").mkdir()  # another host's: perhaps still packing
    pack_dataset(real_data, "DRIVE_AV", tmp_path / "packs", progress=False)
    assert sorted(p.name for p in (tmp_path / "packs").iterdir()) == ["DRIVE_AV", "DRIVE_AV.partial-elsewhere-1"]
    from scripts.pack import _running_here  # a data set with a '-' in its name: LES-AV.partial-<host>-<pid>
    les = tmp_path / "packs" / f"LES-AV.old-{socket.gethostname()}-999999999"
    les.mkdir()
    monkeypatch.setattr(pack, "_copy_test", terminated)  # stopped at once: but the leftover goes first
    pack.main(["--dataset", "LES-AV", "--data-root", str(real_data), "--out", str(tmp_path / "packs")])
    assert not les.exists() and not _running_here(f"{socket.gethostname()}-999999999")


def test_a_bad_test_file_is_found_when_packing_not_on_the_other_machine(real_data, tmp_path):
    """The test split is copied as it is, but checked as test.py will read it first: a label
    value 7 is one error naming the file, and nothing is written."""
    spec = DATASETS["DRIVE_AV"]
    root = tmp_path / "data"
    for split in ("training", "test"):
        for sample in find_samples(real_data, spec, split)[:2]:
            for path in (sample.image, sample.label, sample.mask):
                (root / "DRIVE_AV" / split / path.parent.name).mkdir(parents=True, exist_ok=True)
                shutil.copy(path, root / "DRIVE_AV" / split / path.parent.name / path.name)
    label = find_samples(root, spec, "test")[1].label
    Image.fromarray(np.full((584, 565), 7, np.uint8)).save(label)
    with pytest.raises(DataError, match=re.escape(f"{label}: label values must be 0..3")):
        pack_dataset(root, "DRIVE_AV", tmp_path / "packs", size=(64, 64), progress=False)
    assert not list((tmp_path / "packs").iterdir())
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    with pytest.raises(ConfigError, match=re.escape(f"--out {a_file}: a file of that name exists; give a folder")):
        pack_dataset(root, "DRIVE_AV", a_file, size=(64, 64), progress=False)


def test_a_data_root_one_level_too_deep_is_named_and_leaves_no_out_folder(real_data, tmp_path):
    """--data-root data/LES-AV (the data set, not the folder holding it): one line that names the
    right one, before the --out folder is made."""
    from scripts import pack
    with pytest.raises(DataError, match=f"did you mean --data-root {real_data}\\?"):
        pack_dataset(real_data / "LES-AV", "LES-AV", tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    assert pack.main(["--dataset", "LES-AV", "--data-root", str(real_data / "LES-AV"),
                      "--out", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()


def test_a_pack_of_the_first_images_is_noted_by_train_py_refused_by_reproduce_py(real_data, tmp_path):
    """--first: a small pack for benchmarks on a machine that is sent little. It holds the
    first images by name of each split; training on it says so, and the reproduction job,
    which must train on the whole data set, refuses it in one line."""
    spec = DATASETS["LES-AV"]
    root = tmp_path / "packs"
    target = pack_dataset(real_data, "LES-AV", root, size=(64, 64), progress=False, first=3)
    for split in ("training", "test"):
        assert [s.name for s in find_samples(root, spec, split)] == \
               [s.name for s in find_samples(real_data, spec, split)[:3]]
    info = json.loads((target / PACK_FILE).read_text())
    assert (info["first"], info["training"], info["test"]) == (3, 3, 3) and "first 3" in info["note"]

    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "--dataset", "LES-AV", "--data-root", str(root),
                           "--epochs", "1", "--batch-size", "2", "--image-size", "64", "64", "--base-width", "4",
                           "--image-every", "0", "--cache-dir", str(tmp_path / "c"), "--output-root", str(tmp_path / "o"),
                           "--runs-dir", str(tmp_path / "runs")],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "only the first 3 images of each split" in proc.stdout

    proc = subprocess.run([sys.executable, str(ROOT / "reproduce.py"), "--dataset", "LES-AV", "--data-root", str(root),
                           "--train-args", "--image-size 64 64", "--out", str(tmp_path / "out")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "only the first 3 images" in proc.stderr and not (tmp_path / "out").exists()

    with pytest.raises(ConfigError, match="holds only the first 3 images"):
        pack_dataset(root, "LES-AV", tmp_path / "again", size=(64, 64), progress=False)
    with pytest.raises(ConfigError, match="--first 0"):
        pack_dataset(real_data, "LES-AV", tmp_path / "again", progress=False, first=0)
    assert not (tmp_path / "again").exists()

    whole = pack_dataset(real_data, "LES-AV", tmp_path / "whole", size=(64, 64), progress=False, first=11)
    info = json.loads((whole / PACK_FILE).read_text())  # 11 cuts neither split: the whole data set
    assert "first" not in info and (info["training"], info["test"]) == (11, 11) and "first" not in info["note"]
