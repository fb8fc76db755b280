"""The photographs predict.py segments: finding them (folders, globs, list files), their FOV
masks, and reading one with what is worth saying about it (notes in the CSV).

An input search skips the masks of --masks and the outputs of earlier runs (scripts/predict_outputs.py
names them), so that pointing predict.py at a folder twice never segments its own pictures.
"""
import errno
import glob
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from PIL import Image

from scripts.config import ConfigError
from scripts.data import exif_orientation, open_header, read_image, read_mask
from scripts.fov import MIN_FOV, estimate_fov, not_a_photograph
from scripts.predict_outputs import OUTPUT_PICTURES, holds_a_run

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
MASK_EXTS = IMAGE_EXTS + (".gif",)
LIST_EXTS = (".txt", ".lst", ".list")
MAX_ENLARGEMENT = 2.0  # a photograph enlarged more than this to the networks' size gets a note
MAX_ASPECT_CHANGE = 1.2  # a photograph whose width/height the networks' input changes more than this gets a note
MIN_FOV_STD = 2.0  # grey levels, per channel: a FOV flatter than this has nothing to segment (a blank frame)
# Inside the FOV, red > green > blue in all 107 photographs of DRIVE_AV, LES-AV and HRF-AV (means:
# red 2.05-8.6x blue, green 1.4x blue or more): one where blue is the brightest channel has most
# likely been saved in BGR order (a red-free photograph, green above blue, is not taken for one).


@dataclass
class Item:
    path: str                  # as found (shown in the CSV)
    rel: str                   # relative stem under --output, posix ('sub/01_test')
    missing: Optional[str] = None  # an input argument that matched nothing
    searched: bool = False     # found by a folder's search or a glob, not named itself
    origin: str = ""           # the name of the folder ``rel`` is under (an input folder, a single file's folder)


def _is_image(p: Path):
    return p.suffix.lower() in IMAGE_EXTS and not p.name.startswith(".")


def _walk(folder: Path):
    """(folder, its file names) under a folder, hidden ones (and hidden folders) left out,
    symlinked sub-folders followed, so that a cohort assembled from links is searched whole;
    each real folder once (in name order), and never one holding the searched folder (a link
    back up)."""
    top = Path(os.path.realpath(folder))
    visited = set()
    for root, dirs, names in os.walk(folder, followlinks=True):
        real = Path(os.path.realpath(root))
        if real in visited or real in top.parents:
            dirs[:] = []
            continue
        visited.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        yield Path(root), [n for n in names if not n.startswith(".")]


def _search(folder: Path) -> tuple:
    """(files, dead links) under a folder, as _walk finds them: the links of image names that
    lead nowhere (or loop) are said, not dropped."""
    files, dead = [], []
    for root, names in _walk(folder):
        for n in names:
            f = root / n
            if f.is_file():
                files.append(f)
            elif f.is_symlink() and _is_image(f):
                dead.append(f)
    return files, dead


def _dead_link_reason(f: Path) -> str:
    try:
        os.stat(f)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return f"a link that loops ({f} -> {os.readlink(f)})"
    return f"a link to {os.readlink(f)}, which does not exist"


def _in_an_output_folder(f: Path, base: Path, output: Optional[Path]) -> bool:
    """Under --output, or under a folder holding a predictions.csv or a predict_run.json (an
    interrupted run's folder has no CSV), up to the searched folder."""
    rf, base = f.resolve(), base.resolve()
    if output is not None and rf.is_relative_to(output):
        return True
    for d in rf.parents:
        if holds_a_run(d):
            return True
        if d == base:
            return False
    return False


def _not_a_photograph(f: Path, base: Path, output: Optional[Path], masks: Optional[Path]) -> bool:
    """Not a photograph to segment: a mask of --masks (unless the masks lie among the
    photographs themselves: --masks is the searched folder or one above it, as a cohort's
    patient folders searched one by one with --masks on the cohort; there the masks are told
    by their names, <stem>_mask.*), or an output of this program (an output file name in an
    output folder)."""
    if masks is not None and not base.resolve().is_relative_to(masks) and f.resolve().is_relative_to(masks):
        return True
    return f.name.endswith(OUTPUT_PICTURES) and _in_an_output_folder(f, base, output)


def _of_a_data_set(f: Path, base: Path) -> bool:
    """A label or FOV mask of a data set's layout, <split>/{images,1st_manual,mask} (README: Data),
    found by searching a folder above it: not a photograph."""
    folder = f.parent
    return (folder.name in ("1st_manual", "mask") and (folder.parent / "images").is_dir()
            and os.path.abspath(folder) != os.path.abspath(base))


def _data_set_note(spec: str, skipped: list, masks_given: bool) -> str:
    splits = sorted({f.parent.parent for f in skipped})
    folders = ", ".join(f"{name}/" for name in sorted({f.parent.name for f in skipped}))
    hint = ""
    if not masks_given and (splits[0] / "mask").is_dir():
        hint = (f"; --masks {splits[0] / 'mask'} uses its FOV masks" if len(splits) == 1
                else "; --masks on a split's mask/ folder uses its FOV masks")
    return (f"{spec}: a data set's layout ({splits[0]}{', ...' if len(splits) > 1 else ''}): its images/ are "
            f"segmented, not the files of its {folders}{hint}")


def _rel_stem(p: Path, base: Optional[Path]) -> str:
    """The output name of a photograph: its path under ``base`` without the extension (links
    not resolved: a linked photograph keeps the name it has in the cohort); its file name when
    it is not under ``base`` or there is none."""
    try:
        rel = Path(os.path.abspath(p)).relative_to(os.path.abspath(base)) if base is not None else Path(p.name)
    except ValueError:
        rel = Path(p.name)
    return rel.with_suffix("").as_posix()


def _masks_beside_photographs(found: list, photographs: list) -> list:
    """The files of ``found`` named <stem>_mask.* beside one of the ``photographs`` named
    <stem>.*: FOV masks exported with their photographs, not photographs to segment."""
    stems = {Path(os.path.abspath(f)).with_suffix("") for f in photographs}
    return [f for f in found if f.stem.endswith("_mask") and len(f.stem) > len("_mask")
            and Path(os.path.abspath(f)).with_name(f.stem[:-len("_mask")]) in stems]


def _recursive_glob(spec: str, base: Path) -> list:
    """The files (and dead links) a recursive glob ('photos/**/*.jpg') matches, found by the folder
    search of _search below the glob's fixed part ``base``: Python's glob follows links back up
    without end (a cohort with such a link never finishes). '**/' is any number of folders,
    '*' and '?' stay within a name, [...] as in glob; hidden files and folders are skipped."""
    pattern, regex, i = Path(os.path.relpath(spec, base)).as_posix(), "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            regex, i = regex + "(?:[^/]+/)*", i + 3
        elif pattern.startswith("**", i):
            regex, i = regex + ".*", i + 2
        elif pattern[i] in "*?":
            regex, i = regex + ("[^/]*" if pattern[i] == "*" else "[^/]"), i + 1
        elif pattern[i] == "[" and "]" in pattern[i + (3 if pattern[i + 1:i + 2] == "!" else 2):]:
            negated = pattern[i + 1] == "!"
            end = pattern.index("]", i + (3 if negated else 2))  # as in glob: a ']' first in the set is literal
            body = pattern[i + 1 + negated:end].replace("\\", "\\\\").replace("^", "\\^")
            regex, i = regex + "[" + "^" * negated + body + "]", end + 1
        else:
            regex, i = regex + re.escape(pattern[i]), i + 1
    matches = re.compile(regex + r"\Z").match
    if not base.is_dir():
        return []
    files, dead = _search(base)
    return [f for f in files + dead if matches(f.relative_to(base).as_posix())]


def any_case_extension(pattern: str) -> str:
    """A glob whose file extension matches in any case ('*.jpg' -> '*.[jJ][pP][gG]'), as a
    folder's search does: cameras write .JPG, and a cohort often mixes both."""
    head, dot, ext = pattern.rpartition(".")
    if not dot or not ext.isalnum():  # no plain extension at the end ('x/*', 'a.d/*', '*.t?f', 'x[.ab]')
        return pattern
    return head + dot + "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in ext)


def find_inputs(specs, output=None, masks=None):
    """Items for every input argument (sorted per argument, duplicates dropped) and warnings
    about arguments that matched nothing. Folders and globs skip ``masks``, masks named
    <stem>_mask.* beside their photographs and the outputs of earlier runs (see
    ``_not_a_photograph``); files named explicitly are always taken. Output names: the path
    under the folder searched, under a glob's fixed part, under the common folder of a list's
    entries; a single file's name; where two are the same, ``unique_output_names``."""
    found = _InputsFound(output, masks)
    for spec in specs:
        p = Path(spec)
        if p.is_dir():
            found.add_folder(spec, p)
        elif p.is_file() and p.suffix.lower() in LIST_EXTS:
            found.add_list(spec, p)
        elif p.is_file() or p.is_symlink():
            found.add_file(spec, p)
        elif glob.has_magic(spec):
            found.add_glob(spec)
        else:
            found.add_missing(p, p.with_suffix("").name, "file or folder not found")
    items, warnings = found.items, found.warnings
    if found.same_file:
        first, taken_as = found.same_file[0]
        warnings.append(f"{len(found.same_file)} input(s) the same file as another one (a link), segmented once: "
                        f"{first} as {taken_as}{', ...' if len(found.same_file) > 1 else ''}")
    searched = [Path(it.path) for it in items if it.searched]
    beside = {str(f) for f in _masks_beside_photographs(searched, [Path(it.path) for it in items if not it.missing])}
    if beside:
        use = "; --masks on their folder uses them as FOV masks" if masks is None else ""
        warnings.append(f"{len(beside)} file(s) named like a photograph's mask (<stem>_mask.*) beside it, not "
                        f"segmented (e.g. {min(beside)}){use}")
        items = [it for it in items if it.path not in beside]
    unique_output_names(items)
    return items, warnings


class _InputsFound:
    """What find_inputs gathers, argument by argument: the items (each photograph once, however
    often it is reached), the warnings, and the links that reached a photograph again."""

    def __init__(self, output=None, masks=None):
        self.output = Path(output).resolve() if output else None
        self.masks = Path(masks).resolve() if masks else None
        self.items, self.warnings = [], []
        self.seen = {}  # resolved path -> its Item
        self.same_file = []  # (path, the path it was taken as): links to one photograph, segmented once

    def add(self, p: Path, base: Optional[Path], search=False):
        key = str(p.resolve())
        if key not in self.seen:
            self.seen[key] = Item(str(p), _rel_stem(p, base), searched=search, origin=base.name if base else "")
            self.items.append(self.seen[key])
            return
        if not search:  # also named itself: taken whatever its name
            self.seen[key].searched = False
        if os.path.abspath(p) != os.path.abspath(self.seen[key].path):
            self.same_file.append((str(p), self.seen[key].path))

    def add_missing(self, p: Path, rel: str, why: str):
        key = os.path.realpath(p)  # never raises, as Path.resolve does on a link that loops
        if key not in self.seen:
            self.seen[key] = Item(str(p), rel, missing=why)
            self.items.append(self.seen[key])

    def add_searched(self, spec, base: Path, found: list, dead: list) -> list:
        """The photographs a folder or glob found (a data set's labels and masks left out, said),
        and its dead links, said and counted as a missing file named in a list is; returns the
        photographs."""
        of_a_data_set = {f for f in found if _of_a_data_set(f, base)}
        if of_a_data_set:
            self.warnings.append(_data_set_note(spec, of_a_data_set, self.masks is not None))
            found = [f for f in found if f not in of_a_data_set]
        for f in found:
            self.add(f, base, search=True)
        for f in dead:
            self.add_missing(f, _rel_stem(f, base), _dead_link_reason(f))
        return found

    def add_folder(self, spec, folder: Path):
        files, dead = _search(folder)
        images = [f for f in files if _is_image(f)]
        found = self.add_searched(spec, folder, sorted(
            f for f in images if not _not_a_photograph(f, folder, self.output, self.masks)), dead)
        if not found and images:
            self.warnings.append(f"{spec}: only the outputs of an earlier predict.py run or masks in this folder, "
                                 f"no photographs")
        elif not found and not dead:
            self.warnings.append(f"{spec}: no images ({' '.join(IMAGE_EXTS)}) in this folder")
        else:  # e.g. .webp or .dcm photographs, which would otherwise vanish unsaid
            other = sorted({f.suffix.lower() or f.name for f in files if not _is_image(f)
                            and not (self.masks is not None and f.resolve().is_relative_to(self.masks))
                            and not _of_a_data_set(f, folder)
                            and not _in_an_output_folder(f, folder, self.output)})
            if other:
                self.warnings.append(f"{spec}: files of other types skipped ({', '.join(other[:8])}"
                                     f"{', ...' if len(other) > 8 else ''}); images are {' '.join(IMAGE_EXTS)}")

    def add_list(self, spec, listing: Path):
        try:
            lines = listing.read_text(encoding="utf-8-sig").splitlines()  # -sig: a byte-order mark (Notepad, Excel)
        except (OSError, UnicodeDecodeError) as exc:
            self.warnings.append(f"{spec}: cannot read list file ({exc})")
            return
        paths = [Path(s) if Path(s).is_absolute() else listing.parent / s
                 for s in (line.strip() for line in lines) if s and not s.startswith("#")]
        if not paths:
            self.warnings.append(f"{spec}: empty list file")
            return
        # Output names under the common folder of the entries that exist (one mistyped line
        # does not rename the others); none on two Windows drives: file names alone.
        try:
            base = Path(os.path.commonpath([os.path.abspath(q.parent) for q in paths if q.is_file()]))
        except ValueError:
            base = None
        for q in paths:
            if q.is_file():
                self.add(q, base)
            else:
                why = "a folder; a list names image files" if q.is_dir() else "not found"
                self.add_missing(q, _rel_stem(q, base), f"listed in {spec}, but {why}")

    def add_file(self, spec, p: Path):
        if p.suffix.lower() not in IMAGE_EXTS:
            self.warnings.append(f"{spec}: not an image file name ({' '.join(IMAGE_EXTS)}); read as one all the "
                                 f"same (a list of images is a {' '.join(LIST_EXTS)} file)")
        self.add(p, p.parent)

    def add_glob(self, spec):
        base = Path(spec)
        while glob.has_magic(str(base)):
            base = base.parent
        found = sorted(set(_recursive_glob(any_case_extension(spec), base) if "**" in spec
                           else map(Path, glob.glob(any_case_extension(spec)))))
        dead = [f for f in found if not f.is_file() and f.is_symlink() and _is_image(f)]
        found = self.add_searched(spec, base, [f for f in found if f.is_file() and _is_image(f)
                                               and not _not_a_photograph(f, base, self.output, self.masks)], dead)
        if not found and not dead:
            self.warnings.append(f"{spec}: no images match this pattern")


def unique_output_names(items):
    """Give every item its own output name (``rel``), in place. Two inputs with one name: under
    input folders of different names (patB/OD.jpg and patC/OD.jpg, given folder by folder), that
    folder's name before it; else (a.jpg and a.png of one folder) the extension after it, then
    a number."""
    groups = {}
    for it in items:
        groups.setdefault(it.rel, []).append(it)
    for rel, group in groups.items():
        origins = {it.origin for it in group}
        if len(group) > 1 and "" not in origins and len(origins) == len(group) \
                and not any(f"{origin}/{rel}" in groups for origin in origins):
            for it in group:
                it.rel = f"{it.origin}/{rel}"
    counts = {}
    for it in items:
        counts[it.rel] = counts.get(it.rel, 0) + 1
    taken, last_number = set(), {}  # last_number: where the numbering of a name goes on (no rescan)
    for it in items:
        if counts[it.rel] > 1:
            rel = f"{it.rel}_{Path(it.path).suffix.lstrip('.').lower()}"
            n, candidate = last_number.get(rel, 1), rel if rel not in last_number else None
            while candidate is None or candidate in taken or candidate in counts:
                n += 1
                candidate = f"{rel}_{n}"
            last_number[rel] = n
            it.rel = candidate
        taken.add(it.rel)


class MaskFinder:
    """FOV masks in a folder, named like the image (<stem>.* or <stem>_mask.*). Where several
    masks have that name (OD.png of every patient), the one whose folders under --masks are the
    photograph's own nearest folders (masks/patB/OD.png for .../patB/OD.jpg); a mask in the
    top folder fits any photograph of its name. ``note_shared`` then counts the photographs of
    a run that take each mask, since one mask for several photographs is most likely a mistake."""

    def __init__(self, folder):
        self.folder = Path(folder) if folder else None
        self.by_stem, self.uses = {}, {}
        if self.folder is None:
            return
        if self.folder.is_file():
            raise ConfigError(f"--masks {folder}: a file; --masks is a folder of masks named like the images")
        if not self.folder.is_dir():
            raise ConfigError(f"--masks {folder}: no such folder")
        for f in sorted(_search(self.folder)[0]):
            if f.suffix.lower() in MASK_EXTS:
                self.by_stem.setdefault(f.stem, []).append(f)

    def find(self, item: Item) -> Optional[Path]:
        """The mask of a photograph, or None; never the photograph itself (masks and
        photographs may share a folder: a.png's mask is then a_mask.png)."""
        if self.folder is None:
            return None
        stem, photograph = Path(item.path).stem, Path(os.path.realpath(item.path))
        own_folders = Path(os.path.abspath(item.path)).parent.parts[::-1]  # nearest first
        best, best_fit = None, -1
        for key in (stem, stem + "_mask"):
            for mask in self.by_stem.get(key, ()):
                folders = mask.relative_to(self.folder).parent.parts[::-1]
                if list(folders) != list(own_folders[:len(folders)]) or Path(os.path.realpath(mask)) == photograph:
                    continue  # in another patient's (or eye's, visit's) folder
                if len(folders) > best_fit:
                    best, best_fit = mask, len(folders)
        return best

    def note_shared(self, items):
        """Count, over all the photographs of the run, those that take each mask."""
        for it in items:
            if not it.missing:
                mask = self.find(it)
                self.uses[mask] = self.uses.get(mask, 0) + 1


def fingerprint(path) -> str:
    """SHA-256 of a photograph's file: how --resume recognises it, wherever it has moved."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Prepared:
    item: Item
    rgb: np.ndarray              # HxWx3 uint8, original size
    fov: np.ndarray              # HxW bool
    fov_source: str
    resized: dict                # (W, H) -> 3xHxW uint8 tensor
    sha256: str = ""             # of the photograph's file (written into the class map)
    notes: tuple = ()            # why its maps may be poor, how it was turned: on stderr and in the CSV
    orientation: int = 1         # the EXIF orientation applied (1: as stored)


def read_fov(item, rgb, masks: MaskFinder, turn=1):
    mask_path = masks.find(item)
    if mask_path is None:
        fov = estimate_fov(rgb)
        if fov.mean() < MIN_FOV or fov.all():  # no disc found (not a fundus photograph?), or no dark border
            return np.ones_like(fov), "whole image"
        return fov, "estimated"
    fov = read_mask(mask_path, upright=True)
    if fov.shape != rgb.shape[:2]:
        turned = f" as viewers show it (EXIF orientation {turn})" if turn != 1 else ""
        raise ValueError(f"its mask {mask_path} is {fov.shape[1]} x {fov.shape[0]}, the image{turned} "
                         f"{rgb.shape[1]} x {rgb.shape[0]}")
    if not fov.any():
        raise ValueError(f"its mask {mask_path} is empty (no non-zero pixel): nothing to segment")
    return fov, "mask"


def prepare(item: Item, sizes, masks: MaskFinder) -> Prepared:
    if item.missing:
        raise FileNotFoundError(item.missing)
    rgb = read_image(item.path, upright=True)
    if rgb.ndim != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ValueError(f"unusable image of shape {rgb.shape}")
    why = not_a_photograph(rgb)
    if why:
        raise ValueError(f"{why}: not segmented")
    turn = photo_orientation(item.path)
    fov, source = read_fov(item, rgb, masks, turn)
    resized = {s: torch.from_numpy(np.array(Image.fromarray(rgb).resize(s, Image.BILINEAR))).permute(2, 0, 1)
               for s in sizes}
    notes = orientation_note(turn, source) + pages_note(item.path) + image_notes(item, rgb, fov, source, sizes, masks)
    return Prepared(item, rgb, fov, source, resized, fingerprint(item.path), notes, turn)


def photo_orientation(path) -> int:
    """The EXIF orientation a photograph is read with (1: as stored), from its header."""
    with open_header(path) as img:
        return exif_orientation(img)


def orientation_note(turn: int, fov_source: str) -> tuple:
    """Photographs are read as image viewers show them (a phone's or camera's EXIF orientation
    tag applied), and their outputs are made the same way up; so must their masks be."""
    if turn == 1:
        return ()
    mask = ("; its mask is taken as drawn on the photograph as viewers show it" if fov_source == "mask" else "")
    return (f"turned as image viewers show it (EXIF orientation {turn}), as are its outputs{mask}",)


def pages_note(path) -> tuple:
    """A TIFF of several pages (a camera's export of a whole exam, say) is read as its first page:
    said, so that the others are not taken for segmented."""
    with open_header(path) as img:
        pages = getattr(img, "n_frames", 1) if img.format == "TIFF" else 1
    return (f"a TIFF of {pages} pages: only the first is segmented",) if pages > 1 else ()


def image_notes(item, rgb, fov, fov_source, sizes, masks: MaskFinder) -> tuple:
    """photo_notes, a mask that covers almost nothing or serves several photographs, and a mask
    of --masks not found for it."""
    notes = photo_notes(rgb, fov, sizes)
    mask = masks.find(item) if fov_source == "mask" else None
    if mask is not None and masks.uses.get(mask, 0) > 1:
        notes += (f"its mask {mask} is the mask of {masks.uses[mask]} photographs of this run (named like each, "
                  f"in no folder of its own): check it is this one's",)
    if fov_source == "mask" and fov.mean() < MIN_FOV:
        notes += (f"its mask covers only {100 * fov.mean():.1f} % of the photograph: is it the mask of this one?",)
    if masks.folder is not None and fov_source != "mask":
        notes += (f"no mask named like it in --masks {masks.folder}; FOV {fov_source}",)
    return notes


def photo_notes(rgb, fov, sizes) -> tuple:
    """What about a photograph makes poor maps likely; it is segmented all the same."""
    notes = []
    every_4th = (slice(None, None, 4), slice(None, None, 4))  # a sample is enough for a spread and the means
    inside = rgb[every_4th][fov[every_4th]]  # N x 3
    uniform = len(inside) > 0 and inside.std(axis=0).max() < MIN_FOV_STD
    if not uniform and (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
        notes.append("a greyscale photograph; the networks learned from colour ones "
                     "(artery and vein differ in colour), so expect poorer maps")
    elif not uniform and len(inside) > 0:
        red, green, blue = inside.mean(axis=0)
        if blue > max(red, green):
            notes.append(f"blue is its brightest channel inside its FOV (mean red, green, blue {red:.0f}, "
                         f"{green:.0f}, {blue:.0f} of 255), whereas in every photograph of DRIVE_AV, LES-AV and "
                         f"HRF-AV red is the brightest, at least twice the blue: saved in BGR order (OpenCV's "
                         f"cv2.imwrite of an RGB array)? Expect poorer maps; save it as RGB")
    h, w = rgb.shape[:2]
    net_w, net_h = max(sizes, key=lambda s: max(s[0] / w, s[1] / h))  # the largest enlargement
    if max(net_w / w, net_h / h) > MAX_ENLARGEMENT:
        notes.append(f"a small photograph ({w} x {h}), enlarged over {MAX_ENLARGEMENT:g}x to the networks' "
                     f"{net_w} x {net_h}: its vessels are blurred, so expect poorer maps")
    for net_w, net_h in sizes:
        change = (net_w / net_h) / (w / h)
        if max(change, 1 / change) > MAX_ASPECT_CHANGE:
            notes.append(f"its {w} x {h} is resized to the networks' {net_w} x {net_h}, which "
                         f"{'stretches' if change > 1 else 'squeezes'} it {max(change, 1 / change):.2f}x "
                         f"horizontally: the networks learned from undistorted photographs, so expect poorer maps")
            break
    if uniform:  # a blank grey one is not also called greyscale
        notes.append("nearly uniform inside its FOV (a blank or failed capture?): nothing to segment")
    return tuple(notes)
