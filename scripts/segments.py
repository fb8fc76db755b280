"""Segment-level measure of intra-segment misclassification.

The paper's motivation: an A/V network often flips class halfway along one vessel segment, mostly
near crossings. Pixel metrics hardly see this (a flip costs a few hundred pixels), so this module
splits the *truth* vessel tree into segments (the pieces between branch and crossing points) and asks,
per segment, whether the network's artery/vein prediction along it is one class or a mix.

    seg, n = split_segments(label, fov)                 # truth segments, ids 1..n
    scores = segment_scores(label, pred_classes, fov)   # shares over the A/V segments
    pred = pred_classes_from_picture(rgb)               # R artery, G uncertain, B vein -> 0..3
    pic = draw_mixed_segments(rgb, seg, scores["mixed_ids"], label)

Everything is numpy/scipy/scikit-image and works on a crop around the vessels: `segment_scores` takes
about 0.02-0.03 s on a DRIVE image (565 x 584) and 0.5-0.7 s on an HRF image (3504 x 2336), nearly all of it
in `split_segments`; pass `segments=` to reuse a split across validations (then about 0.002 s / 0.03 s).

Classes: 0 background, 1 artery, 2 vein, 3 uncertain.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage
from scipy.spatial import cKDTree
from skimage.morphology import skeletonize

from .metrics import CLASS_COLOURS, class_map

_EIGHT = np.ones((3, 3), dtype=bool)
_DIM_40 = np.round(np.arange(256, dtype=np.float32) * 0.4).astype(np.uint8)  # x -> round(0.4 x), as a table


@dataclass(frozen=True)
class SegmentSettings:
    """The segment metric's two settings (test.py and scripts.score: ``add_options``).
    ``mixed_10`` keeps its name for any ``minority``: a summary records the settings it was
    computed with (``as_dict``), and scripts.compare notes summaries whose settings differ."""
    min_length: int = 10     # skeleton pieces shorter than this (pixels) are no segment
    minority: float = 0.10   # mixed_10: the smaller class is at least this share of the A/V-predicted pixels

    def __post_init__(self):
        for field in _OPTIONS:
            problem = _problem(field, getattr(self, field))
            if problem:
                raise ValueError(f"{field} {problem}")

    def as_dict(self) -> dict:
        return asdict(self)


_OPTIONS = {"min_length": "--segment-min-length", "minority": "--segment-minority"}


def _problem(field, value):
    """What is wrong with a setting's value (None: nothing), for SegmentSettings and its options."""
    if field == "min_length" and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
        return f"{value!r}: must be a whole number of pixels, at least 1"
    if field == "minority" and not 0 < value <= 0.5:
        return (f"{value!r}: must be a share in (0, 0.5] (0.10 is 10 %; the smaller of two classes is never more "
                f"than half)")
    return None


DEFAULT_SETTINGS = SegmentSettings()


def add_options(parser):
    """The settings as options of an entry point (test.py, scripts.score); ``settings_from``
    reads them back."""
    parser.add_argument(_OPTIONS["min_length"], type=int, default=DEFAULT_SETTINGS.min_length, metavar="PIXELS",
                        help="segment metric: skeleton pieces shorter than this are no segment (default %(default)s)")
    parser.add_argument(_OPTIONS["minority"], type=float, default=DEFAULT_SETTINGS.minority, metavar="SHARE",
                        help="segment metric: segments/mixed_10 counts the segments whose smaller A/V class is at "
                             "least this share of their A/V-predicted pixels; the column keeps its name, the "
                             "summary records the setting (default %(default)s)")


def settings_from(args) -> SegmentSettings:
    """The SegmentSettings of parsed ``add_options`` options; a ValueError names the option."""
    for field, option in _OPTIONS.items():
        problem = _problem(field, getattr(args, f"segment_{field}"))
        if problem:
            raise ValueError(f"{option} {problem}")
    return SegmentSettings(args.segment_min_length, args.segment_minority)


def _crop(mask: np.ndarray, margin=1):
    """Slices of the bounding box of `mask` with a margin (None if the mask is empty)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    h, w = mask.shape
    return (slice(max(rows[0] - margin, 0), min(rows[-1] + 1 + margin, h)),
            slice(max(cols[0] - margin, 0), min(cols[-1] + 1 + margin, w)))


def _check(label, fov):
    label, fov = np.asarray(label), np.asarray(fov).astype(bool)
    if label.ndim != 2 or label.shape != fov.shape:
        raise ValueError(f"label {label.shape} and fov {fov.shape} must be two HxW maps of one size")
    return label, fov


def split_segments(label: np.ndarray, fov: np.ndarray, min_length: int = 10,
                   threads: int | None = None) -> tuple[np.ndarray, int]:
    """Split the truth vessel tree into segments between branch and crossing points.

    Steps: the vessel map is `label` in {1, 2, 3} inside `fov`; it is skeletonised (scikit-image);
    branch and crossing points (skeleton pixels with more than 2 skeleton neighbours in 8-connectivity)
    are removed together with their 8-neighbourhood, so segments separate cleanly; the remaining skeleton
    pieces are labelled (8-connectivity) and pieces shorter than `min_length` skeleton pixels are dropped;
    then every truth vessel pixel takes the id of the nearest remaining skeleton pixel (Euclidean distance,
    the rule of `scipy.ndimage.distance_transform_edt(..., return_indices=True)`, computed with a k-d tree
    over the skeleton pixels because that only costs time per vessel pixel, not per image pixel).

    One guard on the growth: a vessel pixel only takes the id of a piece that lies in its own connected
    vessel component (8-connectivity). Where the nearest piece lies in another component (a thin vessel
    running beside a wide one), the pixel takes the nearest piece of its own component instead; a small
    isolated vessel whose only piece was too short gets no id, instead of joining whatever segment
    happens to be nearest across the background.

    ``threads``: for the k-d tree's queries (default: torch's thread count); the ids do not depend on it.

    Returns (segment id map HxW int32 with ids 1..n, 0 = no segment; n).
    """
    label, fov = _check(label, fov)
    out = np.zeros(label.shape, dtype=np.int32)
    vessel_full = fov & (label >= 1) & (label <= 3)
    box = _crop(vessel_full)
    if box is None:
        return out, 0
    vessel = vessel_full[box]

    skel = skeletonize(vessel)
    # Count the 8 neighbours at skeleton pixels only (the crop has a 1-pixel background margin unless it
    # touches the image edge, hence the padding).
    padded = np.pad(skel, 1)
    sr, sc = np.nonzero(padded)
    neighbours = sum(padded[sr + dr, sc + dc].astype(np.uint8)
                     for dr in (-1, 0, 1) for dc in (-1, 0, 1) if dr or dc)
    branch = neighbours > 2
    for dr in (-1, 0, 1):       # drop each branch pixel with its 8-neighbourhood
        for dc in (-1, 0, 1):
            padded[sr[branch] + dr, sc[branch] + dc] = False
    skel = padded[1:-1, 1:-1]

    pieces, n = ndimage.label(skel, structure=_EIGHT)
    if n == 0:
        return out, 0
    pr, pc = np.nonzero(pieces)                    # the skeleton pixels (work on them, not the image)
    piece_of = pieces[pr, pc]
    keep = np.bincount(piece_of, minlength=n + 1) >= min_length
    keep[0] = False
    n_kept = int(keep.sum())
    if n_kept == 0:
        return out, 0
    new_id = np.zeros(n + 1, dtype=np.int32)
    new_id[keep] = np.arange(1, n_kept + 1, dtype=np.int32)
    kept = keep[piece_of]
    pr, pc, piece_id = pr[kept], pc[kept], new_id[piece_of[kept]]

    # Grow: every vessel pixel finds its nearest kept skeleton pixel (Euclidean), and takes its id if both lie
    # in the same vessel component. A k-d tree over the skeleton pixels answers the same question as
    # distance_transform_edt(pieces == 0, return_indices=True) (up to ties between equally near pixels) but
    # costs O(vessel pixels) instead of O(image): 2x faster on HRF.
    rr, cc = np.nonzero(vessel)
    tree = cKDTree(np.column_stack([pr, pc]))
    if threads is None:
        import torch  # here, not above: scripts.compare reads DEFAULT_SETTINGS without loading torch
        threads = torch.get_num_threads()  # by default the count the rest of the program was given
    _, nearest = tree.query(np.column_stack([rr, cc]), workers=threads)
    components, _ = ndimage.label(vessel, structure=_EIGHT)
    pixel_comp, skel_comp = components[rr, cc], components[pr, pc]
    same = pixel_comp == skel_comp[nearest]
    # The few pixels whose nearest piece lies in another component: the nearest piece of their own, if any.
    astray = np.flatnonzero(~same)
    by_comp = np.argsort(skel_comp, kind="stable")  # skeleton pixels grouped by component
    for comp in np.unique(pixel_comp[astray]):
        lo, hi = np.searchsorted(skel_comp[by_comp], [comp, comp + 1])
        own, todo = by_comp[lo:hi], astray[pixel_comp[astray] == comp]
        if own.size:
            _, k = cKDTree(np.column_stack([pr[own], pc[own]])).query(np.column_stack([rr[todo], cc[todo]]))
            nearest[todo], same[todo] = own[k], True
    # Ids are consecutive (a kept piece always owns at least its own skeleton pixels).
    out[box][rr[same], cc[same]] = piece_id[nearest[same]]
    return out, n_kept


def _majority_classes(ids, truth, n):
    """Each segment's truth class (ids 0..n): the majority of its pixels' labels 1..3, ties to
    the lower class; and whether it has any such pixel."""
    truth_counts = np.bincount(ids * 4 + truth, minlength=(n + 1) * 4).reshape(n + 1, 4)
    return truth_counts[:, 1:].argmax(axis=1) + 1, truth_counts[:, 1:].sum(axis=1) > 0


def segment_scores(label, pred_classes, fov, min_length: int = 10, minority: float = 0.10,
                   segments: tuple[np.ndarray, int] | None = None) -> dict:
    """Segment-level intra-segment misclassification scores of one image.

    `label`: HxW truth 0..3; `pred_classes`: HxW predicted classes 0..3 (1 artery, 2 vein, 3 uncertain);
    `fov`: HxW bool. Segments come from `split_segments(label, fov, min_length)`; pass its result as
    `segments=(segment_map, n)` to reuse it (the truth does not change between validations).

    A segment counts if its majority truth label (over its pixels, classes 1..3) is artery (1) or vein (2);
    that class is the segment's truth. The pixels judged are the segment pixels whose truth *is* that class
    (the crossing pixels labelled 3, or a few pixels of the other vessel at a crossing grown into the segment,
    are left out, so a correct prediction at a crossing never reads as a flip). Among them, those predicted
    artery or vein (1 or 2) are its A/V-predicted pixels.

    Returns a dict:
      "segments":         number of A/V segments considered (int);
      "mixed_any":        share of segments with at least one A/V-predicted pixel whose A/V predictions
                          contain both classes;
      "mixed_10":         share of those same segments where the minority class is >= `minority` of its
                          A/V-predicted pixels;
      "segment_accuracy": share of all segments whose majority predicted class (1 vs 2, a tie is wrong)
                          equals the truth; a segment with no A/V-predicted pixel is wrong (missed);
      "fully_correct":    share of all segments whose every judged pixel is predicted as the truth class;
      "missed":           share of all segments with no A/V-predicted pixel;
      "mixed_ids":        sorted list of the segment ids that are mixed_10 (ids of the map of
                          `split_segments`, for drawing);
      "class_pixels":     {"artery": n, "vein": n}, the judged pixels predicted each (``caveats``).
    With no segment (or, for the two mixed shares, no segment with an A/V-predicted pixel) a share is 0.0.
    """
    label, fov = _check(label, fov)
    pred = np.asarray(pred_classes)
    if pred.shape != label.shape:
        raise ValueError(f"pred_classes {pred.shape} must have the shape of label {label.shape}")
    seg, n = split_segments(label, fov, min_length) if segments is None else segments
    seg = np.asarray(seg)
    if seg.shape != label.shape:
        raise ValueError(f"segment map {seg.shape} must have the shape of label {label.shape}")
    n = max(int(n), int(seg.max(initial=0)))  # a map whose n was not passed right still sizes the counts
    empty = {"segments": 0, "mixed_any": 0.0, "mixed_10": 0.0, "segment_accuracy": 0.0,
             "fully_correct": 0.0, "missed": 0.0, "mixed_ids": [], "class_pixels": {"artery": 0, "vein": 0}}
    if n == 0:
        return empty

    inside = seg > 0
    ids = seg[inside].astype(np.int64)
    truth = label[inside].astype(np.int64)
    guess = np.where(pred[inside] <= 3, pred[inside], 0).astype(np.int64)

    seg_class, has_truth = _majority_classes(ids, truth, n)
    av = (seg_class <= 2) & has_truth
    av[0] = False

    judged = truth == seg_class[ids]
    pred_counts = np.bincount(ids[judged] * 4 + guess[judged], minlength=(n + 1) * 4).reshape(n + 1, 4)
    n_art, n_vein = pred_counts[:, 1], pred_counts[:, 2]
    n_av = n_art + n_vein
    n_judged = pred_counts.sum(axis=1)
    n_right = pred_counts[np.arange(n + 1), seg_class]

    predicted = av & (n_av > 0)
    both = predicted & (n_art > 0) & (n_vein > 0)
    minor = np.minimum(n_art, n_vein) / np.maximum(n_av, 1)
    mixed = both & (minor >= minority)
    majority = np.where(n_art > n_vein, 1, np.where(n_vein > n_art, 2, 0))
    correct = predicted & (majority == seg_class)
    fully = av & (n_right == n_judged)

    n_seg, n_pred = int(av.sum()), int(predicted.sum())
    if n_seg == 0:
        return empty

    def share(x, over):
        return float(x.sum()) / over if over else 0.0

    return {
        "segments": n_seg,
        "mixed_any": share(both, n_pred),
        "mixed_10": share(mixed, n_pred),
        "segment_accuracy": share(correct, n_seg),
        "fully_correct": share(fully, n_seg),
        "missed": share(av & ~predicted, n_seg),
        "mixed_ids": np.flatnonzero(mixed).tolist(),
        "class_pixels": {"artery": int(n_art[av].sum()), "vein": int(n_vein[av].sum())},
    }


def caveats(results) -> list:
    """Where one run's segment shares read better than they are, from its per-image results
    (``evaluate.score_image``'s): images on which it predicted no artery or vein in any segment
    (their mixed shares are 0, undefined rather than 'never mixed'), and a class, artery or vein,
    it never predicts in the segments (then no segment can be mixed at all; a pixel with both R
    and B on is the larger's there, so a picture that never decides shows artery alone)."""
    notes = []
    blank = sum(1 for r in results if r["segments"]["count"] and r["segments"]["missed"] == 1.0)
    if blank:
        notes.append(f"no artery or vein predicted in any segment of {blank} of {len(results)} image(s): "
                     f"their mixed_any and mixed_10 count as 0 in the means, not as 'never mixed'")
    never = [c for c in ("artery", "vein") if not any(r["segment_classes"][c] for r in results)]
    if never:
        notes.append(f"{' and '.join(never)} never predicted in any segment: no segment can be mixed, so "
                     f"mixed_any and mixed_10 say nothing of A/V flips here")
    return notes


def pred_classes_from_picture(rgb) -> np.ndarray:
    """Class map 0..3 of a prediction picture (HxWx3, or HxWx4 with alpha ignored), by the
    decoding rule of the published metrics: ``metrics.class_map``."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        raise ValueError(f"prediction picture must be HxWx3, got {rgb.shape}")
    return class_map(rgb[..., :3])


def outline_width(shape) -> int:
    """Pixels of the outline around a mixed segment: 1 up to about 1200 pixels a side, more on
    larger photographs (4 on HRF-AV's 3504 x 2336), so that it stays visible when the picture
    is shown scaled down to a screen."""
    return max(1, round(max(shape[:2]) / 800))


def draw_mixed_segments(rgb, segment_map, mixed_ids, label=None) -> np.ndarray:
    """Picture of where the network flipped class along a segment.

    A copy of the prediction picture `rgb` (HxWx3 uint8) dimmed to 40 %, except the pixels of
    the segments in `mixed_ids` (ids of `segment_map`, e.g. `segment_scores(...)["mixed_ids"]`),
    which show the class the metric decided for each (class_map: red artery, blue vein, green
    uncertain, black where no class is decided; so the flip shows as red then blue along one
    segment, not as the soft picture's purple), outlined in yellow (255, 255, 0; the border that
    ``outline_width`` 3x3 dilations add). With the truth `label`, only the pixels the metric
    judges are coloured (those of the segment's own truth class): a crossing vessel's pixels
    inside the outline stay dimmed, as they are not counted. Returns HxWx3 uint8.
    """
    rgb = np.asarray(rgb)[..., :3]
    segment_map = np.asarray(segment_map)
    if rgb.shape[:2] != segment_map.shape:
        raise ValueError(f"picture {rgb.shape[:2]} and segment map {segment_map.shape} differ in size")
    out = _DIM_40[rgb]
    top = int(segment_map.max(initial=0))
    ids = np.asarray(list(mixed_ids), dtype=np.int64)
    ids = ids[(ids > 0) & (ids <= top)]
    if ids.size == 0:
        return out
    chosen = np.zeros(top + 1, dtype=bool)
    chosen[ids] = True
    mask = chosen[segment_map]
    width = outline_width(mask.shape)
    box = _crop(mask, margin=width)
    if box is None:
        return out
    sub = mask[box]
    border = ndimage.binary_dilation(sub, structure=_EIGHT, iterations=width) & ~sub
    view = out[box]
    view[border] = (255, 255, 0)
    if label is not None:  # the judged pixels: truth == the segment's majority class
        inside = segment_map > 0
        seg_class, _ = _majority_classes(segment_map[inside].astype(np.int64),
                                         np.asarray(label)[inside].astype(np.int64), top)
        sub = sub & (np.asarray(label)[box] == seg_class[segment_map[box]])
    view[sub] = CLASS_COLOURS[class_map(rgb[box][sub])]  # the segments' pixels only (HRF-AV's box is most of it)
    return out


def _font(pixels):
    """PIL's own font at about ``pixels`` high (FreeType, Pillow >= 10.1), else its small bitmap one."""
    try:
        return ImageFont.load_default(size=pixels)
    except (TypeError, ImportError, OSError):
        return ImageFont.load_default()


def with_legend(picture, minority=DEFAULT_SETTINGS.minority) -> np.ndarray:
    """``draw_mixed_segments``'s picture with a legend strip below it (the picture's rows
    unchanged above): the yellow outline, the four class colours and the dimming, in words,
    wrapped to the picture's width (between items; within one only where it would not fit on a
    line of its own, as on a small validation picture). Sized with ``outline_width``, so it reads
    on a screen at HRF-AV's 3504 x 2336 too. Returns (H + strip) x W x 3 uint8."""
    picture = np.asarray(picture)
    width = picture.shape[1]
    unit = outline_width(picture.shape)             # 1 on DRIVE_AV, 4 on HRF-AV
    font, box, gap = _font((12 if width >= 256 else 9) * unit), 11 * unit, 6 * unit
    items = [("outline", f"segment mixed (minority >= {100 * minority:g} %)"),
             (CLASS_COLOURS[1], "artery"), (CLASS_COLOURS[2], "vein"), (CLASS_COLOURS[3], "uncertain"),
             (CLASS_COLOURS[0], "background"), (None, "the rest: the prediction, dimmed")]
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def length(text):
        return round(measure.textlength(text, font=font))
    place, x, line = [], gap, 0                    # (swatch or None, text, x, line), left to right, wrapped
    for colour, text in items:
        lead = box + gap // 2 if colour is not None else 0
        pieces = [text] if lead + length(text) <= width - 2 * gap else text.split(" ")  # too long: word by word
        for k, piece in enumerate(pieces):
            span = (lead if k == 0 else 0) + length(piece)
            if x > gap and x + span > width - gap:
                x, line = gap, line + 1
            place.append((colour if k == 0 else None, piece, x, line))
            x += span + (length(" ") if k < len(pieces) - 1 else 2 * gap)
    row = box + gap
    strip = Image.new("RGB", (width, (line + 1) * row + gap), (32, 32, 32))
    draw = ImageDraw.Draw(strip)
    for colour, text, x, line in place:
        y = gap + line * row
        if colour is not None:
            if isinstance(colour, str):             # the outline: a yellow frame around a dimmed square
                draw.rectangle([x, y, x + box - 1, y + box - 1], fill=(0, 0, 0), outline=(255, 255, 0), width=unit)
            else:
                draw.rectangle([x, y, x + box - 1, y + box - 1], fill=tuple(int(c) for c in colour),
                               outline=(128, 128, 128), width=max(1, unit // 2))
            x += box + gap // 2
        draw.text((x, y + box // 2), text, fill=(230, 230, 230), font=font, anchor="lm")
    return np.concatenate([picture if picture.shape[2] == 3 else picture[..., :3], np.asarray(strip)], axis=0)
