"""Bad input gets a clear one-line error naming the file, before any work starts."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import train
from scripts.config import ConfigError, DATASETS, RunConfig
from scripts.data import DataError, find_samples, load_sample, load_truth, read_image, read_label
from tests.conftest import ROOT

SPEC = DATASETS["DRIVE_AV"]


@pytest.fixture
def drive_copy(real_data, tmp_path):
    """A writable copy of four DRIVE_AV training samples (and the test split's layout)."""
    root = tmp_path / "data"
    for split in ("training", "test"):
        for sample in find_samples(real_data, SPEC, split)[:4]:
            for path, folder in ((sample.image, "images"), (sample.label, "1st_manual"), (sample.mask, "mask")):
                dest = root / "DRIVE_AV" / split / folder
                dest.mkdir(parents=True, exist_ok=True)
                shutil.copy(path, dest / path.name)
    return root


def first(root, split="training"):
    return find_samples(root, SPEC, split)[0]


def test_truncated_image(drive_copy):
    path = first(drive_copy).image
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(DataError, match=f"{path}: cannot decode image"):
        read_image(path)


def test_zero_byte_file(drive_copy):
    path = first(drive_copy).label
    path.write_bytes(b"")
    with pytest.raises(DataError, match=f"{path}: empty file"):
        read_label(path)


def test_an_image_claiming_more_pixels_than_any_photograph_is_refused_before_decoding(tmp_path):
    """A decompression bomb among a user's files (a PNG header of 20000 x 20000, 400 MP): one
    line from the header alone, nothing decoded."""
    import struct
    import zlib
    for side, size_said in ((20000, "20000 x 20000 pixels, "), (30000, "")):  # 400 MP; 900 MP, PIL's own check
        Image.new("RGB", (1, 1)).save(tmp_path / "bomb.png")
        data = bytearray((tmp_path / "bomb.png").read_bytes())
        ihdr = data.index(b"IHDR")
        data[ihdr + 4:ihdr + 12] = struct.pack(">II", side, side)
        data[ihdr + 17:ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr:ihdr + 17])))
        (tmp_path / "bomb.png").write_bytes(bytes(data))
        with pytest.raises(DataError) as info:
            read_image(tmp_path / "bomb.png")
        assert str(info.value) == (f"{tmp_path / 'bomb.png'}: {size_said}more than the 200 MP this reads "
                                   "(no fundus photograph is that large)")


def png_16bit_rgb(path, rgb16):
    """A 16-bit RGB PNG, written by hand (Pillow writes none)."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    h, w, _ = rgb16.shape
    rows = b"".join(b"\0" + row.astype(">u2").tobytes() for row in rgb16)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def test_a_16_bit_colour_photograph_is_read_and_one_of_12_bit_data_refused(drive_copy, tmp_path):
    """Pillow keeps the high 8 bits of 16-bit colour: the photograph itself where its values span
    the range; 16 levels where a camera's 12-bit data sits in 16 bits, refused in one line."""
    import tifffile
    path = first(drive_copy).image
    photo = read_image(path)
    full = photo.astype(np.uint16) * 257
    tifffile.imwrite(tmp_path / "full.tif", full, photometric="rgb")
    png_16bit_rgb(tmp_path / "full.png", full)
    for name in ("full.tif", "full.png"):
        assert np.array_equal(read_image(tmp_path / name), photo)
    twelve_bits = full >> 4
    tifffile.imwrite(tmp_path / "twelve.tif", twelve_bits, photometric="rgb")
    png_16bit_rgb(tmp_path / "twelve.png", twelve_bits)
    for name in ("twelve.tif", "twelve.png"):
        with pytest.raises(DataError) as info:
            read_image(tmp_path / name)
        assert str(info.value).startswith(f"{tmp_path / name}: a 16-bit colour image whose values stay below 4096")
        assert "16 levels, too few to segment" in str(info.value)


def test_16_bit_colour_is_told_by_the_raw_mode_alone():
    """Pillow's tiles are plain tuples before version 11; a 16-bit BMP (5-6-5 bits a pixel) is not
    16 bits a channel."""
    from scripts.data import _sixteen_bit_colour

    class Header:
        def __init__(self, mode, args):
            self.mode, self.tile = mode, [("raw", (0, 0, 5, 4), 0, args)]  # a tuple, as Pillow 10 has it
    assert _sixteen_bit_colour(Header("RGB", "RGB;16B"))                 # PNG
    assert _sixteen_bit_colour(Header("RGBA", ("RGBA;16L", 0, 1)))       # TIFF
    assert _sixteen_bit_colour(Header("RGB", ("RGB;16N", False, 8)))     # compressed TIFF
    assert not _sixteen_bit_colour(Header("RGB", ("BGR;16", 0, -1)))     # BMP 5-6-5
    assert not _sixteen_bit_colour(Header("RGB", ("RGB", "")))           # JPEG
    assert not _sixteen_bit_colour(Header("I;16", "I;16B"))              # greyscale: scaled by its maximum


def test_not_an_image(drive_copy):
    path = first(drive_copy).mask
    path.write_text("hello")
    with pytest.raises(DataError, match="cannot decode image"):
        load_sample(first(drive_copy))


def test_label_of_the_wrong_mode(drive_copy):
    path = first(drive_copy).label
    Image.fromarray(np.zeros((584, 565, 3), np.uint8)).save(path)
    with pytest.raises(DataError, match="single-channel index image .* got RGB"):
        read_label(path)


def test_a_palette_label_whose_colours_contradict_its_values_is_refused(drive_copy):
    """A colour label saved as a palette picture by a paint tool (0 black, 1 blue, 2 red): read
    as an index label it would train and test with artery and vein swapped, unsaid."""
    path = first(drive_copy).label
    label = Image.fromarray(np.array(Image.open(path))).convert("P")  # Pillow's grey palette: fine
    label.save(path)
    assert read_label(path).max() == 3
    label.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255, 0, 255, 0])  # the class colours: fine
    label.save(path)
    read_label(path)
    label.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0])  # labelme's (Pascal VOC) palette: says nothing
    label.save(path)
    read_label(path)
    label.putpalette([0, 0, 0, 0, 0, 255, 255, 0, 0, 0, 255, 0])  # artery and vein colours swapped
    label.save(path)
    with pytest.raises(DataError, match=re.escape("a palette label whose value 1 (artery) is drawn as (0, 0, 255) "
                                                  "(vein in colour): if the colours are right, python -m "
                                                  "scripts.labels converts it by them")):
        read_label(path)


def test_label_values_outside_0_to_3(drive_copy):
    path = first(drive_copy).label
    label = np.array(Image.open(path))
    label[10, 10] = 7
    Image.fromarray(label).save(path)
    with pytest.raises(DataError, match=r"label values must be 0..3.*found \[7\]"):
        read_label(path)


def test_an_edited_label_changes_the_truth_fingerprint(drive_copy):
    """summary.json's test_truth_sha256: a test against an edited copy tells itself apart."""
    from scripts.data import truth_fingerprint
    samples = find_samples(drive_copy, SPEC, "test")
    before = truth_fingerprint(samples)
    assert truth_fingerprint(samples[::-1]) == before  # the order given does not matter
    label = np.array(Image.open(samples[1].label))
    label[label == 1] = 2  # arteries relabelled as veins
    Image.fromarray(label).save(samples[1].label)
    assert truth_fingerprint(samples) != before


def test_mask_of_another_size(drive_copy):
    sample = first(drive_copy)
    Image.fromarray(np.full((100, 100), 255, np.uint8)).save(sample.mask, format="GIF")
    with pytest.raises(DataError, match="mask is 100 x 100 but its image 21_training.tif is 565 x 584"):
        load_sample(sample)
    with pytest.raises(DataError, match="mask is 100 x 100 but its image 21_training.tif is 565 x 584"):
        load_truth(sample)  # the photograph's size from its header, not decoded


def test_an_empty_mask_is_refused(drive_copy, monkeypatch):
    """All zero: the image would score 0 on every metric, pulling the means down unsaid (and a
    validation image would pick the best epoch on nothing)."""
    sample = first(drive_copy)
    Image.fromarray(np.zeros((584, 565), np.uint8)).save(sample.mask, format="GIF")
    message = f"{sample.mask}: the FOV mask is empty (no pixel above 0), so 21_training.tif would score nothing"
    for load in (load_sample, load_truth):
        with pytest.raises(DataError, match=re.escape(message)):
            load(sample)
    from scripts import data
    image, label, fov = data.resize(*load_sample(first(drive_copy, "test")), (64, 64))
    monkeypatch.setattr(data, "load_resized", lambda *a: (image, label, np.zeros_like(fov)))  # a cache entry of old
    with pytest.raises(DataError, match=re.escape("the FOV mask is empty at 64 x 64 (no pixel above 0)")):
        data.load_tensor_set([first(drive_copy, "test")], (64, 64))


def test_image_without_label(drive_copy):
    sample = first(drive_copy)
    sample.label.unlink()
    with pytest.raises(DataError, match=f"its label {sample.label} is missing$"):
        find_samples(drive_copy, SPEC, "training")
    for other in find_samples(drive_copy, SPEC, "test")[:2]:  # every missing file counted at once
        other.mask.unlink()
    with pytest.raises(DataError, match=re.escape(f"its FOV mask {other.mask.parent / '01_test_mask.gif'} is missing (and "
                                                  f"1 more missing labels or masks in {drive_copy / 'DRIVE_AV/test'})")):
        find_samples(drive_copy, SPEC, "test")


def test_a_file_under_another_case_or_extension_is_named_in_the_error(drive_copy):
    """The DATASETS row's label and mask names are exact, its photographs' globs of any case: the
    file that is there is named."""
    sample = first(drive_copy)
    sample.label.rename(sample.label.with_suffix(".PNG"))
    with pytest.raises(DataError, match=re.escape(f"its label {sample.label} is missing ({sample.label.stem}.PNG is "
                                                  f"there: the DATASETS row's file names are exact, case and "
                                                  f"extension included)")):
        find_samples(drive_copy, SPEC, "training")
    sample.label.with_suffix(".PNG").rename(sample.label)
    sample.image.rename(sample.image.with_suffix(".TIF"))
    assert find_samples(drive_copy, SPEC, "training")[0].image == sample.image.with_suffix(".TIF")  # *.tif: any case
    sample.image.with_suffix(".TIF").rename(sample.image.with_suffix(".jpeg"))
    with pytest.raises(DataError, match=re.escape(f"of its name in {sample.image.parent} ({sample.name}.jpeg is there: "
                                                  f"add its pattern to the DATASETS row's photographs)")):
        find_samples(drive_copy, SPEC, "training")


def test_label_without_photograph(drive_copy):
    """A photograph under another extension (.jpeg) is not found; its label says so, rather
    than the split silently shrinking (a score over 19 DRIVE test images is not the protocol's)."""
    sample = first(drive_copy, "test")
    sample.image.rename(sample.image.with_suffix(".jpeg"))
    with pytest.raises(DataError, match=re.escape(f"{sample.label}: a label with no photograph *.tif or *.png of "
                                                  f"its name in {sample.image.parent}")):
        find_samples(drive_copy, SPEC, "test")


def test_a_data_folder_not_found_says_where_it_was_looked_for(tmp_path, monkeypatch):
    """A relative --data-root is read from the current folder (a command run from elsewhere than
    the checkout); a link to a folder that is gone is named as such."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=re.escape(f"; nowhere is read from the current folder, {tmp_path}")):
        find_samples("nowhere", SPEC, "training")
    (tmp_path / "gone").symlink_to(tmp_path / "moved")
    with pytest.raises(DataError, match=re.escape(f"; {tmp_path / 'gone'} is a link to {tmp_path / 'moved'}, which "
                                                  f"does not exist")):
        find_samples(tmp_path / "gone", SPEC, "training")


def test_missing_folder_and_empty_split(drive_copy):
    shutil.rmtree(drive_copy / "DRIVE_AV" / "test" / "mask")
    with pytest.raises(DataError, match="missing folder .*test/mask"):
        find_samples(drive_copy, SPEC, "test")
    for p in (drive_copy / "DRIVE_AV" / "training" / "images").iterdir():
        p.unlink()
    with pytest.raises(DataError, match="no images matching"):
        find_samples(drive_copy, SPEC, "training")


def test_every_file_is_checked_before_training_starts(drive_copy, tmp_path):
    """A corrupt last image stops the run at loading time, with no checkpoint written."""
    path = find_samples(drive_copy, SPEC, "training")[-1].label
    path.write_bytes(b"")
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "--data-root", str(drive_copy),
                           "--epochs", "1", "--image-size", "64", "64", "--base-width", "4",
                           "--cache-dir", str(tmp_path / "c"), "--output-root", str(tmp_path / "o")],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == f"error: {path}: empty file"
    assert "Traceback" not in proc.stderr and not (tmp_path / "o" / "DRIVE_AV").exists()


@pytest.mark.parametrize("args,message", [
    (["--image-size", "600", "592"], "image size 600 x 592 must be positive multiples of 16"),
    (["--dataset", "HRF"], "unknown data set 'HRF'"),
    (["--validation", "100"], "--validation (--v) 100: must be a percent of the training images above 0 and below 100"),
    (["--image-every", "-1"], "--image-every -1: must be 0 (no pictures) or more epochs"),
    (["--time-limit", "-5"], "--time-limit -5: must be a finite number of minutes, 0 or more"),
    (["--batch-size", "0"], "--batch-size 0: must be at least 1"),
    (["--base-width", "3"], "--base-width 3: must be an even number of at least 2"),
    (["--rotation-step", "0"], "--rotation-step 0: must be 1..360 degrees"),
    (["--learning-rate", "-1"], "--learning-rate -1: must be a finite number above 0"),
    (["--alpha", "-1"], "--alpha -1: a loss weight must be a finite number, 0 or more (0 leaves its term out)"),
    (["--gama", "nan"], "--gama (--gamma) nan: a loss weight must be a finite number, 0 or more (0 leaves its "
                        "term out)"),
    (["--beta", "inf"], "--beta inf: a loss weight must be a finite number, 0 or more (0 leaves its term out)"),
    (["--v", "nan"], "--validation (--v) nan: must be a percent of the training images above 0 and below 100"),
    (["--v", "-5"], "--validation (--v) -5: must be a percent of the training images above 0 and below 100"),
    (["--time-limit", "nan"], "--time-limit nan: must be a finite number of minutes, 0 or more"),
    (["--save-every", "inf"], "--save-every inf: must be a finite number of minutes, 0 or more"),
    (["--learning-rate", "inf"], "--learning-rate inf: must be a finite number above 0"),
    (["--job_name", "../escape"], "--job_name '../escape': must be a plain folder name"),
    (["--job_name", os.fsdecode(b"caf\xe9")], "--job_name 'caf\\udce9': not valid UTF-8 text"),  # a Latin-1 name
    (["--device", "gpu"], "--device gpu: not a device; use cpu, cuda or cuda:N"),
    (["--resume"], "--resume: no saved run to continue, DRIVE_AV/default/last.pth not found"),
])
def test_bad_options(drive_copy, tmp_path, monkeypatch, capsys, args, message):
    """train.py's main in this process (a subprocess per case cost 5 s of start-up each; the
    start-up's own silence is checked by the subprocess tests above and below)."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        train.main(["--data-root", str(drive_copy), "--epochs", "1", "--cache-dir", str(tmp_path / "c"), *args])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and len(err.strip().splitlines()) == 1 and message in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # nothing written


def test_a_cpu_run_larger_than_the_machine_is_refused_before_any_data(drive_copy, tmp_path, monkeypatch, capsys):
    """A step estimated above the machine's whole memory (the kernel would kill it at its first
    step, exit 137, without a word): one line and nothing written; --no-memory-check tries."""
    from scripts import device
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(device, "total_memory_mib", lambda: 2048.0)  # a 2 GiB machine
    common = ["--data-root", str(drive_copy), "--epochs", "1", "--cache-dir", str(tmp_path / "c"), "--device", "cpu",
              "--no-amp", "--batch-size", "2"]
    with pytest.raises(SystemExit) as stop:
        train.main([*common, "--image-size", "592", "592", "--base-width", "8"])
    assert stop.value.code == 2 and capsys.readouterr().err.strip().splitlines() == [
        "error: a training step at 592 x 592, width 8, batch 2 in fp32 needs about 4 GiB of memory on a CPU, more "
        "than this machine's 2 GiB: the system would kill it at its first step; a smaller --batch-size, --base-width "
        "or --image-size needs less (linear in each) (--no-memory-check tries all the same)"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # nothing decoded, nothing written
    with pytest.raises(SystemExit):  # a batch above the 3 training images of the copy is a batch of 3
        train.main([*common, "--image-size", "592", "592", "--base-width", "8", "--batch-size", "32"])
    assert "width 8, batch 3 in fp32 needs about 5 GiB" in capsys.readouterr().err
    monkeypatch.setattr(device, "total_memory_mib", lambda: 100.0)  # less than any run needs, but told to try
    train.main([*common, "--image-size", "64", "64", "--base-width", "4", "--no-memory-check"])
    assert (tmp_path / "DRIVE_AV" / "default" / "CP_best_F1_all.pth").is_file()


def test_greyscale_photographs_among_colour_ones_are_noted(drive_copy, tmp_path, monkeypatch, capsys):
    """A red-free capture among colour photographs: noted by train.py (a mix) and test.py."""
    import test as test_script
    monkeypatch.chdir(tmp_path)
    for split in ("training", "test"):
        photo = first(drive_copy, split).image
        Image.open(photo).convert("L").convert("RGB").save(photo)
    common = ["--data-root", str(drive_copy), "--cache-dir", str(tmp_path / "c"), "--image-size", "64", "64"]
    train.main([*common, "--epochs", "1", "--base-width", "4", "--device", "cpu", "--job_name", "r"])
    assert ("note: 1 of the 4 photographs are greyscale, the others colour (e.g. 21_training): the networks tell "
            "artery from vein mostly by colour, so a mix of the two is a harder lesson") in capsys.readouterr().out
    test_script.main([*common, "--job_name", "r", "--workers", "1"])
    assert ("note: 1 of the 4 test photographs are greyscale: the networks tell artery from vein mostly by colour "
            "(arteries are lighter and redder), so expect poorer A/V maps unless the networks were trained on such "
            "photographs (e.g. 01_test)") in capsys.readouterr().err


def test_an_output_root_runs_dir_or_cache_dir_that_is_a_file_is_one_line_before_any_data(drive_copy, tmp_path, monkeypatch,
                                                                                 capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("kept")
    for option in ("--output-root", "--runs-dir", "--cache-dir"):
        with pytest.raises(SystemExit) as stop:
            train.main(["--data-root", str(drive_copy), "--epochs", "1", "--cache-dir", str(tmp_path / "c"),
                        "--image-size", "64", "64", "--base-width", "4", option, "afile"])
        assert stop.value.code == 2
        assert capsys.readouterr().err.strip().splitlines() == [f"error: {option}: afile is a file; give a folder"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "data"]  # nothing decoded, nothing written


@pytest.mark.parametrize("args,message", [
    (["--dataset", "FOO"], "error: unknown data set 'FOO'"),
    (["--data-root", "nowhere"], "error: missing folder nowhere/DRIVE_AV/training/images"),
    (["--image-size", "60", "60"], "error: image size 60 x 60 must be positive multiples of 16"),
    (["--test-images", "0"], "error: --steps, --batch-size and --test-images must be at least 1"),
])
def test_benchmark_bad_options_are_one_line_before_any_child_starts(monkeypatch, capsys, tmp_path, args, message):
    import importlib.util
    spec = importlib.util.spec_from_file_location("benchmark", ROOT / "benchmarks" / "benchmark.py")
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(benchmark.subprocess, "run", lambda *a, **k: pytest.fail("a child was started"))
    with pytest.raises(SystemExit) as stop:
        benchmark.main(["--device", "cpu", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1 and err[0].startswith(message), err


def test_benchmark_with_an_unreadable_pack_description_is_one_line_before_any_child_starts(
        real_data, monkeypatch, capsys, tmp_path):
    import importlib.util
    spec = importlib.util.spec_from_file_location("benchmark", ROOT / "benchmarks" / "benchmark.py")
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    (tmp_path / "pack" / "DRIVE_AV").mkdir(parents=True)
    for split in ("training", "test"):  # the real photographs, by links: only pack.json is broken
        (tmp_path / "pack" / "DRIVE_AV" / split).symlink_to(real_data / "DRIVE_AV" / split)
    (tmp_path / "pack" / "DRIVE_AV" / "pack.json").write_text("{not json")
    monkeypatch.setattr(benchmark.subprocess, "run", lambda *a, **k: pytest.fail("a child was started"))
    with pytest.raises(SystemExit) as stop:
        benchmark.main(["--device", "cpu", "--data-root", str(tmp_path / "pack"), "--out", str(tmp_path / "b.json")])
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1 and "pack.json: unreadable pack description" in err[0], err
    assert not (tmp_path / "b.json").exists()


def test_train_load_checks_the_weights_before_reading_the_data(drive_copy, tmp_path, monkeypatch, capsys):
    """train.py --load: weights of another variant than the one named are one line before any
    photograph is decoded; weights of the right one initialise G, G_A and G_V."""
    from scripts.bfnet import Networks
    from scripts.checkpoint import save_best
    for activation in ("sigmoid", "softmax"):
        save_best(tmp_path / activation, Networks(activation, 4),
                  RunConfig(activation=activation, base_width=4, image_size=(64, 64)), 1, 0.5)
    monkeypatch.chdir(tmp_path)
    common = ["--data-root", str(drive_copy), "--epochs", "1", "--image-size", "64", "64", "--base-width", "4",
              "--batch-size", "2", "--validation", "25", "--cache-dir", str(tmp_path / "c"),
              "--output-root", str(tmp_path / "o"), "--runs-dir", str(tmp_path / "runs"), "--device", "cpu"]

    def train_py(*argv):  # train.py's main in this process: (exit status, stdout, stderr)
        with pytest.raises(SystemExit) as info:
            train.main([*argv])
            sys.exit(0)
        out = capsys.readouterr()
        return info.value.code, out.out, out.err

    for other, named, word in (("softmax", ["--activation", "sigmoid"], "activation=sigmoid was asked for"),
                               ("sigmoid", ["--fusion", "none"], "fusion=none was asked for")):
        code, _, err = train_py(*common, *named, "--load", str(tmp_path / other))
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert word in err and not (tmp_path / "c").exists()
    code, out, err = train_py(*common, "--load", str(tmp_path / "sigmoid"))
    assert code == 0, err[-2000:]
    assert f"initialised generators from {tmp_path / 'sigmoid'}" in out
    # Without --base-width / --activation the weights' own are taken; with --resume, one line.
    loose = [c for c in common if c not in ("--base-width", "4")] + ["--job_name", "from_softmax"]
    code, out, err = train_py(*loose, "--load", str(tmp_path / "softmax"))
    assert code == 0, err[-2000:]
    assert "softmax variant, fusion mean, width 4" in out
    code, _, err = train_py(*common, "--load", str(tmp_path / "sigmoid"), "--resume")
    assert code == 2 and err.strip() == ("error: --load starts a new run from other weights, "
                                         "--resume continues this one: give one")


def test_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(drive_copy, tmp_path, monkeypatch):
    cfg = RunConfig(data_root=str(drive_copy), job_name="nan", epochs=3, batch_size=4, image_size=(64, 64),
                    base_width=4, validation=25, cache_dir=str(tmp_path / "c"), device="cpu", log_every=1,
                    save_every=0)
    real_step = train.Trainer.step
    calls = {"n": 0}

    def step(self, images, labels, weight=1.0):
        calls["n"] += 1
        losses = real_step(self, images, labels, weight)
        if calls["n"] > 1:  # the second epoch (one step per epoch here) goes wrong
            losses["G"] = torch.tensor(float("nan"))
        return losses

    monkeypatch.setattr(train.Trainer, "step", step)
    with pytest.raises(ConfigError, match="non-finite loss .*'G': nan.* in epoch 2; stopped, the last good "
                                          "checkpoints in .*nan are kept"):
        train.train(cfg, tmp_path / "runs", tmp_path)
    saved = torch.load(tmp_path / "DRIVE_AV/nan/CP_best_F1_all.pth", weights_only=True)
    assert saved["epoch"] == 1 and torch.load(tmp_path / "DRIVE_AV/nan/last.pth", weights_only=True)["epoch"] == 0
    # The curves up to the failure reach the disk (the losses going wrong are what one wants to see).
    from scripts.scalars import read_scalars
    scalars = read_scalars(tmp_path / "runs" / "DRIVE_AV_nan")
    assert "val/average/f1" in scalars and [step for step, *_ in scalars["loss/G"]] == [1]


def test_test_py_refuses_to_average_runs_of_different_variants(tmp_path, capsys):
    """A mean ± std over a sigmoid and a softmax run would read as seeds of one model."""
    import test as test_script
    from scripts.bfnet import Networks
    from scripts.checkpoint import save_best
    folders = []
    for activation in ("sigmoid", "softmax"):
        folder = tmp_path / activation
        save_best(folder, Networks(activation, 4), RunConfig(activation=activation, base_width=4,
                                                             image_size=(64, 64)), 1, 0.5)
        folders.append(str(folder))
    with pytest.raises(SystemExit) as info:
        test_script.main(["--load", *folders, "--output", str(tmp_path / "out")])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: the runs of one test must share variant, width and fusion")
    assert f"{folders[1]} is softmax, width 4, fusion mean" in err[0]
    assert not (tmp_path / "out").exists()
    # Nor runs trained on different data sets or at different input sizes (where their files say).
    for what, configs, said in (
            ("data set", [{"dataset": "DRIVE_AV"}, {"dataset": "LES-AV"}], "DRIVE_AV; "),
            ("input size", [{"image_size": (64, 64)}, {"image_size": (96, 96)}], "64 x 64; ")):
        folders = []
        for k, config in enumerate(configs):
            folder = tmp_path / f"{what}{k}"
            save_best(folder, Networks("sigmoid", 4), RunConfig(base_width=4, **{"image_size": (64, 64), **config}),
                      1, 0.5)
            folders.append(str(folder))
        with pytest.raises(SystemExit):
            test_script.main(["--load", *folders, "--output", str(tmp_path / "out")])
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: the runs of one test must be trained on one {what}, "
                                                   f"to be averaged: {folders[0]}: {said}"), err


def test_test_py_one_line_errors_and_a_test_split_of_another_size(drive_copy, tmp_path, capsys, monkeypatch):
    """No weights named, --batch-size 0, --workers 0, a segment metric setting out of range, an
    --output or --cache-dir that is a file, an --output holding the test of another run: one
    line each, exit 2, before any prediction. Four DRIVE_AV test images score, with a note that the published
    test set has 20."""
    import test as test_script
    from scripts.bfnet import Networks
    from scripts.checkpoint import save_best
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    save_best(run, Networks("sigmoid", 4), RunConfig(base_width=4, image_size=(64, 64)), 1, 0.5)
    (tmp_path / "link").symlink_to(run)  # the same run under another name
    a_file = tmp_path / "taken"
    a_file.write_text("x")
    for name in ("sm_seed38", "sm_seed7", "sm_seed7_old", "sm_seedling"):  # train.sh's names for seeds of job sm
        (tmp_path / "DRIVE_AV" / name).mkdir(parents=True)                 # (and two that are not)
    used = tmp_path / "used"  # holds the test of another run, which this test would drop
    used.mkdir()
    (used / "summary.json").write_text(json.dumps({"runs": ["elsewhere/other"]}))
    common = ["--data-root", str(drive_copy), "--cache-dir", str(tmp_path / "cache")]
    for args, line in (
            ([], "error: which weights? name a run with --job_name (a folder DRIVE_AV/<job_name>), or give "
                 "--load PATH, or --pretrained for the shipped bundle"),
            (["--load", str(run), "--batch-size", "0"], "error: --batch-size 0: must be at least 1"),
            (["--job_name", "sigmoid_seed42", "--seeds", "42"],
             "error: no run folder DRIVE_AV/sigmoid_seed42_seed42: --seeds N reads <job_name>_seedN, so --job_name "
             "names the runs without their seed (did you mean --job_name sigmoid?)"),
            (["--job_name", "sm"], "error: no run folder DRIVE_AV/sm, but runs of its seeds: --seeds 7 38 tests them"),
            (["--load", str(run), "--workers", "0"], "error: --workers 0: must be at least 1"),
            (["--load", str(run), str(tmp_path / "link")],
             f"error: {run} and {tmp_path / 'link'} are the same run: test each run once"),
            (["--load", str(run), "--segment-minority", "0.7"], "error: --segment-minority 0.7: must be a share in "
             "(0, 0.5] (0.10 is 10 %; the smaller of two classes is never more than half)"),
            (["--load", str(run), "--segment-min-length", "0"],
             "error: --segment-min-length 0: must be a whole number of pixels, at least 1"),
            (["--load", str(run), "--output", str(a_file)],
             f"error: --output {a_file}: a file of that name exists; give a folder"),
            (["--load", str(run), "--cache-dir", str(a_file)], f"error: --cache-dir: {a_file} is a file; give a folder"),
            (["--load", str(run), "--output", str(used)], f"error: --output {used} holds the test of elsewhere/other, "
                                                          f"which this test does not repeat: --overwrite replaces it, "
                                                          f"or --output DIR keeps both")):
        with pytest.raises(SystemExit) as info:
            test_script.main([*common, *args])
        assert info.value.code == 2
        assert capsys.readouterr().err.strip().splitlines() == [line]
    other = tmp_path / "other"  # a test of two runs: its per-run record is gone once its summary is written
    save_best(other, Networks("sigmoid", 4), RunConfig(base_width=4, image_size=(64, 64)), 1, 0.5)
    test_script.main([*common, "--load", str(run), str(other), "--output", str(tmp_path / "two")])
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["metrics.csv", "other", "run", "summary.json"]
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:  # the size is checked before the note that the earlier test goes
        test_script.main([*common, "--load", str(run), str(other), "--output", str(tmp_path / "two"),
                          "--image-size", "100", "100"])
    assert info.value.code == 2 and capsys.readouterr().err.strip().splitlines() == [
        "error: image size 100 x 100 must be positive multiples of 16 (the encoder halves it four times)"]
    test_script.main([*common, "--load", str(run), "--output", str(tmp_path / "out"), "--workers", "999"])
    err = capsys.readouterr().err
    assert (used / "summary.json").read_text() == json.dumps({"runs": ["elsewhere/other"]})  # refused: untouched
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["images"] == 4
    assert "note: --workers 999 is more than the " in err  # allowed, but said
    assert (f"note: 4 test images in {drive_copy / 'DRIVE_AV' / 'test'}, where the published DRIVE_AV test set "
            f"has 20: these numbers are not comparable with the published table") in err


def test_a_full_disk_during_a_test_is_one_line_and_keeps_the_earlier_test(drive_copy, tmp_path, capsys, monkeypatch):
    import errno

    import test as test_script
    from scripts.bfnet import Networks
    from scripts.checkpoint import save_best
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    save_best(run, Networks("sigmoid", 4), RunConfig(base_width=4, image_size=(64, 64)), 1, 0.5)
    out = tmp_path / "out"
    common = ["--data-root", str(drive_copy), "--cache-dir", str(tmp_path / "cache"), "--load", str(run),
              "--output", str(out), "--workers", "1"]
    test_script.main(common)
    before = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    real_save = Image.Image.save

    def full(self, fp, *args, **kwargs):
        if "mixed_segments" in str(fp):  # the third picture of the first image
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(self, fp, *args, **kwargs)
    monkeypatch.setattr(Image.Image, "save", full)
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        test_script.main(common)
    assert info.value.code == 2 and capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: cannot write this test into {out} (No space left on device); nothing of it is left there, and "
        f"what the folder held before is kept")
    assert {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_a_test_on_edited_labels_says_so_when_it_replaces_the_earlier_one(drive_copy, tmp_path, capsys, monkeypatch):
    """summary.json's SHA-256 of the test labels and masks: a test of the same runs on an edited
    copy of the data replaces the earlier test with a note that says what differs."""
    import test as test_script
    from scripts.bfnet import Networks
    from scripts.checkpoint import save_best
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    save_best(run, Networks("sigmoid", 4), RunConfig(base_width=4, image_size=(64, 64)), 1, 0.5)
    common = ["--data-root", str(drive_copy), "--cache-dir", str(tmp_path / "cache"), "--load", str(run),
              "--output", str(tmp_path / "out"), "--workers", "1"]
    test_script.main(common)
    test_script.main(common)
    assert "scored against other test labels" not in capsys.readouterr().err
    label_file = first(drive_copy, "test").label
    label = np.array(Image.open(label_file))
    label[label == 1] = 2  # arteries relabelled as veins
    Image.fromarray(label).save(label_file)
    test_script.main(common)
    assert "(scored against other test labels or masks: another copy of the data?)" in capsys.readouterr().err


@pytest.mark.parametrize("moved_in", [False, True])
def test_a_stop_while_the_results_move_in_says_what_the_folder_holds(moved_in, drive_copy, tmp_path, capsys,
                                                                     monkeypatch):
    """Stopped while its results replace the earlier test's: part of them there (run again), or,
    once summary.json has moved in (last), the test complete."""
    import test as test_script
    from scripts.bfnet import Networks
    from scripts.checkpoint import save_best
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    save_best(run, Networks("sigmoid", 4), RunConfig(base_width=4, image_size=(64, 64)), 1, 0.5)
    out = tmp_path / "out"
    real_publish = test_script.publish_test

    def stopped(*args, **kwargs):
        if moved_in:
            real_publish(*args, **kwargs)
        raise KeyboardInterrupt
    monkeypatch.setattr(test_script, "publish_test", stopped)
    with pytest.raises(SystemExit) as info:
        test_script.main(["--data-root", str(drive_copy), "--cache-dir", str(tmp_path / "cache"), "--load", str(run),
                          "--output", str(out), "--workers", "1"])
    said = capsys.readouterr().err.strip().splitlines()[-1]
    assert info.value.code == 130 and said.endswith(
        f"test.py stopped after writing its results to {out} (complete)" if moved_in else
        f"test.py stopped while putting its results in {out}, which may now hold part of them and no "
        f"summary.json: run the test again")
    assert (out / "summary.json").exists() == moved_in


def test_an_existing_output_folder_that_cannot_be_written_is_one_line(tmp_path, monkeypatch):
    """make_folder, which test.py, predict.py, pack and bundle call before their work: a
    read-only folder is one line there, not a traceback later. (The permission is simulated:
    the tests may run as root, who may write anywhere.)"""
    from scripts import files
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    real_access = files.os.access
    monkeypatch.setattr(files.os, "access", lambda p, mode: Path(p) != read_only and real_access(p, mode))
    with pytest.raises(ConfigError, match=re.escape(f"--output {read_only}: cannot write in this folder "
                                                    f"(no permission)")):
        files.make_folder(read_only, "--output")
    assert files.make_folder(tmp_path / "new" / "out", "--output").is_dir()
