"""Segment-level intra-segment misclassification (scripts/segments.py), on hand-drawn vessels.

Canvas 40 x 60 (H x W). Vessels are 3 pixels wide. Classes: 0 background, 1 artery, 2 vein, 3 uncertain.
"""
import numpy as np
import pytest
from PIL import Image
from skimage.draw import line

from scripts import segments
from scripts.segments import (DEFAULT_SETTINGS, SegmentSettings, draw_mixed_segments, outline_width,
                              pred_classes_from_picture, segment_scores,
                              split_segments)

H, W = 40, 60


def canvas():
    return np.zeros((H, W), np.uint8)


def full_fov():
    return np.ones((H, W), bool)


def hbar(label, row, c0, c1, value):
    """Horizontal vessel, 3 pixels wide centred on `row`, columns c0..c1-1."""
    label[row - 1:row + 2, c0:c1] = value
    return label


def thick_line(r0, c0, r1, c1):
    """Mask of a 3-pixel-wide straight line (a 1-pixel line dilated by a 3x3 square)."""
    m = np.zeros((H, W), bool)
    rr, cc = line(r0, c0, r1, c1)
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            m[np.clip(rr + dr, 0, H - 1), np.clip(cc + dc, 0, W - 1)] = True
    return m


def straight_artery():
    """One artery: rows 19..21, columns 5..54 (50 pixels long)."""
    return hbar(canvas(), 20, 5, 55, 1)


def scores(label, pred, fov=None, **kw):
    return segment_scores(label, pred, full_fov() if fov is None else fov, **kw)


# --- (1), (2): one straight vessel -----------------------------------------------------------------------

def test_straight_vessel_is_one_segment_covering_the_vessel():
    label = straight_artery()
    seg, n = split_segments(label, full_fov())
    assert n == 1
    assert seg.dtype == np.int32
    assert np.array_equal(seg > 0, label > 0)      # every vessel pixel is grown back into the segment
    assert set(np.unique(seg)) == {0, 1}


def test_half_artery_half_vein_is_mixed_and_the_longer_half_wins():
    label = straight_artery()
    pred = label.copy()
    pred[:, 35:55][label[:, 35:55] == 1] = 2        # 30 columns artery, 20 columns vein
    s = scores(label, pred)
    assert s["segments"] == 1
    assert s["mixed_any"] == 1.0 and s["mixed_10"] == 1.0
    assert s["segment_accuracy"] == 1.0             # artery is the majority: right
    assert s["fully_correct"] == 0.0
    assert s["missed"] == 0.0
    assert s["mixed_ids"] == [1]

    pred = label.copy()
    pred[:, 25:55][label[:, 25:55] == 1] = 2        # 20 columns artery, 30 columns vein
    s = scores(label, pred)
    assert s["mixed_any"] == 1.0 and s["mixed_10"] == 1.0
    assert s["segment_accuracy"] == 0.0             # vein is the majority: wrong
    assert s["fully_correct"] == 0.0


def test_a_tie_between_artery_and_vein_is_wrong():
    label = straight_artery()
    pred = label.copy()
    pred[:, 30:55][label[:, 30:55] == 1] = 2        # 25 / 25 columns
    s = scores(label, pred)
    assert s["segment_accuracy"] == 0.0
    assert s["mixed_10"] == 1.0


def test_all_artery_is_clean():
    label = straight_artery()
    s = scores(label, label.copy())
    assert s == {"segments": 1, "mixed_any": 0.0, "mixed_10": 0.0, "segment_accuracy": 1.0,
                 "fully_correct": 1.0, "missed": 0.0, "mixed_ids": [],
                 "class_pixels": {"artery": int((label == 1).sum()), "vein": 0}}


def test_a_few_flipped_pixels_are_mixed_but_below_the_minority_threshold():
    label = straight_artery()
    pred = label.copy()
    pred[20, 10:13] = 2                             # 3 of 150 pixels (2 %)
    s = scores(label, pred)
    assert s["mixed_any"] == 1.0
    assert s["mixed_10"] == 0.0 and s["mixed_ids"] == []
    assert s["segment_accuracy"] == 1.0 and s["fully_correct"] == 0.0
    assert scores(label, pred, minority=0.01)["mixed_10"] == 1.0


def test_uncertain_and_background_predictions_do_not_make_a_segment_mixed():
    label = straight_artery()
    pred = label.copy()
    pred[:, 5:20][label[:, 5:20] == 1] = 3          # uncertain part
    pred[:, 45:55] = 0                              # missed part
    s = scores(label, pred)
    assert s["mixed_any"] == 0.0 and s["mixed_10"] == 0.0
    assert s["segment_accuracy"] == 1.0
    assert s["fully_correct"] == 0.0
    assert s["missed"] == 0.0


# --- (3): a crossing ------------------------------------------------------------------------------------

def x_crossing():
    """An artery (top-left to bottom-right) and a vein (bottom-left to top-right) crossing in an X;
    the pixels of both vessels are uncertain (3)."""
    artery, vein = thick_line(3, 4, 36, 55), thick_line(36, 4, 3, 55)
    label = canvas()
    label[artery] = 1
    label[vein] = 2
    label[artery & vein] = 3
    return label


def plus_crossing():
    """A horizontal artery and a vertical vein crossing at right angles; the 3x3 crossing is uncertain."""
    label = hbar(canvas(), 20, 3, 57, 1)
    label[3:37, 29:32] = 2
    label[19:22, 29:32] = 3
    return label


@pytest.mark.parametrize("make", [x_crossing, plus_crossing])
def test_crossing_gives_four_arms_two_artery_two_vein(make):
    label = make()
    seg, n = split_segments(label, full_fov())
    assert n == 4
    classes = []
    for i in range(1, n + 1):
        values, counts = np.unique(label[(seg == i) & (label != 3)], return_counts=True)
        assert len(values) == 1, f"segment {i} mixes truth classes {values}"
        classes.append(int(values[0]))
    assert sorted(classes) == [1, 1, 2, 2]
    assert np.array_equal(seg > 0, label > 0)

    s = scores(label, label.copy())
    assert s["segments"] == 4
    assert s["mixed_any"] == 0.0 and s["mixed_10"] == 0.0
    assert s["segment_accuracy"] == 1.0 and s["fully_correct"] == 1.0 and s["missed"] == 0.0


@pytest.mark.parametrize("make", [x_crossing, plus_crossing])
def test_crossing_predicted_as_the_artery_on_top_does_not_flag_the_vein(make):
    label = make()
    pred = label.copy()
    pred[label == 3] = 1                            # the crossing itself is not judged
    s = scores(label, pred)
    assert s["mixed_any"] == 0.0 and s["segment_accuracy"] == 1.0 and s["fully_correct"] == 1.0


def test_vein_flipping_to_artery_after_the_crossing():
    label = plus_crossing()
    seg, _ = split_segments(label, full_fov())
    pred = label.copy()
    lower_vein = (label == 2) & (np.arange(H)[:, None] > 21)
    pred[lower_vein] = 1                            # the lower vein arm (rows 22..36) reads as artery
    pred[32:37, 29:32] = 2                          # ...except its last 5 rows, back to vein
    s = scores(label, pred)
    assert s["segments"] == 4
    assert s["mixed_10"] == 0.25                    # one arm of four flips halfway
    lower_id = int(np.bincount(seg[lower_vein]).argmax())
    assert s["mixed_ids"] == [lower_id]
    assert s["segment_accuracy"] == 0.75            # that arm is mostly artery: wrong
    assert s["fully_correct"] == 0.75


# --- (4): a bifurcation ---------------------------------------------------------------------------------

def test_bifurcation_gives_three_segments():
    label = canvas()
    stem, left, right = thick_line(37, 30, 20, 30), thick_line(20, 30, 2, 8), thick_line(20, 30, 2, 52)
    label[stem | left | right] = 1
    seg, n = split_segments(label, full_fov())
    assert n == 3
    assert np.array_equal(seg > 0, label > 0)
    s = scores(label, label.copy())
    assert s["segments"] == 3 and s["segment_accuracy"] == 1.0 and s["mixed_any"] == 0.0


# --- (5): a missed segment ------------------------------------------------------------------------------

def test_missed_segment_is_wrong_and_missed_not_mixed():
    label = hbar(hbar(canvas(), 10, 5, 55, 1), 30, 5, 55, 2)
    pred = label.copy()
    pred[25:35] = 0                                 # the vein is predicted background
    s = scores(label, pred)
    assert s["segments"] == 2
    assert s["missed"] == 0.5
    assert s["segment_accuracy"] == 0.5
    assert s["fully_correct"] == 0.5
    assert s["mixed_any"] == 0.0 and s["mixed_10"] == 0.0 and s["mixed_ids"] == []


def test_segment_predicted_only_uncertain_is_missed():
    label = straight_artery()
    pred = np.where(label > 0, 3, 0).astype(np.uint8)
    s = scores(label, pred)
    assert s["missed"] == 1.0 and s["segment_accuracy"] == 0.0 and s["mixed_any"] == 0.0


def test_mixed_shares_count_over_the_segments_with_a_prediction_only():
    """One segment mixed, one missed (no A/V prediction): mixed over the predicted segments is 1
    of 1, while accuracy and missed count over both segments."""
    label = hbar(straight_artery(), 32, 5, 55, 2)   # an artery (row 20) and a vein (row 32)
    pred = label.copy()
    pred[:, 35:55][label[:, 35:55] == 1] = 2        # the artery flips for its last 20 columns
    pred[label == 2] = 0                            # the vein is not predicted at all
    s = scores(label, pred)
    assert s["segments"] == 2
    assert s["mixed_any"] == 1.0 and s["mixed_10"] == 1.0
    assert s["missed"] == 0.5 and s["segment_accuracy"] == 0.5


def test_the_other_vessels_pixels_in_a_segment_are_not_judged():
    """Vein pixels grown into an artery's segment (as at a crossing) are left out of its
    judgement: predicting them as vein, correctly, does not make the artery mixed."""
    label = straight_artery()
    label[19:22, 28:31] = 2                         # 9 vein pixels inside the artery's segment
    seg, n = split_segments(label, full_fov(), min_length=10)
    assert n == 1 and (seg[19:22, 28:31] == 1).all()
    s = scores(label, label.copy(), segments=(seg, n))
    assert s["mixed_any"] == 0.0 and s["fully_correct"] == 1.0


def test_a_pixel_takes_the_nearest_piece_of_its_own_vessel_region():
    """A wide artery beside a thin vein, one background row apart: the artery's lower edge lies
    nearer the vein's skeleton than its own, yet belongs to the artery's segment."""
    label = canvas()
    label[5:20, 5:55] = 1                           # a 15-pixel-wide artery, rows 5..19
    label[21:23, 5:55] = 2                          # a 2-pixel vein, rows 21..22
    seg, n = split_segments(label, full_fov())
    artery_ids = set(np.unique(seg[label == 1]))
    vein_ids = set(np.unique(seg[label == 2]))
    assert 0 not in artery_ids and 0 not in vein_ids   # every vessel pixel is in a segment
    assert not artery_ids & vein_ids                   # and never in the other vessel's


# --- (6): short pieces ----------------------------------------------------------------------------------

def test_short_pieces_are_ignored():
    label = straight_artery()
    label[32:35, 20:26] = 2                         # a vein only 6 pixels long
    seg, n = split_segments(label, full_fov())
    assert n == 1
    assert not seg[32:35, 20:26].any()              # not grown into the artery's segment either
    assert split_segments(label, full_fov(), min_length=1)[1] == 2
    s = scores(label, label.copy())
    assert s["segments"] == 1
    assert split_segments(straight_artery(), full_fov(), min_length=60)[1] == 0


# --- (7): the field of view -----------------------------------------------------------------------------

def test_fov_excluding_a_segment_removes_it():
    label = hbar(hbar(canvas(), 10, 5, 55, 1), 30, 5, 55, 2)
    fov = full_fov()
    fov[20:] = False
    seg, n = split_segments(label, fov)
    assert n == 1
    assert not seg[20:].any()
    assert scores(label, label.copy(), fov)["segments"] == 1
    assert split_segments(label, full_fov())[1] == 2


# --- empty and edge cases -------------------------------------------------------------------------------

def test_no_segment_gives_zero_shares():
    empty = {"segments": 0, "mixed_any": 0.0, "mixed_10": 0.0, "segment_accuracy": 0.0,
             "fully_correct": 0.0, "missed": 0.0, "mixed_ids": [], "class_pixels": {"artery": 0, "vein": 0}}
    seg, n = split_segments(canvas(), full_fov())
    assert n == 0 and seg.shape == (H, W) and not seg.any()
    assert scores(canvas(), canvas()) == empty
    uncertain = hbar(canvas(), 20, 5, 55, 3)        # an uncertain vessel is a segment but not an A/V one
    assert split_segments(uncertain, full_fov())[1] == 1
    assert scores(uncertain, uncertain) == empty
    assert scores(straight_artery(), canvas(), np.zeros((H, W), bool)) == empty


def test_vessel_touching_the_image_border():
    label = canvas()
    label[0:3, :] = 1                               # along the top edge, end to end
    seg, n = split_segments(label, full_fov())
    assert n == 1 and np.array_equal(seg > 0, label > 0)


def test_precomputed_segments_give_the_same_scores():
    label = plus_crossing()
    pred = label.copy()
    pred[:, 40:] = np.where(pred[:, 40:] == 1, 2, pred[:, 40:])
    fov = full_fov()
    assert scores(label, pred, segments=split_segments(label, fov)) == scores(label, pred)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError):
        segment_scores(canvas(), np.zeros((H, W + 1), np.uint8), full_fov())
    with pytest.raises(ValueError):
        split_segments(canvas(), np.ones((H + 1, W), bool))


# --- pictures -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("rgb, cls", [
    ((0, 0, 0), 0), ((127, 127, 127), 0),
    ((255, 0, 0), 1), ((128, 0, 0), 1), ((255, 127, 0), 1),
    ((0, 0, 255), 2), ((0, 0, 128), 2),
    ((0, 255, 0), 3), ((255, 255, 255), 3),
    ((0, 128, 255), 0), ((255, 200, 0), 0),  # G with exactly one of R/B: no class (published rule)
    ((200, 0, 150), 1), ((150, 0, 200), 2), ((200, 0, 200), 1),
])
def test_pred_classes_from_picture(rgb, cls):
    picture = np.zeros((2, 3, 3), np.uint8)
    picture[1, 2] = rgb
    out = pred_classes_from_picture(picture)
    assert out.dtype == np.uint8 and out.shape == (2, 3)
    assert out[1, 2] == cls
    assert (out[0] == 0).all()


def test_pred_classes_round_trip_of_a_label_picture():
    label = plus_crossing()
    colours = np.array([(0, 0, 0), (255, 0, 0), (0, 0, 255), (0, 255, 0)], np.uint8)
    assert np.array_equal(pred_classes_from_picture(colours[label]), label)


def test_draw_mixed_segments_colours_exactly_the_mixed_segment():
    label = hbar(straight_artery(), 32, 5, 55, 2)   # an artery (mixed below) and a clean vein
    pred = label.copy()
    pred[:, 35:55][label[:, 35:55] == 1] = 2
    colours = np.array([(0, 0, 0), (255, 0, 0), (0, 0, 255), (0, 255, 0)], np.uint8)
    picture = colours[pred]
    before = picture.copy()
    seg, n = split_segments(label, full_fov())
    s = segment_scores(label, pred, full_fov(), segments=(seg, n))
    assert n == 2 and len(s["mixed_ids"]) == 1
    mixed = seg == s["mixed_ids"][0]
    assert np.array_equal(mixed, label == 1)

    out = draw_mixed_segments(picture, seg, s["mixed_ids"])
    assert out.dtype == np.uint8 and out.shape == picture.shape
    assert np.array_equal(picture, before)          # the input is not drawn on
    assert np.array_equal(out[mixed], picture[mixed])  # the flip in full colour: red, then blue
    assert {tuple(c) for c in out[mixed]} == {(255, 0, 0), (0, 0, 255)}
    yellow = (out == (255, 255, 0)).all(axis=2)
    ring = np.zeros_like(mixed)
    ring[18:23, 4:56] = True                        # the 1-pixel border around rows 19..21, columns 5..54
    ring &= ~mixed
    assert np.array_equal(yellow, ring)
    rest = ~(mixed | yellow)
    assert np.array_equal(out[rest], np.round(picture[rest] * 0.4).astype(np.uint8))
    assert (out[label == 2] == (0, 0, 102)).all()   # the clean vein is only dimmed

    assert np.array_equal(draw_mixed_segments(picture, seg, []), np.round(picture * 0.4).astype(np.uint8))

    # A soft picture (the sigmoid variant's probabilities): the segment shows the decided classes.
    soft = picture.copy()
    soft[:, 35:55][mixed[:, 35:55]] = (110, 20, 200)  # vein decided (B on), with some red: purple
    soft[:, 5:10][mixed[:, 5:10]] = (90, 10, 60)      # nothing on: no vessel predicted there
    out = draw_mixed_segments(soft, seg, s["mixed_ids"])
    assert (out[:, 35:55][mixed[:, 35:55]] == (0, 0, 255)).all()
    assert (out[:, 5:10][mixed[:, 5:10]] == (0, 0, 0)).all()
    assert (out[:, 10:35][mixed[:, 10:35]] == (255, 0, 0)).all()
    soft[:, 10:20][mixed[:, 10:20]] = (200, 0, 150)   # R and B on: the larger wins, as in the metric
    soft[:, 20:25][mixed[:, 20:25]] = (30, 200, 40)   # G alone: uncertain
    out = draw_mixed_segments(soft, seg, s["mixed_ids"])
    assert (out[:, 10:20][mixed[:, 10:20]] == (255, 0, 0)).all()
    assert (out[:, 20:25][mixed[:, 20:25]] == (0, 255, 0)).all()

    # With the truth, the pixels the metric leaves out (here a few labelled vein inside the
    # artery's segment, as where another vessel crosses) stay dimmed inside the outline.
    crossed = label.copy()
    crossed[19:22, 30:33] = 2
    out = draw_mixed_segments(picture, seg, s["mixed_ids"], crossed)
    left_out = mixed & (crossed == 2)
    assert left_out.sum() == 9
    assert np.array_equal(out[left_out], np.round(picture[left_out] * 0.4).astype(np.uint8))
    assert np.array_equal(out[mixed & ~left_out], picture[mixed & ~left_out])
    assert np.array_equal((out == (255, 255, 0)).all(axis=2), yellow)  # the outline is the segment's


def test_the_outline_of_a_mixed_segment_widens_with_the_photograph():
    """1 pixel on DRIVE's 565 x 584, 2 on LES-AV's 1620 x 1444, 4 on HRF-AV's 3504 x 2336: still
    visible when the picture is scaled down to a screen."""
    assert [outline_width(s) for s in ((584, 565), (1444, 1620), (2336, 3504))] == [1, 2, 4]
    seg = np.zeros((2336, 3504), np.int32)
    seg[1000:1003, 1000:1100] = 1                   # one mixed segment, 3 pixels thick
    picture = np.zeros((2336, 3504, 3), np.uint8)
    yellow = (draw_mixed_segments(picture, seg, [1]) == (255, 255, 0)).all(axis=2)
    assert yellow[996:1007, 996:1104].sum() == 11 * 108 - 3 * 100 and yellow.sum() == 11 * 108 - 3 * 100


def test_the_legend_goes_below_the_picture_and_names_every_colour():
    """test.py's and scripts.score's pictures of the mixed segments: the picture's rows as they
    were, then a strip with the outline and the class colours, wrapped to the width and sized
    with the outline (a line on HRF-AV's 3504 px, two on DRIVE_AV's 565)."""
    for (h, w), lines in (((584, 565), 2), ((2336, 3504), 1)):
        picture = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
        out = segments.with_legend(picture)
        assert out.dtype == np.uint8 and out.shape[1:] == (w, 3) and np.array_equal(out[:h], picture)
        strip = out[h:]
        unit = outline_width((h, w))
        assert strip.shape[0] == lines * 17 * unit + 6 * unit
        colours = {tuple(c) for c in strip.reshape(-1, 3)}
        assert {(255, 255, 0), (255, 0, 0), (0, 0, 255), (0, 255, 0), (0, 0, 0)} <= colours
    at_25 = segments.with_legend(picture, minority=0.25)[2336:]
    assert at_25.shape == strip.shape and not np.array_equal(at_25, strip)  # the minority is written out
    with_alpha = np.dstack([picture, np.full(picture.shape[:2], 255, np.uint8)])
    assert np.array_equal(segments.with_legend(with_alpha), out)
    for width in (128, 565, 3504):  # nothing cut at the right edge: wrapped within an item where needed
        strip = segments.with_legend(np.zeros((128, width, 3), np.uint8))[128:]
        assert (strip[:, -2:] == 32).all(), width


# --- real data ------------------------------------------------------------------------------------------

def test_drive_truth_against_itself(real_data):
    label = np.asarray(Image.open(real_data / "DRIVE_AV/test/1st_manual/01_test.png"))
    fov = np.asarray(Image.open(real_data / "DRIVE_AV/test/mask/01_test_mask.gif")) > 0
    seg, n = split_segments(label, fov)
    assert 150 < n < 400
    vessel = fov & (label > 0)
    assert (seg[vessel] > 0).mean() > 0.99 and not seg[~vessel].any()
    s = segment_scores(label, label, fov, segments=(seg, n))
    assert 150 < s["segments"] <= n
    assert s["mixed_any"] == 0.0 and s["segment_accuracy"] == 1.0 and s["fully_correct"] == 1.0
    flipped = np.where(label == 1, 2, np.where(label == 2, 1, label)).astype(np.uint8)
    assert segment_scores(label, flipped, fov, segments=(seg, n))["segment_accuracy"] == 0.0


@pytest.mark.parametrize("dataset,name,expected", [("DRIVE_AV", "01_test", 234), ("HRF-AV", "09_dr", 488)])
def test_real_truth_splits_into_its_segments(real_data, dataset, name, expected):
    """On real labels (HRF-AV at 3504 x 2336): ids 1..n, only vessel pixels inside the FOV get one,
    nearly all of them do, and the count stays what it was when the metric was written."""
    from scripts.config import DATASETS
    from scripts.data import find_samples, load_truth
    sample = {s.name: s for s in find_samples(real_data, DATASETS[dataset], "test")}[name]
    label, fov = load_truth(sample)
    seg, n = split_segments(label, fov)
    vessel = fov & (label >= 1)
    assert n == expected
    assert np.array_equal(np.unique(seg), np.arange(n + 1))
    assert (seg[~vessel] == 0).all() and (seg[vessel] > 0).mean() > 0.999


def result(count, missed, artery_predicted, vein_predicted):
    """The parts of one image's result that segments.caveats reads."""
    return {"segments": {"count": count, "missed": missed},
            "segment_classes": {"artery": artery_predicted, "vein": vein_predicted}}


def test_caveats_name_images_with_no_segment_predicted_and_a_class_never_predicted():
    assert segments.caveats([result(200, 0.1, 5, 5), result(180, 0.3, 1, 0)]) == []
    blank, = segments.caveats([result(200, 1.0, 0, 5), result(180, 0.2, 3, 5), result(0, 0.0, 0, 0)])
    assert blank.startswith("no artery or vein predicted in any segment of 1 of 3 image(s)")
    never, = segments.caveats([result(200, 0.5, 0, 5), result(180, 0.2, 0, 7)])
    assert never.startswith("artery never predicted in any segment: no segment can be mixed")
    assert len(segments.caveats([result(200, 1.0, 0, 0)])) == 2


def test_the_settings_refuse_what_is_no_segment_rule():
    assert SegmentSettings() == DEFAULT_SETTINGS and DEFAULT_SETTINGS.as_dict() == {"min_length": 10, "minority": 0.1}
    for kwargs, says in (({"min_length": 0}, "min_length 0: must be a whole number of pixels, at least 1"),
                         ({"min_length": 2.5}, "min_length 2.5: must be a whole number"),
                         ({"min_length": True}, "min_length True: must be a whole number"),
                         ({"minority": 0.0}, "minority 0.0: must be a share in (0, 0.5]"),
                         ({"minority": 0.51}, "minority 0.51: must be a share in (0, 0.5]"),
                         ({"minority": float("nan")}, "minority nan: must be a share in (0, 0.5]")):
        with pytest.raises(ValueError) as info:
            SegmentSettings(**kwargs)
        assert str(info.value).startswith(says), info.value
    assert SegmentSettings(min_length=np.int64(3), minority=0.5).min_length == 3
