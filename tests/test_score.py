"""python -m scripts.score: prediction pictures made elsewhere, scored on the real test sets
with the published protocol and the segment metric."""
import json
import re

import numpy as np
import pytest
from PIL import Image

from scripts import metrics, score
from scripts.config import dataset_spec
from scripts.data import find_samples, load_truth


@pytest.fixture(scope="module")
def drive_truth(real_data):
    return [(s, *load_truth(s)) for s in find_samples(real_data, dataset_spec("DRIVE_AV"), "test")]


def write_pictures(folder, drive_truth, picture_of, suffix=""):
    folder.mkdir()
    for sample, label, _fov in drive_truth:
        Image.fromarray(picture_of(label)).save(folder / f"{sample.name}{suffix}.png")


def test_the_truth_drawn_as_a_picture_scores_perfectly(real_data, drive_truth, tmp_path, capsys, monkeypatch):
    write_pictures(tmp_path / "truth", drive_truth, lambda label: metrics.CLASS_COLOURS[label], "_colour")
    summary = score.score_folder("DRIVE_AV", tmp_path / "truth", "_colour", real_data)
    for key in ("sensitivity", "f1", "auc_roc", "auc_pr"):
        assert summary["average"][key]["mean"] == pytest.approx(100), key
    assert summary["average"]["mse"]["mean"] == 0
    segments = summary["segments"]
    assert segments["mixed_any"]["mean"] == segments["missed"]["mean"] == 0
    assert segments["segment_accuracy"]["mean"] == 100 and segments["count"]["mean"] == pytest.approx(207.25)
    out = tmp_path / "truth_scores"  # the default: beside the predictions, from a relative '.' too
    rows = (out / "metrics.csv").read_text()
    monkeypatch.chdir(tmp_path / "truth")
    again = score.score_folder("DRIVE_AV", ".", "_colour", real_data, workers=2)  # in threads: the same numbers
    assert again["runs"] == ["."] and again["average"] == summary["average"]
    assert (out / "metrics.csv").read_text() == rows
    summary = json.loads((out / "summary.json").read_text())
    assert summary == again and summary["images"] == 20
    assert len((out / "metrics.csv").read_text().splitlines()) == 21
    assert len(list((out / "mixed_segments").glob("*.png"))) == 20

    # A class map 0..3 (one channel, as the labels) scores alike; flipping the vein of one
    # image's left half to artery mixes segments there.
    def flipped(label):
        label = label.copy()
        half = label[:, :label.shape[1] // 2]
        half[half == 2] = 1
        return label
    write_pictures(tmp_path / "maps", drive_truth[:1] + [(s, flipped(l), f) for s, l, f in drive_truth[1:]],
                   lambda label: label)
    capsys.readouterr()
    maps = score.score_folder("DRIVE_AV", tmp_path / "maps", "", real_data)
    assert maps["average"]["f1"]["mean"] < 100 and maps["segments"]["mixed_any"]["mean"] > 0
    assert maps["prediction_kinds"] == {"one class per pixel": 20}
    assert "note:" not in capsys.readouterr().err

    # Several folders (a method's seeds) are runs: mean ± std over them, pictures per folder.
    write_pictures(tmp_path / "seed2", drive_truth, lambda label: label)
    both = score.score_folder("DRIVE_AV", [tmp_path / "maps", tmp_path / "seed2"], "", real_data, tmp_path / "seeds")
    f1 = both["average"]["f1"]
    assert f1["mean"] == pytest.approx((maps["average"]["f1"]["mean"] + 100) / 2)
    assert f1["std"] == pytest.approx((100 - maps["average"]["f1"]["mean"]) / 2)
    assert list(both["per_run"]) == ["maps", "seed2"] and both["per_run"]["seed2"]["f1"] == pytest.approx(100)
    assert (tmp_path / "seeds" / "metrics.csv").read_text().startswith("run,image,")
    assert len(list((tmp_path / "seeds" / "mixed_segments" / "seed2").glob("*.png"))) == 20
    with pytest.raises(score.ConfigError, match=re.escape(f"--output {tmp_path / 'seeds'} holds the scores of "
                                                          f"{tmp_path / 'seed2'}, which this scoring does not repeat: "
                                                          f"--overwrite replaces them")):
        score.score_folder("DRIVE_AV", tmp_path / "maps", "", real_data, tmp_path / "seeds")  # one folder now
    score.score_folder("DRIVE_AV", tmp_path / "maps", "", real_data, tmp_path / "seeds", overwrite=True)
    assert not (tmp_path / "seeds" / "mixed_segments" / "seed2").exists()
    with pytest.raises(score.ConfigError, match="2 prediction folders: name the folder of their scores"):
        score.score_folder("DRIVE_AV", [tmp_path / "maps", tmp_path / "seed2"], "", real_data)
    with pytest.raises(score.ConfigError, match="are the same folder: each run once"):
        score.score_folder("DRIVE_AV", [tmp_path / "maps", tmp_path / "seed2" / ".." / "maps"], "", real_data, tmp_path / "x")

    # Seeds beside their scores (exp/seed1, exp/seed2, --output exp), scored twice: the
    # predictions are never touched; test.py's raw_pre folders are named after their runs.
    exp = tmp_path / "exp"
    exp.mkdir()
    for seed in ("seed1", "seed2"):
        write_pictures(exp / seed, drive_truth, lambda label: label)
    for _ in range(2):
        score.score_folder("DRIVE_AV", [exp / "seed1", exp / "seed2"], "", real_data, exp)
    assert all(len(list((exp / seed).glob("*.png"))) == 20 for seed in ("seed1", "seed2"))
    runs = tmp_path / "runs"
    for run in ("runA", "runB"):
        (runs / run).mkdir(parents=True)
        write_pictures(runs / run / "raw_pre", drive_truth, lambda label: label)
    named = score.score_folder("DRIVE_AV", [runs / "runA" / "raw_pre", runs / "runB" / "raw_pre"], "", real_data,
                               tmp_path / "cmp")
    assert list(named["per_run"]) == ["runA", "runB"]
    with pytest.raises(score.ConfigError, match="runA: pictures of the mixed segments, not predictions"):
        score.score_folder("DRIVE_AV", tmp_path / "cmp" / "mixed_segments" / "runA", "", real_data, tmp_path / "x")
    (tmp_path / "cmp" / "mixed_segments" / "mine").mkdir()  # predictions kept where the scoring writes
    write_pictures(tmp_path / "cmp" / "mixed_segments" / "mine" / "maps", drive_truth, lambda label: label)
    with pytest.raises(score.ConfigError, match="its mixed_segments/, which this replaces, holds the predictions"):
        score.score_folder("DRIVE_AV", tmp_path / "cmp" / "mixed_segments" / "mine" / "maps", "", real_data,
                           tmp_path / "cmp")
    (tmp_path / "cmp" / "summary.json").unlink()  # as a scoring stopped mid-way leaves it: taken up again
    (tmp_path / "cmp" / score.IN_PROGRESS).write_text("{}")
    score.score_folder("DRIVE_AV", runs / "runA" / "raw_pre", "", real_data, tmp_path / "cmp")
    assert not (tmp_path / "cmp" / score.IN_PROGRESS).exists()

    # Scored again into the same folder: the earlier scores are replaced whole, pictures too.
    (tmp_path / "maps_scores" / "mixed_segments" / "stale.png").write_bytes(b"")
    score.score_folder("DRIVE_AV", tmp_path / "maps", "", real_data)
    assert f"the earlier scores in {tmp_path / 'maps_scores'} will be replaced once this scoring is complete" in \
        capsys.readouterr().err
    assert len(list((tmp_path / "maps_scores" / "mixed_segments").iterdir())) == 20

    # Pictures that score other than they look are named: a light background; vessels drawn
    # R and B both on (no A/V decision), which the segment metric sees as artery alone.
    def white_background(label):
        picture = metrics.CLASS_COLOURS[label]
        picture[label == 0] = 255
        return picture
    write_pictures(tmp_path / "white", drive_truth, white_background)
    score.score_folder("DRIVE_AV", tmp_path / "white", "", real_data)
    assert "vessel predicted over more than half the FOV in 20 of 20 image(s)" in capsys.readouterr().err
    write_pictures(tmp_path / "purple", drive_truth, lambda label: np.where((label > 0)[..., None], np.uint8(255),
                                                                            np.uint8(0)) * np.array([1, 0, 1], np.uint8))
    purple = score.score_folder("DRIVE_AV", tmp_path / "purple", "", real_data)
    err = capsys.readouterr().err
    assert "100.0 % of the predicted vessel pixels have R and B on, G off" in err
    assert "vein never predicted in any segment" in err and purple["segments"]["mixed_any"]["mean"] == 0
    # The summary keeps that note, and scripts.compare repeats it beside the numbers.
    assert [n.split(":")[0] for n in purple["segment_notes"]] == ["vein never predicted in any segment"]
    from scripts import compare
    compare.main([str(tmp_path / "purple_scores"), str(tmp_path / "white_scores")])
    err = capsys.readouterr().err
    assert "note: purple_scores: segment metric: vein never predicted in any segment" in err
    assert "note: white_scores: vessel predicted over more than half the FOV in 20 of 20 image(s)" in err
    assert "white or grey" not in err  # the light background said once, not also as a vessel map


def test_a_stopped_scoring_leaves_the_earlier_scores_as_they_were(real_data, drive_truth, tmp_path, capsys,
                                                                  monkeypatch):
    """Written aside and put in place once complete: Ctrl-C (or SIGTERM, or an error) during a
    scoring again is one line, and the earlier summary, metrics.csv and pictures stay whole."""
    write_pictures(tmp_path / "p", drive_truth, lambda label: label)
    score.main(["--dataset", "DRIVE_AV", "--predictions", str(tmp_path / "p"), "--data-root", str(real_data),
                "--workers", "1"])
    out = tmp_path / "p_scores"
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    scored = []
    real_score_one = score.score_one

    def stopped_at_the_third(*args, **kwargs):
        if len(scored) == 2:
            raise KeyboardInterrupt
        scored.append(1)
        return real_score_one(*args, **kwargs)
    monkeypatch.setattr(score, "score_one", stopped_at_the_third)
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        score.main(["--dataset", "DRIVE_AV", "--predictions", str(tmp_path / "p"), "--data-root", str(real_data),
                    "--workers", "1"])
    assert info.value.code == 130 and capsys.readouterr().err.strip().splitlines()[-1] == (
        "interrupted: scripts.score stopped; its --output holds what it held before (earlier scores are kept)")
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    monkeypatch.setattr(score, "score_one", real_score_one)
    real_publish = score.publish_scores

    def stopped_half_way(out_dir, stage):  # the earlier summary gone, the new one not yet in
        (out_dir / "summary.json").unlink()
        raise KeyboardInterrupt
    monkeypatch.setattr(score, "publish_scores", stopped_half_way)
    with pytest.raises(SystemExit):
        score.main(["--dataset", "DRIVE_AV", "--predictions", str(tmp_path / "p"), "--data-root", str(real_data),
                    "--workers", "1"])
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "interrupted: scripts.score stopped while it put the scores in place: its --output may hold part of them; "
        "score again")
    monkeypatch.setattr(score, "publish_scores", real_publish)
    score.main(["--dataset", "DRIVE_AV", "--predictions", str(tmp_path / "p"), "--data-root", str(real_data),
                "--workers", "1"])  # taken up again (the folder is marked as this tool's), not refused
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_transparent_pixels_are_background(real_data, drive_truth, tmp_path, capsys, monkeypatch):
    """A picture drawn on a transparent layer (white where nothing is drawn, alpha 0) shows black
    there: scored as it shows, not as a light background."""
    def on_a_layer(label):
        rgba = np.concatenate([metrics.CLASS_COLOURS[label], np.full(label.shape + (1,), 255, np.uint8)], axis=2)
        rgba[label == 0] = (255, 255, 255, 0)
        return rgba
    write_pictures(tmp_path / "layer", drive_truth[:1], on_a_layer)
    monkeypatch.setattr(score, "find_samples", lambda *a: [s for s, _, _ in drive_truth[:1]])  # (one image will do)
    summary = score.score_folder("DRIVE_AV", tmp_path / "layer", "", real_data)
    assert summary["average"]["f1"]["mean"] == pytest.approx(100) and "note:" not in capsys.readouterr().err
    (tmp_path / "palette").mkdir()  # a palette picture whose index 0 is a transparent white
    sample, label, _ = drive_truth[0]
    picture = Image.fromarray(label, mode="L").convert("P")
    picture.putpalette([255, 255, 255, *metrics.CLASS_COLOURS[1:].ravel().tolist()])
    picture.save(tmp_path / "palette" / f"{sample.name}.png", transparency=0)
    summary = score.score_folder("DRIVE_AV", tmp_path / "palette", "", real_data)
    assert summary["average"]["f1"]["mean"] == pytest.approx(100) and "note:" not in capsys.readouterr().err


def test_a_grey_vessel_map_is_noted(real_data, drive_truth, tmp_path, capsys, monkeypatch):
    """R, G and B on is the protocol's uncertain class: a vessel map in grey scores as one."""
    write_pictures(tmp_path / "grey", drive_truth[:1], lambda label: np.repeat(((label > 0) * 200).astype(np.uint8)[
        ..., None], 3, axis=2))
    monkeypatch.setattr(score, "find_samples", lambda *a: [s for s, _, _ in drive_truth[:1]])  # (one image will do)
    summary = score.score_folder("DRIVE_AV", tmp_path / "grey", "", real_data)
    assert summary["picture_notes"] == ["100.0 % of the predicted vessel pixels are white or grey (R, G and B on), "
                                        "which the protocol counts as uncertain: a vessel map rather than an A/V "
                                        "prediction?"]


def test_the_scores_never_go_into_a_folder_of_predictions(real_data, drive_truth, tmp_path):
    write_pictures(tmp_path / "p", drive_truth, lambda label: label)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "predictions.csv").write_text("path,output,status\n")  # predict.py's output folder
    for output in (tmp_path / "p", tmp_path / "run"):
        with pytest.raises(score.ConfigError, match=re.escape(f"--output {output}: a folder of predictions; the scores "
                                                              f"go into a folder of their own")):
            score.score_folder("DRIVE_AV", tmp_path / "p", "", real_data, output)
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == sorted(f"{s.name}.png" for s, _, _ in drive_truth)


def test_an_older_scoring_that_recorded_its_predictions_relative_to_another_folder_is_replaced(
        real_data, drive_truth, tmp_path, monkeypatch):
    """Summaries before run_paths kept the predictions as given ('p', from tmp_path): scored again
    from elsewhere, they are found beside the scores, the default place, and replaced."""
    write_pictures(tmp_path / "p", drive_truth, lambda label: label)
    (tmp_path / "p_scores").mkdir()
    (tmp_path / "p_scores" / "summary.json").write_text(json.dumps({"scored": "p", "runs": ["p"]}))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    score.score_folder("DRIVE_AV", tmp_path / "p", "", real_data)
    assert json.loads((tmp_path / "p_scores" / "summary.json").read_text())["run_paths"] == [str(tmp_path / "p")]
    assert score._recorded_run("work/p", tmp_path / "p_scores") == str(tmp_path / "p")  # given as a path, from above


def test_score_refuses_what_it_cannot_score_in_one_line(real_data, drive_truth, tmp_path, capsys):
    write_pictures(tmp_path / "p", drive_truth, lambda label: metrics.CLASS_COLOURS[label])
    first = tmp_path / "p" / f"{drive_truth[0][0].name}.png"
    predictions = ["--predictions", str(tmp_path / "p")]

    def refused(says, args=predictions):
        with pytest.raises(SystemExit) as info:
            score.main(["--dataset", "DRIVE_AV", "--data-root", str(real_data), *args])
        err = capsys.readouterr().err.strip().splitlines()
        assert info.value.code == 2 and err[-1].startswith("error: ") and says in err[-1], (says, err)
        assert sum(line.startswith("error") for line in err) == 1

    first.unlink()
    refused("no 01_test.png for 1 of the 20 test images")
    Image.new("RGB", (584, 565)).save(first)  # width and height swapped
    refused("584 x 565, but the test image 01_test is 565 x 584")
    Image.new("I;16", (565, 584)).save(first)
    refused("mode I;16: give an 8-bit colour picture")
    labels = Image.fromarray(drive_truth[0][1]).convert("P")  # class indices, Pillow's default grey palette
    labels.save(first)
    refused("a palette picture of indices [0, 1, 2, 3] whose colours are not the class colours")
    labels.putpalette(metrics.CLASS_COLOURS.ravel().tolist())  # predict.py's _classes.png: the class colours
    labels.save(first)
    assert (score.read_prediction(first, (565, 584)) == metrics.CLASS_COLOURS[drive_truth[0][1]]).all()
    first.write_bytes(b"not a png")
    refused("cannot decode image")
    Image.new("L", (565, 584), 200).save(first)  # grey levels, not a class map
    refused("a single-channel picture with values up to 200")
    Image.fromarray(metrics.CLASS_COLOURS[drive_truth[0][1]]).save(first)
    (tmp_path / "test").mkdir()  # a folder holding test.py's summary is never overwritten
    (tmp_path / "test" / "summary.json").write_text(json.dumps({"average": {}, "runs": ["r"]}))
    refused("holds summary.json, which this did not write", [*predictions, "--output", str(tmp_path / "test")])
    assert json.loads((tmp_path / "test" / "summary.json").read_text()) == {"average": {}, "runs": ["r"]}
    (tmp_path / "test" / "seed42" / "raw_pre").mkdir(parents=True)  # a run's pictures in a test of several
    refused("holds raw_pre, which this did not write", [*predictions, "--output", str(tmp_path / "test" / "seed42")])
    refused("unknown data set", [*predictions, "--dataset", "DRIVE"])
    (tmp_path / "mine").mkdir()  # files of one's own are never overwritten
    (tmp_path / "mine" / "metrics.csv").write_text("my,own,table\n")
    refused("holds metrics.csv, which this did not write", [*predictions, "--output", str(tmp_path / "mine")])
    assert (tmp_path / "mine" / "metrics.csv").read_text() == "my,own,table\n"
    refused("--suffix .png: the part between the image's name and .png", [*predictions, "--suffix", ".png"])
    (tmp_path / "p" / "predict_run.json").write_text("{}")  # predict.py's folder: its overlays are no predictions
    refused("--suffix _overlay: predict.py's _overlay.png pictures are not predictions to score",
            [*predictions, "--suffix", "_overlay"])
    (tmp_path / "p" / "predict_run.json").unlink()
    Image.fromarray(metrics.CLASS_COLOURS[drive_truth[0][1]]).save(first, format="JPEG")
    refused("JPEG data in a .png file")
    Image.fromarray(metrics.CLASS_COLOURS[drive_truth[0][1]]).save(first)
    for p in (tmp_path / "p").glob("*.png"):  # none of the names asked for: what the folder holds
        p.rename(p.with_suffix(".PNG"))
    refused("no 01_test.png, 02_test.png, 03_test.png (and 17 more) for 20 of the 20 test images (<name>.png); it "
            "holds e.g. 01_test.PNG, 02_test.PNG, 03_test.PNG: only <name>.png at its top level is read (01_test.PNG "
            "is not read: save the pictures as PNG files named <name>.png)")
    for p in (tmp_path / "p").glob("*.PNG"):
        p.rename(p.with_name(f"{p.stem}_pred.png"))
    refused("only <name>.png at its top level is read (01_test is read with --suffix _pred)")
    refused("only <name>_colour.png at its top level is read (01_test is read with --suffix _pred)",
            [*predictions, "--suffix", "_colour"])
    refused("only <name>.png at its top level is read (no file is named after a test image of this data set (224, "
            "240, ...): another data set's predictions? (--dataset)", [*predictions, "--dataset", "LES-AV"])
    for p in (tmp_path / "p").glob("*_pred.png"):
        p.rename(p.with_name(f"{p.stem.removesuffix('_pred')}.png"))
    refused("only <name>_colour.png at its top level is read (01_test is read without --suffix)",
            [*predictions, "--suffix", "_colour"])
    (tmp_path / "cohort" / "images").mkdir(parents=True)  # predict.py's outputs of a data set folder's images/
    for p in (tmp_path / "p").glob("*.png"):
        p.rename(tmp_path / "cohort" / "images" / f"{p.stem}_colour.png")
    refused(f"holds e.g. images/: only <name>.png at its top level is read (01_test is read with --predictions "
            f"{tmp_path / 'cohort' / 'images'} --suffix _colour)", ["--predictions", str(tmp_path / "cohort")])
    for p in (tmp_path / "cohort" / "images").glob("*.png"):
        p.rename(tmp_path / "p" / f"{p.stem.removesuffix('_colour')}.png")
    (tmp_path / "p").rename(tmp_path / "mixed_segments")  # test.py's pictures of the mixed segments
    refused("pictures of the mixed segments, not predictions (test.py's are in raw_pre/)",
            ["--predictions", str(tmp_path / "mixed_segments")])


def test_the_segment_metric_settings_are_options_recorded_in_the_summary(real_data, drive_truth, tmp_path, capsys):
    """--segment-minority moves mixed_10 alone, --segment-min-length the segments themselves;
    the summary records both, the table names them, scripts.compare notes the difference."""
    def flipped(label):  # vein of the left half drawn as artery: mixed segments at the border
        label = label.copy()
        half = label[:, :label.shape[1] // 2]
        half[half == 2] = 1
        return label
    write_pictures(tmp_path / "maps", drive_truth, flipped)

    def scored(out, *options):
        score.main(["--dataset", "DRIVE_AV", "--data-root", str(real_data), "--predictions", str(tmp_path / "maps"),
                    "--output", str(tmp_path / out), *options])
        return json.loads((tmp_path / out / "summary.json").read_text()), capsys.readouterr().out

    default, _ = scored("default")
    strict, table = scored("strict", "--segment-minority", "0.3")
    longer, _ = scored("longer", "--segment-min-length", "40")
    assert default["segment_settings"] == {"min_length": 10, "minority": 0.1}
    assert strict["segment_settings"] == {"min_length": 10, "minority": 0.3}
    assert "segments >= 10 px, mixed_10 at minority >= 0.3" in table
    seg, seg_strict, seg_longer = default["segments"], strict["segments"], longer["segments"]
    assert seg_strict["count"] == seg["count"] and seg_strict["mixed_any"] == seg["mixed_any"]
    assert 0 < seg_strict["mixed_10"]["mean"] < seg["mixed_10"]["mean"] <= seg["mixed_any"]["mean"]
    assert strict["average"] == default["average"]  # the pixel metrics do not depend on them
    assert seg_longer["count"]["mean"] < seg["count"]["mean"]

    from scripts import compare
    compare.main([str(tmp_path / "default"), str(tmp_path / "strict")])
    assert ("note: these summaries differ in their segment metric settings: default segments >= 10 px, mixed_10 at "
            "minority >= 0.1, strict segments >= 10 px, mixed_10 at minority >= 0.3") in capsys.readouterr().err
    compare.main([str(tmp_path / "strict")])
    assert "note: segment metric not at its defaults" in capsys.readouterr().err
    compare.main([str(tmp_path / "default")])
    assert "segment metric" not in capsys.readouterr().err

    for option, value, says in (("--segment-minority", "0.6", "--segment-minority 0.6: must be a share in (0, 0.5]"),
                                ("--segment-minority", "0", "--segment-minority 0.0: must be a share in (0, 0.5]"),
                                ("--segment-min-length", "0", "--segment-min-length 0: must be a whole number")):
        with pytest.raises(SystemExit) as info:
            score.main(["--dataset", "DRIVE_AV", "--data-root", str(real_data), "--predictions", str(tmp_path / "maps"),
                        "--output", str(tmp_path / "bad"), option, value])
        err = capsys.readouterr().err.strip().splitlines()
        assert info.value.code == 2 and err == [f"error: {says}" + err[0].split(says, 1)[1]], err
    assert not (tmp_path / "bad").exists()


def test_scores_of_test_py_pictures_go_beside_the_test_not_into_it(real_data, drive_truth, tmp_path):
    """test.py's next test in its folder replaces what its summary describes: scores kept inside
    would outlive the pictures they were made of."""
    test_dir = tmp_path / "DRIVE_AV" / "Final_pre"
    test_dir.mkdir(parents=True)
    (test_dir / "summary.json").write_text(json.dumps({"runs": ["r"], "run_details": [{"run": "r"}]}))
    write_pictures(test_dir / "raw_pre", drive_truth, lambda label: metrics.CLASS_COLOURS[label])
    assert score.default_output(test_dir / "raw_pre") == tmp_path / "DRIVE_AV" / "Final_pre_raw_pre_scores"
    assert score.default_output(test_dir / "seed42" / "raw_pre") == (
        tmp_path / "DRIVE_AV" / "Final_pre_seed42_raw_pre_scores")  # a run's pictures in a test of several
    assert score.default_output(tmp_path / "maps") == tmp_path / "maps_scores"  # anyone else's: beside them
    assert score.default_output(test_dir / "mine") == test_dir / "mine_scores"  # not test.py's pictures
    (test_dir / "mixed_segments").mkdir()  # test.py's other pictures are never what the hint names
    with pytest.raises(score.ConfigError, match=re.escape(f"01_test is read with --predictions {test_dir / 'raw_pre'})")):
        score.score_folder("DRIVE_AV", test_dir, "", real_data)
    (test_dir / "mixed_segments").rmdir()
    score.score_folder("DRIVE_AV", test_dir / "raw_pre", "", real_data)
    assert (tmp_path / "DRIVE_AV" / "Final_pre_raw_pre_scores" / "summary.json").is_file()
    assert sorted(p.name for p in test_dir.iterdir()) == ["raw_pre", "summary.json"]
    # Asked for there by name (where older versions put them by default): refused in one line.
    with pytest.raises(score.ConfigError, match=re.escape(
            f"--output {test_dir / 'raw_pre_scores'} lies inside test.py's folder {test_dir}, whose pictures it "
            f"scores: a next test there replaces them")):
        score.score_folder("DRIVE_AV", test_dir / "raw_pre", "", real_data, test_dir / "raw_pre_scores")
    assert sorted(p.name for p in test_dir.iterdir()) == ["raw_pre", "summary.json"]
    # Such scores left by an older version: test.py's next test there says they will describe pictures gone.
    import test as test_script
    for scores in (test_dir / "raw_pre_scores", test_dir / "seed42" / "raw_pre_scores"):  # a test of several runs
        scores.mkdir(parents=True)
        (scores / "summary.json").write_text(json.dumps({"scored": ["raw_pre"]}))
    (test_dir / "notes").mkdir()
    (test_dir / "notes" / "summary.json").write_text(json.dumps("unscored notes"))  # not a summary of scores
    assert test_script.scores_inside(test_dir) == [test_dir / "raw_pre_scores", test_dir / "seed42" / "raw_pre_scores"]
    # The original project's Final_pre/raw_pre (no summary of test.py's): its default output beside the pictures.
    theirs = tmp_path / "original" / "Final_pre"
    theirs.mkdir(parents=True)
    write_pictures(theirs / "raw_pre", drive_truth, lambda label: metrics.CLASS_COLOURS[label])
    assert score.default_output(theirs / "raw_pre") == theirs / "raw_pre_scores"
    score.score_folder("DRIVE_AV", theirs / "raw_pre", "", real_data)
    assert (theirs / "raw_pre_scores" / "summary.json").is_file()
