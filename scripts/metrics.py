"""Metrics of the published table (DESIGN.md section 6): small pure functions over arrays.

Inputs are the uint8 prediction pictures the project writes (R artery, G uncertain, B vein,
probabilities x 255 or a 0/255 colour map), the 0..3 label and the FOV mask. Every count
comes from one ``np.bincount`` per image, so a 3504 x 2336 HRF image takes well under a
second. All values are fractions (0..1); test.py reports percent.
"""
import numpy as np

CLASS_NAMES = ("artery", "vein", "uncertain")          # label values 1, 2, 3
CHANNEL = {"artery": 0, "uncertain": 1, "vein": 2}     # picture channel of each class
METRIC_KEYS = ("sensitivity", "specificity", "precision", "f1", "iou", "accuracy", "g_mean",
               "auc_roc", "auc_pr", "mse")


def decode_prediction(rgb):
    """Boolean maps {artery, vein, uncertain} from a picture; a channel is on at >= 128.

    uncertain = all three on, or G alone; artery = R on and G off; vein = B on and G off
    (the literal rule: R and B on with G off counts for both artery and vein; G with exactly one
    of R/B counts for none)."""
    r, g, b = (rgb[..., c] >= 128 for c in range(3))
    return {"artery": r & ~g, "vein": b & ~g, "uncertain": (r & g & b) | (g & ~r & ~b)}


def _ratio(num, den):
    return float(num) / float(den) if den else 0.0


def binary_scores(tp, fp, fn, tn):
    """All METRIC_KEYS from one binary confusion matrix; undefined ratios are 0.

    AUC-ROC and AUC-PR are those of the binary decoded map as a score (the published
    protocol): AUC-ROC = (sens + spec) / 2; AUC-PR = trapezoid area of sklearn's
    precision-recall curve (0, 1) -> (sens, prec) -> (1, prevalence), or (0, 1) -> (1,
    prevalence) when nothing is predicted."""
    tp, fp, fn, tn = (int(v) for v in (tp, fp, fn, tn))
    n = tp + fp + fn + tn
    sens, spec, prec = _ratio(tp, tp + fn), _ratio(tn, tn + fp), _ratio(tp, tp + fp)
    prevalence = _ratio(tp + fn, n)
    if tp + fn == 0:  # no truth positives: the curves are undefined
        auc_roc = auc_pr = 0.0
    else:
        auc_roc = (sens + spec) / 2 if tn + fp else 0.0
        if tp + fp == 0:
            auc_pr = (1 + prevalence) / 2
        else:
            auc_pr = sens * (1 + prec) / 2 + (1 - sens) * (prec + prevalence) / 2
    return {"sensitivity": sens, "specificity": spec, "precision": prec,
            "f1": _ratio(2 * tp, 2 * tp + fp + fn), "iou": _ratio(tp, tp + fp + fn),
            "accuracy": _ratio(tp + tn, n), "g_mean": float(np.sqrt(sens * spec)),
            "auc_roc": auc_roc, "auc_pr": auc_pr, "mse": _ratio(fp + fn, n)}


def confusion_counts(label, rgb, fov):
    """{class: {tp, fp, fn, tn}} over the FOV pixels, from a single bincount."""
    return _counts_from_codes(label[fov], rgb[fov])


def _counts_from_codes(truth, pixels):
    """truth: N uint8 labels; pixels: Nx3 uint8 picture values (both inside the FOV)."""
    pred = decode_prediction(pixels)
    code = truth.astype(np.uint8) * np.uint8(8)
    code |= pred["artery"].view(np.uint8)
    code |= pred["vein"].view(np.uint8) << 1
    code |= pred["uncertain"].view(np.uint8) << 2
    hist = np.bincount(code, minlength=32).reshape(4, 8)  # [truth class, predicted bits]
    counts = {}
    for value, name in enumerate(CLASS_NAMES, start=1):
        bit = np.array([(bits >> (value - 1)) & 1 for bits in range(8)], dtype=bool)
        is_true = np.arange(4) == value
        counts[name] = {"tp": int(hist[is_true][:, bit].sum()), "fn": int(hist[is_true][:, ~bit].sum()),
                        "fp": int(hist[~is_true][:, bit].sum()), "tn": int(hist[~is_true][:, ~bit].sum())}
    return counts


def score_auc(pos_hist, neg_hist):
    """Exact ROC AUC (ties count half) and average precision of integer scores, from the
    histograms of the scores of positives and negatives."""
    p, n = pos_hist.sum(), neg_hist.sum()
    if p == 0 or n == 0:
        return 0.0, 0.0
    neg_below = np.cumsum(neg_hist) - neg_hist
    auc_roc = float((pos_hist * (neg_below + 0.5 * neg_hist)).sum() / (p * n))
    tp = np.cumsum(pos_hist[::-1])       # thresholds from the highest score down
    fp = np.cumsum(neg_hist[::-1])
    used = pos_hist[::-1] > 0            # recall only grows at levels holding positives
    auc_pr = float((pos_hist[::-1][used] / p * tp[used] / (tp[used] + fp[used])).sum())
    return auc_roc, auc_pr


def evaluate_image(label, rgb, fov):
    """All metrics of one test image (fractions).

    Returns {"artery", "vein", "uncertain": {metric}, "average": truth-count-weighted mean,
    "extra": probability-based AUCs and A/V accuracy, "counts": confusion matrices}.
    Extras: per class, the picture channel (0..255) as the score, exact ROC AUC and average
    precision; "av_accuracy": on truth artery/vein pixels, artery predicted when R >= B.
    """
    fov = fov.astype(bool)
    truth, pixels = label[fov], rgb[fov]   # the only copies of the image: N and Nx3 uint8
    counts = _counts_from_codes(truth, pixels)
    result = {name: binary_scores(**counts[name]) for name in CLASS_NAMES}
    weights = np.array([counts[c]["tp"] + counts[c]["fn"] for c in CLASS_NAMES], dtype=np.float64)
    result["average"] = weighted_mean([result[c] for c in CLASS_NAMES], weights)

    extra = {}
    for value, name in enumerate(CLASS_NAMES, start=1):
        code = (truth == value).view(np.uint8).astype(np.uint16) << 8
        code |= pixels[:, CHANNEL[name]]
        hist = np.bincount(code, minlength=512).reshape(2, 256)
        extra[f"auc_roc_prob_{name}"], extra[f"auc_pr_prob_{name}"] = score_auc(hist[1], hist[0])
    for kind in ("roc", "pr"):
        extra[f"auc_{kind}_prob_average"] = float(np.dot(
            [extra[f"auc_{kind}_prob_{c}"] for c in CLASS_NAMES], weights) / max(weights.sum(), 1))
    vessel = (truth == 1) | (truth == 2)
    says_artery = pixels[vessel, 0] >= pixels[vessel, 2]  # ties count as artery
    extra["av_accuracy"] = _ratio(np.count_nonzero(says_artery == (truth[vessel] == 1)), vessel.sum())
    result["extra"] = extra
    result["counts"] = counts
    return result


def weighted_mean(dicts, weights):
    total = float(np.sum(weights))
    return {k: (float(np.dot([d[k] for d in dicts], weights)) / total if total else 0.0) for k in dicts[0]}


SUMMARY_GROUPS = ("average", "artery", "vein", "uncertain", "extra")


def summarize(per_image):
    """Mean over images of every metric (the 'counts' are left out)."""
    return {g: {k: float(np.mean([r[g][k] for r in per_image])) for k in per_image[0][g]}
            for g in SUMMARY_GROUPS}


def mean_std_over_runs(run_summaries):
    """{group: {metric: {"mean", "std"}}} over runs; std with ddof=0 (numpy's default)."""
    return {g: {k: {"mean": float(np.mean([s[g][k] for s in run_summaries])),
                    "std": float(np.std([s[g][k] for s in run_summaries]))}
                for k in run_summaries[0][g]} for g in run_summaries[0]}


def flatten(tree, prefix=""):
    """Nested dict -> {"average/f1": value}, for CSV columns and TensorBoard tags."""
    flat = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            flat.update(flatten(v, f"{prefix}{k}/"))
        else:
            flat[f"{prefix}{k}"] = v
    return flat
