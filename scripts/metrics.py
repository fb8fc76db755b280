"""Metrics of the published table (DESIGN.md section 6): small pure functions over arrays.

Inputs are the uint8 prediction pictures the project writes (R = artery, G = uncertain,
B = vein; probabilities x 255, or a 0/255 colour map), the 0..3 label map (0 background,
1 artery, 2 vein, 3 uncertain) and the boolean FOV mask; only FOV pixels count.

Speed: an image is reduced to a handful of small histograms, each by one ``np.bincount``
over a combined integer code, and every metric is read off the histograms. No boolean
indexing, no per-class passes over the pixels, no sorting: a 3504 x 2336 HRF image takes
a fraction of a second on one CPU core (measured: README, Performance). All values are fractions (0..1); test.py reports percent.
"""
import numpy as np

CLASS_NAMES = ("artery", "vein", "uncertain")          # label values 1, 2, 3 (0 = background)
CHANNEL = {"artery": 0, "uncertain": 1, "vein": 2}     # picture channel (R, G, B) of each class
CLASS_COLOURS = np.array([[0, 0, 0], [255, 0, 0], [0, 0, 255], [0, 255, 0]], np.uint8)  # bg, A, V, U
METRIC_KEYS = ("sensitivity", "specificity", "precision", "f1", "iou", "accuracy", "g_mean",
               "auc_roc", "auc_pr", "mse")
TABLE_METRICS = ("sensitivity", "auc_roc", "f1", "auc_pr", "mse")  # the published table's columns
# Printed under every table of these metrics: the binary-map AUCs have a floor well above 0.
BINARY_AUC_NOTE = ("note: auc_roc and auc_pr are those of the decoded binary maps (the published protocol): a "
                   "class never predicted still scores auc_roc 50 and auc_pr (1 + prevalence) / 2, just over 50, "
                   "so read them beside f1 and sensitivity")
ON = 128              # a channel is on at >= 128: round(255 p) >= 128, i.e. probability >= 0.5
SUMMARY_GROUPS = ("average", "artery", "vein", "uncertain", "extra", "segments")  # what summarize() keeps

# The 8 on/off patterns of (R, G, B), pattern = R_on | G_on << 1 | B_on << 2, as a picture.
_PATTERNS = np.array([[ON * ((p >> c) & 1) for c in range(3)] for p in range(8)], dtype=np.uint8)


def decode_prediction(rgb):
    """Boolean maps {"artery", "vein", "uncertain"} of a ...x3 uint8 picture (DESIGN rule).

    A channel is on when its value is >= 128. uncertain = (all three on) or (G on, R off,
    B off); artery = R on and G off; vein = B on and G off. This is the literal rule, kept as
    written: R and B on with G off counts for both artery and vein; G on with exactly one of
    R/B counts for none of the classes.
    """
    r, g, b = (rgb[..., c] >= ON for c in range(3))
    return {"artery": r & ~g, "vein": b & ~g, "uncertain": (r & g & b) | (g & ~r & ~b)}


def class_map(rgb):
    """One class per pixel (0 bg, 1 artery, 2 vein, 3 uncertain) by the decoding rule above,
    for pictures and the segment metric. Where the rule gives two classes (R and B on, G off)
    the larger of R and B wins (a tie is artery); where it gives none, background."""
    maps = decode_prediction(rgb)
    out = np.zeros(rgb.shape[:-1], dtype=np.uint8)  # any ...x3 picture: HxWx3, or Nx3 pixels
    out[maps["artery"]] = 1
    out[maps["vein"] & (~maps["artery"] | (rgb[..., 2] > rgb[..., 0]))] = 2
    out[maps["uncertain"]] = 3
    return out


def _ratio(num, den):
    """num / den as a float, 0 when the denominator is 0 (an undefined ratio)."""
    return float(num) / float(den) if den else 0.0


def binary_scores(tp, fp, fn, tn):
    """All METRIC_KEYS, as fractions in [0, 1], from one binary confusion matrix.

    Undefined ratios (zero denominator) are 0. g_mean = sqrt(sens * spec); mse = (fp + fn) / n,
    the mean squared error of two binary maps, i.e. the error rate.

    AUC-ROC and AUC-PR are those of the binary decoded map used as a score (the published
    protocol, not probabilities):
      * auc_roc = (sens + spec) / 2, defined when the truth has both positives and negatives
        (0 otherwise);
      * auc_pr = trapezoid area under sklearn's precision_recall_curve of the binary score,
        i.e. sklearn.metrics.auc(recall, precision) over the polyline
        (recall 0, precision 1) -> (sens, prec) -> (1, prevalence), prevalence = (tp + fn) / n:
            auc_pr = sens * (1 + prec) / 2 + (1 - sens) * (prec + prevalence) / 2;
        when nothing is predicted (tp + fp == 0) sklearn's curve is (0, 1) -> (1, prevalence),
        area (1 + prevalence) / 2. When the truth has no positives (tp + fn == 0) both AUCs are
        undefined and scored 0.
    """
    tp, fp, fn, tn = (int(v) for v in (tp, fp, fn, tn))
    n = tp + fp + fn + tn
    sens, spec, prec = _ratio(tp, tp + fn), _ratio(tn, tn + fp), _ratio(tp, tp + fp)
    prevalence = _ratio(tp + fn, n)
    if tp + fn == 0:                        # no truth positives: both curves undefined
        auc_roc = auc_pr = 0.0
    else:
        auc_roc = (sens + spec) / 2 if tn + fp else 0.0
        if tp + fp == 0:                    # nothing predicted
            auc_pr = (1 + prevalence) / 2
        else:
            auc_pr = sens * (1 + prec) / 2 + (1 - sens) * (prec + prevalence) / 2
    return {"sensitivity": sens, "specificity": spec, "precision": prec,
            "f1": _ratio(2 * tp, 2 * tp + fp + fn), "iou": _ratio(tp, tp + fp + fn),
            "accuracy": _ratio(tp + tn, n), "g_mean": float(np.sqrt(sens * spec)),
            "auc_roc": auc_roc, "auc_pr": auc_pr, "mse": _ratio(fp + fn, n)}


def _check_inputs(label, rgb, fov):
    """The arrays as (label uint8 HxW, rgb uint8 HxWx3, fov bool HxW); ValueError if not."""
    label, rgb, fov = np.asarray(label), np.asarray(rgb), np.asarray(fov)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"prediction must be an HxWx3 uint8 picture, got {rgb.dtype} {rgb.shape}")
    if label.shape != rgb.shape[:2] or fov.shape != rgb.shape[:2]:
        raise ValueError(f"label {label.shape}, fov {fov.shape} and prediction {rgb.shape[:2]} "
                         "must have the same size")
    fov = fov.astype(bool, copy=False)
    if label.dtype != np.uint8:
        if np.any(((label < 0) | (label > 3)) & fov):
            raise ValueError("label values must be 0..3 inside the FOV")
        label = label.astype(np.uint8)
    elif np.any((label > 3) & fov):
        raise ValueError("label values must be 0..3 inside the FOV")
    return label, rgb, fov


def _fov_labels(label, fov):
    """HxW uint8 in 0..7: the label (0..3) inside the FOV, >= 4 outside (rows dropped later).

    label & 3 only changes values outside the FOV (checked to be 0..3 inside)."""
    return (label & 3) | ((~fov).view(np.uint8) << 2)


def _histograms(label, rgb, fov, scores=None):
    """Reduce an image to histograms over its FOV pixels (one bincount each).

    joint[t, c, p]: pixel count by truth t (0..3), c = 1 if R > B, 2 if B > R, 0 if equal, and on/off pattern
    p = R_on | G_on << 1 | B_on << 2 (0..7). levels[name][t, v]: count of FOV pixels of truth
    t whose class channel (R artery, B vein, G uncertain) of the scores has value v (0..255 for
    uint8 scores, 0..65535 for uint16).
    """
    scores = rgb if scores is None else scores
    lab = _fov_labels(label, fov)
    r, b = scores[..., 0], scores[..., 2]
    high = rgb >> 7                                          # 1 where the channel is >= 128
    code = lab << 5                                          # truth: bits 5..7
    code |= (r > b).view(np.uint8) << 3                      # R > B: bit 3
    code |= (b > r).view(np.uint8) << 4                      # B > R: bit 4
    code |= high[..., 0] | (high[..., 1] << 1) | (high[..., 2] << 2)   # pattern: bits 0..2
    joint = np.bincount(code.ravel(), minlength=8 * 32).reshape(8, 4, 8)[:4]

    bits = 8 * scores.dtype.itemsize                         # 8 or 16
    truth_code = lab.astype(np.uint16 if bits == 8 else np.uint32) << bits   # truth * levels + value
    levels = {}
    for name in CLASS_NAMES:
        hist = np.bincount((truth_code | scores[..., CHANNEL[name]]).ravel(), minlength=8 << bits)
        levels[name] = hist.reshape(8, 1 << bits)[:4]
    return joint, levels


def _counts_from_joint(joint):
    """{class: {tp, fp, fn, tn}} from the joint histogram, decoding its 8 patterns once."""
    by_pattern = joint.sum(axis=1)                           # [truth, pattern]
    decoded = decode_prediction(_PATTERNS)                   # class -> (8,) bool over patterns
    counts = {}
    for value, name in enumerate(CLASS_NAMES, start=1):
        pred = decoded[name]
        truth = np.arange(4) == value
        counts[name] = {"tp": int(by_pattern[truth][:, pred].sum()),
                        "fp": int(by_pattern[~truth][:, pred].sum()),
                        "fn": int(by_pattern[truth][:, ~pred].sum()),
                        "tn": int(by_pattern[~truth][:, ~pred].sum())}
    return counts


def confusion_counts(label, rgb, fov):
    """{class: {"tp", "fp", "fn", "tn"}} (ints) of (truth == class) against the decoded map,
    over the FOV pixels: the counts evaluate_image's table metrics come from, for checking one
    by hand (evaluate_image computes them itself, in the same pass as the rest)."""
    label, rgb, fov = _check_inputs(label, rgb, fov)
    return _counts_from_joint(_histograms(label, rgb, fov)[0])


def score_auc(pos_hist, neg_hist):
    """(ROC AUC, average precision) of integer scores, exact, from the per-level histograms
    of the scores of the positives and of the negatives (index = score level).

    ROC AUC is the Mann-Whitney statistic: P(score of a positive > score of a negative), ties
    counted as half. Average precision follows sklearn.metrics.average_precision_score: the
    sum over distinct thresholds t, descending, of (R_n - R_{n-1}) * P_n, where R_n and P_n
    are recall and precision of "score >= t" (no interpolation). Both are 0 when the truth
    lacks positives or negatives (undefined).
    """
    pos_hist = np.asarray(pos_hist, dtype=np.float64)
    neg_hist = np.asarray(neg_hist, dtype=np.float64)
    p, n = pos_hist.sum(), neg_hist.sum()
    if p == 0 or n == 0:
        return 0.0, 0.0
    neg_below = np.cumsum(neg_hist) - neg_hist
    auc_roc = float((pos_hist * (neg_below + 0.5 * neg_hist)).sum() / (p * n))
    pos_desc, neg_desc = pos_hist[::-1], neg_hist[::-1]      # thresholds from the highest down
    tp, fp = np.cumsum(pos_desc), np.cumsum(neg_desc)
    used = pos_desc > 0                                      # recall only grows at these levels
    auc_pr = float((pos_desc[used] / p * tp[used] / (tp[used] + fp[used])).sum())
    return auc_roc, auc_pr


def weighted_mean(dicts, weights):
    """{key: sum_i w_i * dicts[i][key] / sum_i w_i}; every value 0 when the weights sum to 0."""
    total = float(np.sum(weights))
    return {k: (float(np.dot([d[k] for d in dicts], weights)) / total if total else 0.0)
            for k in dicts[0]}


def evaluate_image(label, rgb, fov, scores=None):
    """All metrics of one test image, as fractions (0..1).

    label: HxW uint8 in 0..3 (values outside the FOV are ignored); rgb: HxWx3 uint8 picture
    (R artery, G uncertain, B vein); fov: HxW bool. Only FOV pixels count.

    Returns
      "artery", "vein", "uncertain": binary_scores() of (truth == class) against
          decode_prediction(rgb)[class];
      "average": mean of the three class dicts weighted by the number of truth pixels of each
          class in the FOV (an absent class weighs 0; all 0 if no class is present);
      "extra": (not part of the published table)
          "auc_roc_prob_<class>", "auc_pr_prob_<class>": score_auc() with the class's channel
              value of the scores (R artery, B vein, G uncertain) as the score and truth == class
              as the positives, i.e. exact Mann-Whitney ROC AUC (ties half) and average
              precision; "auc_roc_prob_average", "auc_pr_prob_average": the same truth-count
              weighted mean;
          "av_accuracy": over FOV pixels whose truth is artery or vein, the fraction
              classified right: R > B on artery, B > R on vein; a tie (e.g. a softmax picture
              of background or uncertain there) decides nothing and counts as wrong
              (0 if there are none);
      "counts": {class: {"tp", "fp", "fn", "tn"}} (ints).
    ``scores``: optional HxWx3 probabilities in the picture's channel order (artery, uncertain,
    vein) for the extras: uint8 (x 255) or uint16 (x 65535; what test.py and the validation pass,
    so that probabilities below 1/510 do not all tie at 0). By default the picture's own
    channels are the scores (8 bits; for a softmax picture, decided colours).
    """
    label, rgb, fov = _check_inputs(label, rgb, fov)
    if scores is not None:
        scores = np.asarray(scores)
        if scores.dtype not in (np.uint8, np.uint16) or scores.shape != rgb.shape:
            raise ValueError(f"scores must be uint8 or uint16 of the picture's shape {rgb.shape}, "
                             f"got {scores.dtype} {scores.shape}")
    joint, levels = _histograms(label, rgb, fov, scores)
    counts = _counts_from_joint(joint)
    result = {name: binary_scores(**counts[name]) for name in CLASS_NAMES}
    weights = np.array([counts[c]["tp"] + counts[c]["fn"] for c in CLASS_NAMES], dtype=np.float64)
    result["average"] = weighted_mean([result[c] for c in CLASS_NAMES], weights)

    extra = {}
    for value, name in enumerate(CLASS_NAMES, start=1):
        pos = levels[name][value]
        extra[f"auc_roc_prob_{name}"], extra[f"auc_pr_prob_{name}"] = score_auc(
            pos, levels[name].sum(axis=0) - pos)
    extra.update({f"auc_{k}_prob_average": v for k, v in weighted_mean(
        [{"roc": extra[f"auc_roc_prob_{c}"], "pr": extra[f"auc_pr_prob_{c}"]} for c in CLASS_NAMES],
        weights).items()})
    # joint[truth, R>B | B>R << 1, pattern]: right = truth artery with R > B, or vein with B > R
    extra["av_accuracy"] = _ratio(joint[1, 1].sum() + joint[2, 2].sum(), joint[1:3].sum())
    result["extra"] = extra
    result["counts"] = counts
    return result


def _reduce_leaves(trees, reduce):
    """Apply reduce(list of leaf values) leafwise over dicts of the same nested shape."""
    return {k: (_reduce_leaves([t[k] for t in trees], reduce) if isinstance(v, dict)
                else reduce([float(t[k]) for t in trees]))
            for k, v in trees[0].items()}


def summarize(per_image):
    """Mean over images of every numeric leaf of the groups SUMMARY_GROUPS ("average",
    "artery", "vein", "uncertain", "extra", and "segments" when present), in the same nested
    shape; "counts" is left out."""
    if not per_image:
        raise ValueError("summarize() needs at least one image result")
    return {g: _reduce_leaves([r[g] for r in per_image], lambda xs: float(np.mean(xs)))
            for g in SUMMARY_GROUPS if g in per_image[0]}


def mean_std_over_runs(run_summaries):
    """Same nested shape as a summary, each leaf -> {"mean": m, "std": s} over the runs.

    s is the population standard deviation (ddof=0, numpy's default), so one run gives 0."""
    if not run_summaries:
        raise ValueError("mean_std_over_runs() needs at least one run summary")
    return _reduce_leaves(run_summaries, lambda xs: {"mean": float(np.mean(xs)),
                                                 "std": float(np.std(xs, ddof=0))})


def in_percent(tree):
    """mean_std_over_runs output with every mean and std in percent (counts stay counts)."""
    return {k: (v if k == "count" else {"mean": 100.0 * v["mean"], "std": 100.0 * v["std"]})
            if set(v) == {"mean", "std"} else in_percent(v) for k, v in tree.items()}


def percent_row(result) -> dict:
    """One image's result as a metrics.csv row: {"average/f1": percent, ..., "segments/count": n}."""
    return {k: (v if k.endswith("/count") else round(100 * v, 6))
            for k, v in flatten({g: result[g] for g in SUMMARY_GROUPS if g in result}).items()}


def segment_rule_text(rule: dict) -> str:
    """A summary's ``segment_settings`` in words, as the table and scripts.compare show them."""
    return f"segments >= {rule['min_length']} px, mixed_10 at minority >= {rule['minority']:g}"


def summary_table(summary) -> str:
    """The table as text: mean ± std over runs, or the plain value when there is one run."""
    one_run = len(summary.get("runs", [])) == 1

    def cell(v, width):
        return f"{v['mean']:>{width}.2f}" if one_run else f"{v['mean']:>{max(width - 8, 0)}.2f} ± {v['std']:<5.2f}"

    head = f"{'class':<10}" + "".join(f"{m:>20}" for m in TABLE_METRICS)
    lines = [head if one_run else head + "    (mean ± std over runs)"]
    for cls in ("artery", "vein", "uncertain", "average"):
        lines.append(f"{cls:<10}" + "".join(cell(summary[cls][m], 20) for m in TABLE_METRICS))
    rule = summary.get("segment_settings")  # what mixed_10 means there (scripts.segments.SegmentSettings)
    rule = f"; {segment_rule_text(rule)}" if rule else ""
    for group, title in (("extra", "extra (not in the published table)"),
                         ("segments", f"segments (intra-segment misclassification{rule})")):
        lines.append(f"{title}: " + ", ".join(f"{k} {cell(v, 0).strip()}" for k, v in summary[group].items()))
    return "\n".join(line.rstrip() for line in lines)


def flatten(tree, prefix=""):
    """Nested dict -> flat {"average/f1": value}, for CSV columns and TensorBoard tags."""
    flat = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            flat.update(flatten(v, f"{prefix}{k}/"))
        else:
            flat[f"{prefix}{k}"] = v
    return flat
