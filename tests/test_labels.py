"""python -m scripts.labels: colour A/V labels (red artery, blue vein, green or white
uncertain) to the index labels the project reads."""
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from scripts import labels
from scripts.config import dataset_spec
from scripts.data import find_samples, read_label


def test_a_real_label_drawn_in_colour_comes_back_exactly(real_data, tmp_path, capsys):
    """A DRIVE_AV label drawn in RITE's colours (crossings green, unknown vessels white, with
    some noise below the threshold) converts back to the same index label."""
    sample = find_samples(real_data, dataset_spec("DRIVE_AV"), "test")[0]
    truth = read_label(sample.label)
    colours = np.array([[0, 0, 0], [255, 0, 0], [0, 0, 255], [0, 255, 0]], np.uint8)[truth]
    colours[(truth == 3) & (np.arange(truth.shape[1]) % 2 == 0)] = 255  # half the uncertain ones white
    colours = np.clip(colours.astype(int) + np.random.default_rng(0).integers(-40, 40, colours.shape), 0, 255)
    (tmp_path / "colour").mkdir()
    Image.fromarray(colours.astype(np.uint8)).save(tmp_path / "colour" / f"{sample.name}.tif")
    labels.main([str(tmp_path / "colour"), "--out", str(tmp_path / "index")])
    assert capsys.readouterr().out.strip() == f"wrote 1 index label(s) to {tmp_path / 'index'}"
    assert (read_label(tmp_path / "index" / f"{sample.name}.png") == truth).all()


@pytest.mark.parametrize("picture,message", [
    ([[255, 0, 255]], "colours of no class: R and B (purple) at 1 pixels, the first at x 0, y 0"),
    ([[1, 2, 3]], "no pixel has a channel at 128 or more: an index label already"),
    ([[127, 0, 0]], "no pixel has a channel at 128 or more: its brightest value is 127: drawn too dark for the "
                    "convention"),
    ([[255, 255, 255]], "a grey picture, no colour: a vessel map or an index label scaled for viewing"),
    ([[0, 255, 0]], "no artery (red) or vein (blue) pixel"),
])
def test_what_is_no_class_of_the_convention_is_one_line_and_nothing_written(picture, message, tmp_path, capsys):
    Image.fromarray(np.array([picture + [[0, 0, 0]]], np.uint8)).save(tmp_path / "a.png")
    with pytest.raises(SystemExit) as info:
        labels.main([str(tmp_path / "a.png"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and len(err) == 1 and message in err[0]
    assert not (tmp_path / "out").exists()


def test_nothing_is_written_over_an_existing_file_or_its_own_source(tmp_path, capsys):
    Image.fromarray(np.array([[[255, 0, 0], [0, 0, 255]]], np.uint8)).save(tmp_path / "a.png")
    for out, says in ((tmp_path, "would be written over its own source"), (tmp_path / "out", "exists: --overwrite")):
        (tmp_path / "out").mkdir(exist_ok=True)
        (tmp_path / "out" / "a.png").write_bytes(b"mine")
        with pytest.raises(SystemExit):
            labels.main([str(tmp_path / "a.png"), "--out", str(out)])
        assert says in capsys.readouterr().err
    assert (tmp_path / "out" / "a.png").read_bytes() == b"mine"
    labels.main([str(tmp_path / "a.png"), "--out", str(tmp_path / "out"), "--overwrite"])
    assert read_label(tmp_path / "out" / "a.png").tolist() == [[1, 2]]


def test_transparent_pixels_are_background(tmp_path):
    """A label drawn on a transparent layer: its invisible (white) pixels are no vessel."""
    rgba = np.array([[[255, 255, 255, 0], [255, 0, 0, 255], [0, 0, 255, 255], [255, 255, 255, 255]]], np.uint8)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    labels.main([str(tmp_path / "a.png"), str(tmp_path), "--out", str(tmp_path / "out")])  # the file twice: once
    assert read_label(tmp_path / "out" / "a.png").tolist() == [[0, 1, 2, 3]]


def coloured(truth):
    return np.array([[0, 0, 0], [255, 0, 0], [0, 0, 255], [0, 255, 0]], np.uint8)[truth]


def smoothed(picture, sigma):
    return np.round(np.stack([ndimage.gaussian_filter(c.astype(float), sigma) for c in np.moveaxis(picture, 2, 0)],
                             2)).astype(np.uint8)


def test_smoothed_edges_are_read_but_vessels_drawn_too_dark_or_smoothed_away_are_refused(real_data, tmp_path, capsys):
    """A paint tool's smoothed (anti-aliased) edges are dim beside the bright vessel:
    background, as the convention reads them. Veins drawn dark blue (0, 0, 110), or DRIVE's
    1-pixel vessels blurred below 128, would become background: refused, nothing written."""
    sample = find_samples(real_data, dataset_spec("DRIVE_AV"), "test")[0]
    truth = read_label(sample.label)
    Image.fromarray(smoothed(coloured(truth), 0.5)).save(tmp_path / "smooth.png")
    labels.main([str(tmp_path / "smooth.png"), "--out", str(tmp_path / "out")])
    assert (read_label(tmp_path / "out" / "smooth.png") == truth).mean() > 0.995  # an edge pixel here and there
    grey_ground = coloured(truth)
    grey_ground[truth == 0] = 50  # a dark grey background: no colour, read as background
    Image.fromarray(grey_ground).save(tmp_path / "grey_ground.png")
    labels.main([str(tmp_path / "grey_ground.png"), "--out", str(tmp_path / "out")])
    assert (read_label(tmp_path / "out" / "grey_ground.png") == truth).all()
    dark = coloured(truth)
    dark[truth == 2] = (0, 0, 110)
    Image.fromarray(dark).save(tmp_path / "dark.png")
    Image.fromarray(smoothed(coloured(truth), 1.0)).save(tmp_path / "blurred.png")
    for name, says in (("dark.png", "y 34, (0, 0, 110)), against 14"), ("blurred.png", "(74, 0, 0)), against 25438")):
        with pytest.raises(SystemExit) as info:
            labels.main([str(tmp_path / name), "--out", str(tmp_path / "out2")])
        err = capsys.readouterr().err.strip().splitlines()
        assert info.value.code == 2 and len(err) == 1 and "pixels in dim colours away from any bright vessel" in \
            err[0] and says in err[0] and "vessels drawn too dark or smoothed away" in err[0], err
    assert not (tmp_path / "out2").exists()


def test_a_jpeg_label_in_a_folder_is_refused_not_left_out(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    picture = np.array([[[255, 0, 0], [0, 0, 255]]], np.uint8)
    Image.fromarray(picture).save(tmp_path / "in" / "a.png")
    Image.fromarray(picture).save(tmp_path / "in" / "a.JPG", format="JPEG")  # a preview beside it
    with pytest.raises(SystemExit):
        labels.main([str(tmp_path / "in"), "--out", str(tmp_path / "out")])
    assert f"{tmp_path / 'in' / 'a.JPG'}: a JPEG label's colours blur" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
