"""Dataset files: split and tag files, label-mask PNGs, saved CAMs, and resumable output.

Everything the `tagclip tag`, `segment` and `evaluate-masks` verbs read or write, without a
model, ROS or a command line, so each piece can be tested on its own.

- Split files (VOC/COCO style, as the official TagCLIP `imageset/` files): one image per line,
  `stem [id id ...]`, ids 0-based indices into the vocabulary's classes (ground-truth labels,
  possibly none). Tag files have the same format (what the official `classify.py --save_file`
  writes as `{dataset}_val_tagclip.txt`): `stem id id ...`, the predicted tags in ascending id
  order. So a tag file can be the split file of `tagclip segment`.
- Label masks: 8-bit palette PNGs, pixel = class id + 1 (0 = background, 255 = ignore in
  ground truth), coloured with the PASCAL VOC palette.
- CAMs: a `.npy` holding a pickled dict, loadable with `np.load(path, allow_pickle=True).item()`
  like the official CLIP-ES files.
- Resumption: every file written whole goes through a hidden `.NAME.*.partial` file renamed
  into place, so a killed run never leaves a half-written file under an output's name; files
  that grow (tag and scores files) count a line only once its newline is written. On resume
  an output counts as done only when it is complete (`output_complete`), so even a truncated
  file from elsewhere (an interrupted copy, an older tool) is redone rather than trusted.
"""
from __future__ import annotations

import json
import os
import pickletools
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, TypeVar

import numpy as np
from PIL import Image

from .overlay import palette

IGNORE_LABEL = 255
MAX_MASK_CLASSES = IGNORE_LABEL - 1  # ids 1..254 fit an 8-bit mask beside background and ignore
PARTIAL_SUFFIX = ".partial"  # temporaries: .NAME.<random>.partial beside NAME
PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the empty IEND chunk that closes every PNG
# The precision the official pipeline stores refined CAMs in (`attn_highres`), and in which its
# evaluation takes the label mask's argmax (core/segment.py rounds to it too).
CAM_STORAGE_DTYPE = np.float16
T = TypeVar("T")
V = TypeVar("V")


class SplitFormatError(ValueError):
    """A split or tag file line that cannot be read; the message names the file and line."""


@dataclass(frozen=True)
class SplitEntry:
    """One line of a split or tag file: the image stem and its class ids (file order)."""

    stem: str
    labels: tuple[int, ...]
    line: int = 0  # 1-based line number in the file it came from (0: not from a file)


def parse_split_line(text: str, line: int, source: str,
                     num_classes: int | None = None) -> SplitEntry | None:
    """The entry on one line (None for a blank line). Ids must be integers in
    [0, num_classes); a repeated id is kept once (labels are a set; first occurrence order)."""
    fields = text.split()
    if not fields:
        return None
    stem, ids = fields[0], fields[1:]
    check_stem(stem, line, source)
    labels: list[int] = []
    for value in ids:
        try:
            index = int(value)
        except ValueError:
            raise SplitFormatError(f"{source} line {line}: class id {value!r} is not an integer "
                                   f"(expected 'stem id id ...')") from None
        if index < 0 or (num_classes is not None and index >= num_classes):
            bound = f"[0, {num_classes})" if num_classes is not None else "0 or more"
            raise SplitFormatError(f"{source} line {line}: class id {index} is outside {bound} "
                                   f"for this vocabulary")
        if index not in labels:
            labels.append(index)
    return SplitEntry(stem, tuple(labels), line)


def check_stem(stem: str, line: int, source: str) -> None:
    """Reject stems that would write outside the output folder (absolute, or with '..')."""
    parts = stem.replace("\\", "/").split("/")
    if os.path.isabs(stem) or ".." in parts or "" in parts:
        raise SplitFormatError(f"{source} line {line}: image stem {stem!r} must be a relative "
                               f"name without '..' or empty parts")


def parse_split(lines: Iterable[str], source: str, num_classes: int | None = None) -> list[SplitEntry]:
    """All entries of a split file's lines; SplitFormatError on a bad line or a repeated stem."""
    entries: list[SplitEntry] = []
    first_line: dict[str, int] = {}
    for number, text in enumerate(lines, start=1):
        entry = parse_split_line(text, number, source, num_classes)
        if entry is None:
            continue
        if entry.stem in first_line:
            raise SplitFormatError(f"{source} line {number}: image {entry.stem!r} is listed "
                                   f"again (first on line {first_line[entry.stem]})")
        first_line[entry.stem] = number
        entries.append(entry)
    return entries


def read_split(path: str, num_classes: int | None = None) -> list[SplitEntry]:
    """The entries of a split (or tag) file, in file order; one sentence on any problem."""
    with open(path, encoding="utf-8") as f:
        entries = parse_split(f, path, num_classes)
    if not entries:
        raise SplitFormatError(f"{path} lists no images")
    return entries


def format_tag_line(stem: str, class_ids: Iterable[int]) -> str:
    """One line of a tag file: the stem and the ids in ascending order, as the official
    classify.py writes them (it walks the classes in order)."""
    return " ".join([stem, *(str(i) for i in sorted(int(c) for c in class_ids))]) + "\n"


# ---------------------------------------------------------------------------------------------
# Tag files that grow while a run goes on


def complete_lines(path: str) -> tuple[list[str], bool]:
    """The lines of a file that grows by whole lines (without their newlines), and whether an
    unfinished last line was dropped. A line counts only once its newline is written: it is
    the last byte of each append, so a run killed mid-write never leaves a line that passes,
    even one cut where its text would still read (`a 1 14` cut to `a 1`). A missing file has
    no lines."""
    if not os.path.exists(path):
        return [], False
    with open(path, encoding="utf-8", newline="\n") as f:
        lines = f.read().split("\n")
    return lines[:-1], lines[-1] != ""


def read_progress(path: str, num_classes: int | None = None) -> tuple[dict[str, tuple[int, ...]], bool]:
    """The tags already in a tag file being resumed: {stem: ids}, later lines winning, and
    whether an unfinished last line (no newline: the run was killed mid-write) was dropped.
    A missing file is an empty result."""
    lines, partial = complete_lines(path)
    tags: dict[str, tuple[int, ...]] = {}
    for number, text in enumerate(lines, start=1):
        entry = parse_split_line(text, number, path, num_classes)
        if entry is not None:
            tags[entry.stem] = entry.labels
    return tags, partial


def write_tag_file(path: str, tags: Mapping[str, Sequence[int]]) -> None:
    """Replace `path` with these tags, one line per stem in mapping order (atomically)."""
    atomic_write(path, lambda f: f.writelines(format_tag_line(s, ids) for s, ids in tags.items()),
                 mode="w")


def merge_in_order(order: Sequence[str], new: Mapping[str, V], old: Mapping[str, V]) -> dict[str, V]:
    """Per-image records (tags or scores) of a finished run: the stems of `order` first (new
    records over old ones), then the stems only `old` had (an earlier run over other images),
    in their old order."""
    merged = {stem: new[stem] if stem in new else old[stem]
              for stem in order if stem in new or stem in old}
    for stem, value in old.items():
        merged.setdefault(stem, value)
    return merged


def scores_path(tag_path: str) -> str:
    """The file beside a tag file that keeps each image's class scores (for --eval on resume)."""
    return tag_path + ".scores.jsonl"


def read_scores(path: str, num_classes: int | None = None) -> dict[str, list[float]]:
    """{stem: scores} from a scores file, later lines winning. Only whole lines (see
    `complete_lines`) that hold a record with `num_classes` scores count: a line cut by a killed
    run, or written for another vocabulary, is ignored, so its image is scored again."""
    scores: dict[str, list[float]] = {}
    for text in complete_lines(path)[0]:
        try:
            record = json.loads(text)
            values = [float(v) for v in record["scores"]]
            stem = str(record["stem"])
        except (ValueError, KeyError, TypeError):
            continue
        if num_classes is None or len(values) == num_classes:
            scores[stem] = values
    return scores


def write_scores(path: str, scores: Mapping[str, Sequence[float]]) -> None:
    """Replace a scores file with these {stem: scores} (atomically)."""
    atomic_write(path, lambda f: f.writelines(scores_line(s, v) for s, v in scores.items()), mode="w")


def scores_line(stem: str, scores: Sequence[float]) -> str:
    """One JSON line of a scores file."""
    return json.dumps({"stem": stem, "scores": [float(v) for v in scores]}) + "\n"


def append_line(handle: IO[str], text: str) -> None:
    """Append one whole line and push it to the OS, so a killed run keeps every finished image."""
    handle.write(text)
    handle.flush()


# ---------------------------------------------------------------------------------------------
# Files written whole


def atomic_write(path: str, write: Callable[[IO], None], mode: str = "wb") -> None:
    """Write `path` through a temporary file in the same folder (`.NAME.<random>.partial`, a
    name no output pattern matches) and rename it into place, so the path either does not
    exist or is complete, even when the process is killed."""
    folder, name = os.path.split(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=PARTIAL_SUFFIX)
    try:
        os.chmod(temporary, 0o666 & ~current_umask())  # mkstemp's 0600 would hide results
        with os.fdopen(handle, mode, **({"encoding": "utf-8"} if "b" not in mode else {})) as f:
            write(f)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def partial_target(name: str) -> str | None:
    """The output name an `atomic_write` temporary stands for (`.a.png.x1_y.partial` → `a.png`),
    None for any other name."""
    if not (name.startswith(".") and name.endswith(PARTIAL_SUFFIX)):
        return None
    target, _, random = name[1:-len(PARTIAL_SUFFIX)].rpartition(".")
    return target if target and random else None


def remove_stale_partials(paths: Iterable[str]) -> int:
    """Delete the temporaries that a killed run left for these output paths (one folder listing
    per folder; other files are left alone); how many were removed. Two runs writing the same
    outputs at once are not supported anyway, so any such temporary is stale."""
    wanted: dict[str, set[str]] = {}
    for path in paths:
        folder, name = os.path.split(os.path.abspath(path))
        wanted.setdefault(folder, set()).add(name)
    removed = 0
    for folder, names in wanted.items():
        if not os.path.isdir(folder):
            continue
        for entry in os.scandir(folder):
            if partial_target(entry.name) in names and entry.is_file(follow_symlinks=False):
                os.remove(entry.path)
                removed += 1
    return removed


def current_umask() -> int:
    """The process's file-creation mask (reading it means setting it, so it is set back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def check_mask_classes(num_classes: int) -> None:
    """8-bit masks hold ids 1..254 beside background (0) and ignore (255): refuse more classes."""
    if num_classes > MAX_MASK_CLASSES:
        raise ValueError(f"label masks are 8-bit PNGs with at most {MAX_MASK_CLASSES} classes; "
                         f"this vocabulary has {num_classes}")


def save_label_png(path: str, mask: np.ndarray) -> None:
    """An (H, W) label mask (0 = background, class id + 1) as a palette ("P") PNG."""
    mask = np.asarray(mask)
    if mask.ndim != 2 or (mask.size and (mask.min() < 0 or mask.max() > IGNORE_LABEL)):
        raise ValueError(f"{path}: a label mask must be 2-D with values in [0, {IGNORE_LABEL}]")
    image = Image.fromarray(mask.astype(np.uint8))
    image.putpalette(palette(256).ravel().tolist())  # an "L" image becomes "P", ids unchanged
    atomic_write(path, lambda f: image.save(f, format="PNG"))


def load_label_png(path: str) -> np.ndarray:
    """The ids of a single-channel label PNG (palette or gray) as an (H, W) integer array;
    ValueError for an RGB colour-coded mask, whose colours are not ids."""
    with Image.open(path) as image:
        if image.mode not in ("P", "L", "I", "I;16"):
            raise ValueError(f"{path}: a label mask must be a palette or gray PNG holding class "
                             f"ids, not a {image.mode} image")
        return np.asarray(image).astype(np.int64)


def save_cams(path: str, class_ids: Sequence[int], cams: np.ndarray) -> None:
    """Refined CAMs (tags, H, W) and their class ids as the official CLIP-ES `.npy` dict:
    `keys` (int64 class ids) and the maps as float16 under `cams` and also under the official
    name `attn_highres` (the same array: pickle stores it once), so CLIP-ES's own evaluation
    scripts read these files too."""
    maps = np.asarray(cams, dtype=CAM_STORAGE_DTYPE)
    record = {"keys": np.asarray(class_ids, dtype=np.int64), "cams": maps, "attn_highres": maps}
    atomic_write(path, lambda f: np.save(f, record, allow_pickle=True))


def load_cams(path: str) -> dict[str, np.ndarray]:
    """The dict `save_cams` wrote (or an official CLIP-ES file)."""
    return np.load(path, allow_pickle=True).item()


# ---------------------------------------------------------------------------------------------
# Which images still need work


def image_path(img_root: str, stem: str, ext: str) -> str:
    """`<img_root>/<stem><ext>` (ext given with or without its dot)."""
    return os.path.join(img_root, stem + (ext if ext.startswith(".") or not ext else "." + ext))


def stems_of(paths: Sequence[str]) -> list[SplitEntry]:
    """Entries (no labels) for image paths, stem = file name without extension; ValueError if
    two paths share a stem, since their outputs would overwrite each other."""
    seen: dict[str, str] = {}
    for path in paths:
        stem = os.path.splitext(os.path.basename(path))[0]
        if stem in seen:
            raise ValueError(f"{seen[stem]} and {path} have the same name {stem!r}; their tags "
                             f"would collide in the tag file")
        seen[stem] = path
    return [SplitEntry(stem, ()) for stem in seen]


def segment_outputs(out_dir: str, stem: str, save_cams: bool) -> list[str]:
    """The files `tagclip segment` writes for one image: the mask, and the CAMs if asked."""
    outputs = [os.path.join(out_dir, stem + ".png")]
    if save_cams:
        outputs.append(os.path.join(out_dir, stem + ".npy"))
    return outputs


def split_done(items: Sequence[T], is_done: Callable[[T], bool],
               overwrite: bool) -> tuple[list[T], int]:
    """The items (images) still to process and how many were skipped as done (none with
    overwrite)."""
    if overwrite:
        return list(items), 0
    todo = [item for item in items if not is_done(item)]
    return todo, len(items) - len(todo)


def output_complete(path: str) -> bool:
    """Whether an output file is whole: a PNG ends with its IEND chunk, a CAM file (`.npy`) is
    a whole pickle; any other file only has to exist. Cheap for PNGs (their last 12 bytes), a
    full read for CAM files, whose pickled maps have no length to check."""
    if path.endswith(".png"):
        return ends_with(path, PNG_END)
    if path.endswith(".npy"):
        return cams_whole(path)
    return os.path.isfile(path)


def outputs_complete(paths: Iterable[str]) -> bool:
    """Whether every output of one image is whole (`output_complete`): the image is done."""
    return all(output_complete(path) for path in paths)


def ends_with(path: str, tail: bytes) -> bool:
    """Whether the file exists and its last bytes are `tail`."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() < len(tail):
                return False
            f.seek(-len(tail), os.SEEK_END)
            return f.read() == tail
    except OSError:
        return False


def cams_whole(path: str) -> bool:
    """Whether a CAM file is a whole `.npy` pickle, checked without unpickling it (a pickle can
    run code, and the file may not be ours): its header, then every pickle opcode through to
    the STOP that must end the file."""
    readers = {(1, 0): np.lib.format.read_array_header_1_0,
               (2, 0): np.lib.format.read_array_header_2_0}
    try:
        with open(path, "rb") as f:
            reader = readers.get(np.lib.format.read_magic(f))
            if reader is None or not reader(f)[2].hasobject:
                return False
            last = None
            for last, _, _ in pickletools.genops(f):  # raises on a cut or garbled stream
                pass
            return last is not None and last.name == "STOP" and f.read(1) == b""
    except (OSError, ValueError, EOFError):
        return False


# ---------------------------------------------------------------------------------------------
# Evaluation helpers


def label_matrix(entries: Sequence[SplitEntry], num_classes: int) -> np.ndarray:
    """0/1 ground truth (images, classes) from the split's label ids."""
    labels = np.zeros((len(entries), num_classes), dtype=np.int64)
    for row, entry in enumerate(entries):
        labels[row, list(entry.labels)] = 1
    return labels


def save_rgb_png(path: str, rgb: np.ndarray) -> None:
    """An RGB uint8 picture (H, W, 3) as a PNG (atomically)."""
    image = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8))
    atomic_write(path, lambda f: image.save(f, format="PNG"))
