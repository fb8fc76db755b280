"""The evaluation protocol of DESIGN.md section 6, against hand-computed confusion matrices."""
import numpy as np
import pytest

from scripts.metrics import (binary_scores, confusion_counts, decode_prediction, evaluate_image,
                             flatten, mean_std_over_runs, score_auc, summarize)

R, G, B = (255, 0, 0), (0, 255, 0), (0, 0, 255)
K, W = (0, 0, 0), (255, 255, 255)


def picture(rows):
    return np.array(rows, dtype=np.uint8)


def test_decode_rule_for_all_eight_channel_patterns():
    patterns = [(r, g, b) for r in (0, 255) for g in (0, 255) for b in (0, 255)]
    maps = decode_prediction(picture([patterns]))
    got = {p: tuple(name for name in ("artery", "vein", "uncertain") if maps[name][0, i])
           for i, p in enumerate(patterns)}
    assert got == {
        (0, 0, 0): (), (255, 0, 0): ("artery",), (0, 0, 255): ("vein",),
        (0, 255, 0): ("uncertain",), (255, 255, 255): ("uncertain",),
        (255, 0, 255): ("artery", "vein"),            # R and B on, G off: both, literally
        (255, 255, 0): (), (0, 255, 255): (),         # G with exactly one of R/B: none
    }


def test_channel_on_means_probability_above_one_half():
    maps = decode_prediction(picture([[(127, 0, 0), (128, 0, 0)]]))
    assert maps["artery"].tolist() == [[False, True]]


def test_scores_of_a_hand_computed_confusion_matrix():
    s = binary_scores(tp=6, fp=2, fn=4, tn=88)
    assert s["sensitivity"] == pytest.approx(0.6)
    assert s["specificity"] == pytest.approx(88 / 90)
    assert s["precision"] == pytest.approx(0.75)
    assert s["f1"] == pytest.approx(12 / 18)
    assert s["iou"] == pytest.approx(6 / 12)
    assert s["accuracy"] == pytest.approx(0.94)
    assert s["mse"] == pytest.approx(0.06)
    assert s["g_mean"] == pytest.approx(np.sqrt(0.6 * 88 / 90))
    # AUCs of the binary map as a score: ROC = (sens + spec) / 2, PR = trapezoid through
    # (0, 1), (sens, prec), (1, prevalence).
    assert s["auc_roc"] == pytest.approx((0.6 + 88 / 90) / 2)
    assert s["auc_pr"] == pytest.approx(0.6 * (1 + 0.75) / 2 + 0.4 * (0.75 + 0.1) / 2)


def test_scores_when_nothing_is_predicted_or_nothing_is_true():
    s = binary_scores(tp=0, fp=0, fn=5, tn=95)
    assert s["precision"] == 0 and s["f1"] == 0 and s["auc_roc"] == pytest.approx(0.5)
    assert s["auc_pr"] == pytest.approx((1 + 0.05) / 2)  # sklearn's curve (0,1) -> (1, prevalence)
    s = binary_scores(tp=0, fp=0, fn=0, tn=100)
    assert s["sensitivity"] == s["precision"] == s["f1"] == s["auc_roc"] == s["auc_pr"] == 0
    assert s["specificity"] == 1 and s["mse"] == 0


def hand_case():
    label = np.array([[0, 1, 1, 2, 2],
                      [0, 1, 3, 2, 0],
                      [0, 0, 0, 0, 9]], dtype=np.uint8)  # 9 sits outside the FOV: never read
    rgb = picture([[K, R, B, B, K],
                   [R, R, W, K, K],
                   [K, K, G, K, R]])
    fov = np.ones(label.shape, bool)
    fov[2, 4] = False
    return label, rgb, fov


def test_confusion_counts_only_inside_the_fov():
    counts = confusion_counts(*hand_case())
    # artery: truth at (0,1) (0,2) (1,1); predicted R-only at (0,1) (1,0) (1,1)
    assert counts["artery"] == {"tp": 2, "fn": 1, "fp": 1, "tn": 10}
    # vein: truth (0,3) (0,4) (1,3); predicted B-only at (0,2) (0,3)
    assert counts["vein"] == {"tp": 1, "fn": 2, "fp": 1, "tn": 10}
    # uncertain: truth (1,2); predicted W at (1,2) and G at (2,2)
    assert counts["uncertain"] == {"tp": 1, "fn": 0, "fp": 1, "tn": 12}


def test_image_average_is_weighted_by_truth_pixels():
    result = evaluate_image(*hand_case())
    weights = {"artery": 3, "vein": 3, "uncertain": 1}
    for key in ("f1", "sensitivity", "auc_pr", "mse"):
        expected = sum(result[c][key] * w for c, w in weights.items()) / 7
        assert result["average"][key] == pytest.approx(expected)
    assert result["artery"]["f1"] == pytest.approx(4 / 6)


def test_absent_class_scores_zero_and_weighs_nothing():
    label = np.array([[1, 1, 2, 0]], dtype=np.uint8)
    rgb = picture([[R, R, B, K]])
    result = evaluate_image(label, rgb, np.ones(label.shape, bool))
    assert result["uncertain"]["f1"] == 0 and result["uncertain"]["auc_roc"] == 0
    assert result["average"]["f1"] == pytest.approx(1.0)


def reference_auc(scores, truth):
    """Straightforward ROC AUC (pairs, ties half) and average precision."""
    pos, neg = scores[truth], scores[~truth]
    roc = ((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (len(pos) * len(neg))
    ap = 0.0
    for t in np.unique(scores)[::-1]:
        predicted = scores >= t
        tp = (predicted & truth).sum()
        ap += (truth & (scores == t)).sum() / truth.sum() * tp / predicted.sum()
    return roc, ap


def test_probability_aucs_match_a_straightforward_reference():
    rng = np.random.default_rng(0)
    truth = rng.random(400) < 0.3
    scores = np.clip(rng.normal(100 + 60 * truth, 40), 0, 255).astype(np.int64)
    scores[:50] = 200  # many ties
    hist = np.bincount(truth * 256 + scores, minlength=512).reshape(2, 256)
    roc, ap = score_auc(hist[1], hist[0])
    ref_roc, ref_ap = reference_auc(scores, truth)
    assert roc == pytest.approx(ref_roc) and ap == pytest.approx(ref_ap)


def test_av_accuracy_on_truth_vessel_pixels():
    label = np.array([[1, 1, 2, 2, 0, 3]], dtype=np.uint8)
    rgb = picture([[(200, 0, 10), (10, 0, 200), (0, 0, 90), (90, 0, 90), (255, 0, 0), K]])
    result = evaluate_image(label, rgb, np.ones(label.shape, bool))
    # artery right, artery wrong, vein right, vein tie (counts as artery: wrong)
    assert result["extra"]["av_accuracy"] == pytest.approx(0.5)


def test_vectorised_counts_equal_a_per_class_loop():
    rng = np.random.default_rng(1)
    label = rng.integers(0, 4, (200, 300)).astype(np.uint8)
    rgb = rng.integers(0, 256, (200, 300, 3)).astype(np.uint8)
    fov = rng.random((200, 300)) < 0.8
    counts = confusion_counts(label, rgb, fov)
    maps = decode_prediction(rgb)
    for value, name in enumerate(("artery", "vein", "uncertain"), start=1):
        t, p = (label == value)[fov], maps[name][fov]
        assert counts[name] == {"tp": int((t & p).sum()), "fp": int((~t & p).sum()),
                                "fn": int((t & ~p).sum()), "tn": int((~t & ~p).sum())}


def test_summaries_over_images_and_runs():
    a = evaluate_image(*hand_case())
    label, rgb, fov = hand_case()
    b = evaluate_image(label, np.zeros_like(rgb), fov)
    s = summarize([a, b])
    assert s["average"]["f1"] == pytest.approx((a["average"]["f1"] + b["average"]["f1"]) / 2)
    assert "counts" not in s
    runs = mean_std_over_runs([summarize([a]), summarize([b])])
    f1 = [a["average"]["f1"], b["average"]["f1"]]
    assert runs["average"]["f1"] == pytest.approx({"mean": np.mean(f1), "std": np.std(f1)})
    assert flatten({"average": {"f1": 0.5}}) == {"average/f1": 0.5}
