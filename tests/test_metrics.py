"""The evaluation protocol of DESIGN.md section 6, checked against confusion matrices counted
by hand on tiny arrays and against straightforward (slow) reference implementations."""
import numpy as np
import pytest

from scripts.metrics import (CLASS_NAMES, METRIC_KEYS, binary_scores, confusion_counts,
                             decode_prediction, evaluate_image, flatten, mean_std_over_runs,
                             score_auc, summarize)

# colours of a 0/255 prediction picture: R = artery, G = uncertain, B = vein
K, R, G, B = (0, 0, 0), (255, 0, 0), (0, 255, 0), (0, 0, 255)
W, M, Y = (255, 255, 255), (255, 0, 255), (255, 255, 0)   # all on; R+B; R+G


def picture(rows):
    return np.array(rows, dtype=np.uint8)


# ---------------------------------------------------------------------------------------------
# decoding the picture


def test_decode_rule_for_all_eight_channel_patterns():
    patterns = [(r, g, b) for r in (0, 255) for g in (0, 255) for b in (0, 255)]
    maps = decode_prediction(picture([patterns]))
    got = {p: tuple(name for name in CLASS_NAMES if maps[name][0, i]) for i, p in enumerate(patterns)}
    assert got == {
        (0, 0, 0): (),
        (255, 0, 0): ("artery",),
        (0, 0, 255): ("vein",),
        (0, 255, 0): ("uncertain",),                  # G alone
        (255, 255, 255): ("uncertain",),              # all three on
        (255, 0, 255): ("artery", "vein"),            # R and B on, G off: both, literally
        (255, 255, 0): (), (0, 255, 255): (),         # G with exactly one of R/B: none
    }


@pytest.mark.parametrize("channel, name", [(0, "artery"), (1, "uncertain"), (2, "vein")])
def test_a_channel_is_on_from_128(channel, name):
    rgb = np.zeros((1, 2, 3), np.uint8)
    rgb[0, :, channel] = (127, 128)                   # probability 0.498 vs 0.502
    assert decode_prediction(rgb)[name].tolist() == [[False, True]]


# ---------------------------------------------------------------------------------------------
# scores of one confusion matrix


def test_scores_of_a_hand_computed_confusion_matrix():
    s = binary_scores(tp=6, fp=2, fn=4, tn=88)
    assert set(s) == set(METRIC_KEYS)
    assert s["sensitivity"] == pytest.approx(6 / 10)
    assert s["specificity"] == pytest.approx(88 / 90)
    assert s["precision"] == pytest.approx(6 / 8)
    assert s["f1"] == pytest.approx(2 * 6 / (2 * 6 + 2 + 4))
    assert s["iou"] == pytest.approx(6 / (6 + 2 + 4))
    assert s["accuracy"] == pytest.approx(94 / 100)
    assert s["mse"] == pytest.approx(6 / 100)
    assert s["g_mean"] == pytest.approx(np.sqrt(0.6 * 88 / 90))
    # AUCs of the binary map as a score: ROC = (sens + spec) / 2; PR = trapezoid through
    # (recall 0, precision 1) -> (sens, prec) -> (1, prevalence = 10 / 100).
    assert s["auc_roc"] == pytest.approx((0.6 + 88 / 90) / 2)
    assert s["auc_pr"] == pytest.approx(0.6 * (1 + 0.75) / 2 + 0.4 * (0.75 + 0.1) / 2)


def test_auc_pr_when_nothing_is_predicted_is_the_chord_to_the_prevalence():
    s = binary_scores(tp=0, fp=0, fn=5, tn=95)
    assert s["precision"] == 0 and s["f1"] == 0 and s["iou"] == 0 and s["sensitivity"] == 0
    assert s["auc_roc"] == pytest.approx(0.5)
    assert s["auc_pr"] == pytest.approx((1 + 0.05) / 2)  # sklearn's curve (0, 1) -> (1, prevalence)


def test_auc_pr_of_a_perfect_map_is_one():
    s = binary_scores(tp=7, fp=0, fn=0, tn=13)
    assert s["auc_pr"] == pytest.approx(1) and s["auc_roc"] == pytest.approx(1)
    assert s["f1"] == s["iou"] == s["accuracy"] == s["g_mean"] == 1 and s["mse"] == 0


def test_undefined_ratios_are_zero():
    s = binary_scores(tp=0, fp=0, fn=0, tn=100)       # no positives in truth or prediction
    assert s["sensitivity"] == s["precision"] == s["f1"] == s["iou"] == s["g_mean"] == 0
    assert s["auc_roc"] == s["auc_pr"] == 0
    assert s["specificity"] == 1 and s["accuracy"] == 1 and s["mse"] == 0
    s = binary_scores(tp=0, fp=3, fn=0, tn=7)         # predicted but nothing true
    assert s["auc_roc"] == s["auc_pr"] == 0 and s["specificity"] == pytest.approx(0.7)
    s = binary_scores(tp=4, fp=0, fn=1, tn=0)         # no negatives in truth: ROC undefined
    assert s["auc_roc"] == 0 and s["specificity"] == 0 and s["sensitivity"] == pytest.approx(0.8)
    s = binary_scores(0, 0, 0, 0)                     # empty FOV
    assert all(v == 0 for v in s.values())


# ---------------------------------------------------------------------------------------------
# one image, counted by hand


def hand_case():
    """A 4x5 image; (3, 0) and (3, 3) lie outside the FOV and must never count."""
    label = np.array([[0, 1, 1, 2, 2],
                      [0, 1, 3, 2, 0],
                      [0, 0, 3, 0, 2],
                      [1, 0, 0, 9, 0]], dtype=np.uint8)   # 9: a stray value outside the FOV
    rgb = picture([[K, R, B, B, K],
                   [R, R, W, K, K],
                   [K, K, G, M, K],
                   [R, K, Y, W, K]])
    fov = np.ones(label.shape, bool)
    fov[3, 0] = fov[3, 3] = False
    return label, rgb, fov


# 18 FOV pixels. Truth: artery (0,1) (0,2) (1,1); vein (0,3) (0,4) (1,3) (2,4);
# uncertain (1,2) (2,2); the 9 others background.
# Decoded: artery = R or M at (0,1) (1,0) (1,1) (2,3); vein = B or M at (0,2) (0,3) (2,3);
# uncertain = W or G at (1,2) (2,2); Y at (3,2) is none of them.
HAND_COUNTS = {"artery": {"tp": 2, "fp": 2, "fn": 1, "tn": 13},      # fp (1,0) (2,3), fn (0,2)
               "vein": {"tp": 1, "fp": 2, "fn": 3, "tn": 12},        # fp (0,2) (2,3)
               "uncertain": {"tp": 2, "fp": 0, "fn": 0, "tn": 16}}
HAND_WEIGHTS = {"artery": 3, "vein": 4, "uncertain": 2}


def test_confusion_counts_by_hand():
    assert confusion_counts(*hand_case()) == HAND_COUNTS
    assert evaluate_image(*hand_case())["counts"] == HAND_COUNTS


def test_class_metrics_by_hand():
    result = evaluate_image(*hand_case())
    artery = result["artery"]
    assert artery["sensitivity"] == pytest.approx(2 / 3)
    assert artery["specificity"] == pytest.approx(13 / 15)
    assert artery["precision"] == pytest.approx(2 / 4)
    assert artery["f1"] == pytest.approx(4 / 7)
    assert artery["iou"] == pytest.approx(2 / 5)
    assert artery["accuracy"] == pytest.approx(15 / 18)
    assert artery["mse"] == pytest.approx(3 / 18)
    assert artery["g_mean"] == pytest.approx(np.sqrt(2 / 3 * 13 / 15))
    vein = result["vein"]
    assert vein["sensitivity"] == pytest.approx(1 / 4) and vein["precision"] == pytest.approx(1 / 3)
    assert vein["f1"] == pytest.approx(2 / 7) and vein["mse"] == pytest.approx(5 / 18)
    assert result["uncertain"]["f1"] == 1 and result["uncertain"]["mse"] == 0
    for name in CLASS_NAMES:
        assert result[name] == pytest.approx(binary_scores(**HAND_COUNTS[name]))
        assert all(0 <= v <= 1 for v in result[name].values())


def test_auc_from_the_binary_maps():
    result = evaluate_image(*hand_case())
    for name in CLASS_NAMES:
        s = result[name]
        prevalence = HAND_WEIGHTS[name] / 18
        assert s["auc_roc"] == pytest.approx((s["sensitivity"] + s["specificity"]) / 2)
        assert s["auc_pr"] == pytest.approx(s["sensitivity"] * (1 + s["precision"]) / 2
                                            + (1 - s["sensitivity"]) * (s["precision"] + prevalence) / 2)
    assert result["artery"]["auc_pr"] == pytest.approx(2 / 3 * 1.5 / 2 + 1 / 3 * (0.5 + 3 / 18) / 2)


def test_auc_pr_of_a_class_never_predicted():
    label, rgb, fov = hand_case()
    result = evaluate_image(label, np.zeros_like(rgb), fov)        # nothing predicted
    assert result["artery"]["auc_pr"] == pytest.approx((1 + 3 / 18) / 2)
    assert result["vein"]["auc_pr"] == pytest.approx((1 + 4 / 18) / 2)
    assert result["artery"]["auc_roc"] == pytest.approx(0.5)


def test_pixels_outside_the_fov_never_count():
    label, rgb, fov = hand_case()
    base = evaluate_image(label, rgb, fov)
    rng = np.random.default_rng(0)
    label2, rgb2 = label.copy(), rgb.copy()
    label2[~fov] = rng.integers(0, 256, (~fov).sum())     # any value, even invalid ones
    rgb2[~fov] = rng.integers(0, 256, ((~fov).sum(), 3))
    assert evaluate_image(label2, rgb2, fov) == base
    # the same as evaluating only the first three rows (all inside the FOV)
    top = evaluate_image(label[:3], rgb[:3], fov[:3])
    assert top["counts"]["artery"] == {"tp": 2, "fp": 2, "fn": 1, "tn": 10}   # 3 tn in row 3
    everything = evaluate_image(np.where(label > 3, 0, label), rgb, np.ones_like(fov))
    assert everything["counts"]["artery"]["tp"] == 3                         # (3, 0) now counts


def test_a_stray_label_value_inside_the_fov_is_refused():
    label, rgb, fov = hand_case()
    label[0, 0] = 4
    with pytest.raises(ValueError, match="0..3"):
        evaluate_image(label, rgb, fov)


def test_labels_of_another_integer_type_are_accepted():
    label, rgb, fov = hand_case()
    label = np.where(fov, label, 0).astype(np.int64)
    assert evaluate_image(label, rgb, fov)["counts"] == HAND_COUNTS


# ---------------------------------------------------------------------------------------------
# the image average


def test_image_average_is_weighted_by_truth_pixels():
    result = evaluate_image(*hand_case())
    assert set(result["average"]) == set(METRIC_KEYS)
    for key in METRIC_KEYS:
        expected = sum(result[c][key] * w for c, w in HAND_WEIGHTS.items()) / 9
        assert result["average"][key] == pytest.approx(expected)
    assert result["average"]["f1"] == pytest.approx((3 * 4 / 7 + 4 * 2 / 7 + 2 * 1) / 9)


def test_absent_class_scores_zero_and_weighs_nothing():
    label = np.array([[1, 1, 2, 0]], dtype=np.uint8)
    rgb = picture([[R, R, B, K]])
    result = evaluate_image(label, rgb, np.ones(label.shape, bool))
    assert result["counts"]["uncertain"] == {"tp": 0, "fp": 0, "fn": 0, "tn": 4}
    for key in ("sensitivity", "precision", "f1", "iou", "g_mean", "auc_roc", "auc_pr"):
        assert result["uncertain"][key] == 0
    for key in METRIC_KEYS:   # weights 2, 1, 0: the uncertain zeros do not pull the mean down
        assert result["average"][key] == pytest.approx((2 * result["artery"][key] + result["vein"][key]) / 3)
    assert result["average"]["f1"] == 1
    assert result["extra"]["auc_roc_prob_uncertain"] == 0


def test_no_vessel_at_all_gives_zero_averages():
    label = np.zeros((2, 3), np.uint8)
    result = evaluate_image(label, np.zeros((2, 3, 3), np.uint8), np.ones((2, 3), bool))
    assert all(v == 0 for v in result["average"].values())
    assert all(v == 0 for v in result["extra"].values())


# ---------------------------------------------------------------------------------------------
# extras: probability-based AUCs and A/V accuracy


def reference_auc(scores, truth):
    """Slow and plain: ROC AUC as the trapezoid area under the ROC curve over all thresholds
    (which counts ties as half), and average precision sum_n (R_n - R_{n-1}) P_n."""
    scores, truth = np.asarray(scores, np.float64).ravel(), np.asarray(truth, bool).ravel()
    p, n = truth.sum(), (~truth).sum()
    if p == 0 or n == 0:
        return 0.0, 0.0
    tpr, fpr, recall, precision = [0.0], [0.0], [0.0], []
    for t in sorted(set(scores.tolist()), reverse=True):
        predicted = scores >= t
        tp = np.sum(predicted & truth)
        tpr.append(tp / p)
        fpr.append(np.sum(predicted & ~truth) / n)
        recall.append(tp / p)
        precision.append(tp / predicted.sum())
    roc = sum((fpr[i + 1] - fpr[i]) * (tpr[i + 1] + tpr[i]) / 2 for i in range(len(fpr) - 1))
    ap = sum((recall[i + 1] - recall[i]) * precision[i] for i in range(len(precision)))
    return roc, ap


def test_reference_auc_itself_on_a_hand_case():
    # positives 3, 1; negatives 2, 1: pairs (3>2, 3>1, 1<2, 1=1) -> (1 + 1 + 0 + 0.5) / 4
    roc, ap = reference_auc([3, 1, 2, 1], [True, True, False, False])
    assert roc == pytest.approx(2.5 / 4)
    assert ap == pytest.approx(0.5 * 1 + 0.5 * 2 / 4)   # t=3: R .5 P 1; t=2: -; t=1: R 1 P .5


def test_probability_aucs_by_hand():
    result = evaluate_image(*hand_case())["extra"]
    # artery score R in the FOV: positives 255, 0, 255; negatives 4 x 255 and 11 x 0.
    # ROC: each 255 positive beats 11 and ties 4 (13), the 0 positive ties 11 (5.5): 31.5 / 45
    assert result["auc_roc_prob_artery"] == pytest.approx(31.5 / 45)
    # AP: t=255 recall 2/3 precision 2/6; t=0 recall 1 precision 3/18
    assert result["auc_pr_prob_artery"] == pytest.approx(2 / 3 * 2 / 6 + 1 / 3 * 3 / 18)
    w = HAND_WEIGHTS
    for kind in ("roc", "pr"):
        assert result[f"auc_{kind}_prob_average"] == pytest.approx(
            sum(result[f"auc_{kind}_prob_{c}"] * w[c] for c in CLASS_NAMES) / 9)


def test_score_auc_matches_the_reference_with_many_ties():
    rng = np.random.default_rng(0)
    truth = rng.random(400) < 0.3
    scores = np.clip(rng.normal(100 + 60 * truth, 40), 0, 255).astype(np.int64)
    scores[:50] = 200
    hist = np.bincount(truth * 256 + scores, minlength=512).reshape(2, 256)
    assert score_auc(hist[1], hist[0]) == pytest.approx(reference_auc(scores, truth))
    assert score_auc(hist[1], np.zeros(256)) == (0.0, 0.0)      # no negatives: undefined
    assert score_auc(np.zeros(256), hist[0]) == (0.0, 0.0)      # no positives: undefined


def test_av_accuracy_on_truth_vessel_pixels():
    label = np.array([[1, 1, 2, 2, 1, 0, 3]], dtype=np.uint8)
    rgb = picture([[(200, 0, 10), (10, 0, 200), (0, 0, 90), (90, 0, 90), (70, 255, 70), R, K]])
    result = evaluate_image(label, rgb, np.ones(label.shape, bool))
    # artery right, artery wrong, vein right, vein tie (undecided: wrong), artery tie
    # (undecided: wrong; G is ignored); background and uncertain pixels do not count
    assert result["extra"]["av_accuracy"] == pytest.approx(2 / 5)
    # the hand case: right at (0,1) (1,1) (0,3); ties at (0,4) (1,3) (2,4) and B at (0,2) wrong
    assert evaluate_image(*hand_case())["extra"]["av_accuracy"] == pytest.approx(3 / 7)


# ---------------------------------------------------------------------------------------------
# the vectorised image evaluation against a plain per-class loop


def loop_evaluate(label, rgb, fov):
    """evaluate_image written the plain way: the decode rule from the channel values, one
    boolean pass per class and count, the slow reference AUCs."""
    r, g, b = (rgb[..., c][fov].astype(int) for c in range(3))
    ron, gon, bon = r >= 128, g >= 128, b >= 128
    decoded = {"artery": ron & ~gon, "vein": bon & ~gon,
               "uncertain": (ron & gon & bon) | (gon & ~ron & ~bon)}
    score = {"artery": r, "vein": b, "uncertain": g}
    truth_all = label[fov]
    out = {"counts": {}, "extra": {}}
    weights = []
    for value, name in enumerate(CLASS_NAMES, start=1):
        t, p = truth_all == value, decoded[name]
        out["counts"][name] = {"tp": int(np.sum(t & p)), "fp": int(np.sum(~t & p)),
                               "fn": int(np.sum(t & ~p)), "tn": int(np.sum(~t & ~p))}
        out[name] = binary_scores(**out["counts"][name])
        weights.append(int(t.sum()))
        out["extra"][f"auc_roc_prob_{name}"], out["extra"][f"auc_pr_prob_{name}"] = \
            reference_auc(score[name], t)
    total = sum(weights)
    out["average"] = {k: sum(out[c][k] * w for c, w in zip(CLASS_NAMES, weights, strict=True)) / total
                      for k in METRIC_KEYS}
    for kind in ("roc", "pr"):
        out["extra"][f"auc_{kind}_prob_average"] = sum(
            out["extra"][f"auc_{kind}_prob_{c}"] * w for c, w in zip(CLASS_NAMES, weights, strict=True)) / total
    vessel = (truth_all == 1) | (truth_all == 2)
    right = [(rv > bv) if tv == 1 else (bv > rv) for rv, bv, tv in zip(r[vessel], b[vessel], truth_all[vessel], strict=True)]
    out["extra"]["av_accuracy"] = sum(right) / len(right)
    return out


def test_vectorised_evaluation_equals_a_per_class_loop():
    rng = np.random.default_rng(1)
    shape = (200, 300)
    label = rng.choice(4, shape, p=[0.7, 0.12, 0.12, 0.06]).astype(np.uint8)
    # mostly saturated colours, as a thresholded picture, plus raw probabilities around 128
    rgb = rng.choice([0, 127, 128, 255], (*shape, 3)).astype(np.uint8)
    raw = rng.random(shape) < 0.5
    rgb[raw] = rng.integers(0, 256, (raw.sum(), 3))
    fov = rng.random(shape) < 0.8
    label[~fov] = rng.integers(0, 256, (~fov).sum())        # ignored outside the FOV
    got, want = evaluate_image(label, rgb, fov), loop_evaluate(label, rgb, fov)
    assert got["counts"] == want["counts"]
    for group in ("artery", "vein", "uncertain", "average", "extra"):
        assert set(got[group]) == set(want[group])
        assert got[group] == pytest.approx(want[group], rel=1e-9, abs=1e-12), group


# ---------------------------------------------------------------------------------------------
# over images and runs


def test_summarize_takes_the_mean_of_every_leaf_and_leaves_out_the_counts():
    label, rgb, fov = hand_case()
    a, b = evaluate_image(label, rgb, fov), evaluate_image(label, np.zeros_like(rgb), fov)
    s = summarize([a, b])
    assert set(s) == {"artery", "vein", "uncertain", "average", "extra"}
    for group in s:
        assert set(s[group]) == set(a[group])
        for key, value in s[group].items():
            assert value == pytest.approx((a[group][key] + b[group][key]) / 2)
    assert summarize([a])["average"] == pytest.approx(a["average"])


def test_mean_and_population_std_over_runs():
    runs = [{"average": {"f1": 0.5}, "extra": {"av_accuracy": 0.9}},
            {"average": {"f1": 0.7}, "extra": {"av_accuracy": 0.9}},
            {"average": {"f1": 0.9}, "extra": {"av_accuracy": 0.9}}]
    got = mean_std_over_runs(runs)
    assert got["average"]["f1"] == pytest.approx({"mean": 0.7, "std": np.sqrt(0.08 / 3)})  # ddof=0
    assert got["extra"]["av_accuracy"] == pytest.approx({"mean": 0.9, "std": 0.0})
    assert mean_std_over_runs(runs[:1])["average"]["f1"] == {"mean": 0.5, "std": 0.0}
    # on real summaries too: same nested shape
    label, rgb, fov = hand_case()
    s = summarize([evaluate_image(label, rgb, fov)])
    assert set(mean_std_over_runs([s, s])["vein"]) == set(METRIC_KEYS)


def test_flatten_gives_slash_keys():
    assert flatten({"average": {"f1": 0.5, "mse": 0.1}, "extra": {"av_accuracy": 0.9}}) == \
        {"average/f1": 0.5, "average/mse": 0.1, "extra/av_accuracy": 0.9}
    assert flatten({"average": {"f1": {"mean": 1.0, "std": 0.0}}}) == \
        {"average/f1/mean": 1.0, "average/f1/std": 0.0}
    assert flatten({"f1": 0.5}, prefix="val/") == {"val/f1": 0.5}


def test_extras_can_score_probabilities_apart_from_a_decided_picture():
    label = np.array([[1, 2, 0, 0]], dtype=np.uint8)
    decided = picture([[K, K, K, K]])                        # nothing decided: ties everywhere
    probs = picture([[(200, 0, 10), (10, 0, 200), (30, 0, 20), (20, 0, 30)]])
    fov = np.ones(label.shape, bool)
    assert evaluate_image(label, decided, fov)["extra"]["av_accuracy"] == 0
    result = evaluate_image(label, decided, fov, scores=probs)
    assert result["extra"]["av_accuracy"] == 1 and result["extra"]["auc_roc_prob_artery"] == 1
    assert result["average"] == evaluate_image(label, decided, fov)["average"]  # table unchanged


def test_sixteen_bit_scores_keep_the_order_that_eight_bits_lose():
    """A saturating network: missed arteries at probability 1e-3, background at 1e-5. At 8
    bits both round to 0 and tie (AUC of the decoded map); at 16 bits (what test.py passes)
    the extras see that the misses still rank above the background, as float scores do."""
    import torch
    from scripts.evaluate import score_picture
    label = np.zeros((1, 100), np.uint8)
    label[0, :10] = 1                                         # 10 arteries
    prob = np.full((3, 1, 100), 1e-5, np.float32)
    prob[0, 0, :5] = 0.99                                     # 5 found
    prob[0, 0, 5:10] = 1e-3                                   # 5 missed, but above the background
    prob[0, 0, 10:20] = 1.5e-3                                # 10 background pixels above the misses
    fov = np.ones(label.shape, bool)
    picture = (prob.transpose(1, 2, 0) * 255).round().astype(np.uint8)
    eight = evaluate_image(label, picture, fov)["extra"]["auc_roc_prob_artery"]
    sixteen = evaluate_image(label, picture, fov, score_picture(torch.from_numpy(prob), "sigmoid"))
    exact, _ = reference_auc(prob[0].ravel(), label.ravel() == 1)
    assert eight == pytest.approx(0.5 + 0.5 * 0.5)            # (sens + spec) / 2 with ties half
    assert sixteen["extra"]["auc_roc_prob_artery"] == pytest.approx(exact)   # 0.5 + 0.5 * 80/90
    assert exact == pytest.approx(0.5 + 0.5 * 80 / 90)
    assert sixteen["artery"] == evaluate_image(label, picture, fov)["artery"]  # the table is the picture's


def test_sixteen_bit_extras_equal_the_plain_loop_on_float_probabilities():
    import torch
    from scripts.evaluate import picture_u8, score_picture
    rng = np.random.default_rng(5)
    label = rng.choice(4, (40, 60), p=[0.7, 0.12, 0.12, 0.06]).astype(np.uint8)
    logits = rng.normal(0, 3, (3, 40, 60)) + 4 * np.stack([label == 1, label == 3, label == 2])
    probs = torch.from_numpy(1 / (1 + np.exp(-logits))).float()
    fov = rng.random(label.shape) < 0.9
    scores = score_picture(probs, "sigmoid")
    assert scores.dtype == np.uint16
    result = evaluate_image(label, picture_u8(probs, "sigmoid"), fov, scores)
    for channel, name in enumerate(("artery", "uncertain", "vein")):
        value = {"artery": 1, "uncertain": 3, "vein": 2}[name]
        truth = label[fov] == value
        quantised = reference_auc(scores[..., channel][fov], truth)   # exact on the 16-bit scores
        assert result["extra"][f"auc_roc_prob_{name}"] == pytest.approx(quantised[0], abs=1e-12)
        assert result["extra"][f"auc_pr_prob_{name}"] == pytest.approx(quantised[1], abs=1e-12)
        exact = reference_auc(probs[channel].numpy()[fov], truth)    # and close to the floats
        assert result["extra"][f"auc_roc_prob_{name}"] == pytest.approx(exact[0], abs=1e-4)
        # (average precision moves more: probabilities above 1 - 1/131070 all tie at the top)
        assert result["extra"][f"auc_pr_prob_{name}"] == pytest.approx(exact[1], abs=5e-3)
    with pytest.raises(ValueError, match="scores must be uint8 or uint16"):
        evaluate_image(label, picture_u8(probs, "sigmoid"), fov, scores.astype(np.int32))
