"""COCO-Stuff class tables and id mappings for the paper's third benchmark, COCO-Stuff-27.

Three id spaces meet in the COCO-Stuff evaluation, and mixing them up silently ruins the mIoU:

- **182-ids** (0-based): what COCO-Stuff label PNGs and the official tag split files hold. Id k is
  the COCO-Stuff category k + 1 (0 = person, 181 = wood); 255 means unlabelled / ignore. Eleven
  of the 182 ids are COCO categories that were never annotated (street sign, hat, ...).
- **171 indices** (0-based): TagCLIP classifies over the 182 names minus those eleven, in id
  order (the official `classify.py --dataset cocostuff`). The project's label masks hold the
  171 index + 1 (0 is background), as they do for VOC and COCO.
- **27 coarse ids**: the paper scores COCO-Stuff-27, COCO-Stuff's supercategories (12 thing,
  15 stuff), the official `fine_to_coarse` table of CLIP-ES's `eval_cam_cocostuff.py`.

The numeric lookups are derived here from names, the coarse hierarchy written as supercategory
-> member names, so that the tests, which hold the official numeric tables, check them
independently. Plain data and numpy, nothing else.
"""
from __future__ import annotations

from types import MappingProxyType
from typing import Iterable, Mapping

import numpy as np

__all__ = [
    "CLIPES_PROMPT_NAMES", "COARSE_CLASSES", "COARSE_HIERARCHY", "COCO_STUFF_CLASSES",
    "FINE171_TO_COARSE", "FINE182_CLASSES", "GT182_TO_171", "GT182_TO_COARSE", "IGNORE",
    "REMOVED_182_IDS", "UNUSED_182_CLASSES", "gt_ids_to_171",
]

IGNORE = 255
"""The ignore / unlabelled value in every lookup and label map here (as in COCO-Stuff's PNGs)."""

FINE182_CLASSES: tuple[str, ...] = (
    # things (COCO's 91 category ids 1..91, as 0-based 182-ids 0..90)
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "street sign", "stop sign", "parking meter", "bench", "bird",
    "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "hat", "backpack",
    "umbrella", "shoe", "eye glasses", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard",
    "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "plate", "wine glass", "cup", "fork", "knife", "spoon", "bowl",
    "banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut",
    "cake", "chair", "couch", "pottedplant", "bed", "mirror", "diningtable", "window", "desk",
    "toilet", "door", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone", "microwave",
    "oven", "toaster", "sink", "refrigerator", "blender", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush", "hair brush",
    # stuff (ids 92..182, as 0-based 182-ids 91..181)
    "banner", "blanket", "branch", "bridge", "building-other", "bush", "cabinet", "cage",
    "cardboard", "carpet", "ceiling-other", "ceiling-tile", "cloth", "clothes", "clouds", "counter",
    "cupboard", "curtain", "desk-stuff", "dirt", "door-stuff", "fence", "floor-marble",
    "floor-other", "floor-stone", "floor-tile", "floor-wood", "flower", "fog", "food-other", "fruit",
    "furniture-other", "grass", "gravel", "ground-other", "hill", "house", "leaves", "light", "mat",
    "metal", "mirror-stuff", "moss", "mountain", "mud", "napkin", "net", "paper", "pavement",
    "pillow", "plant-other", "plastic", "platform", "playingfield", "railing", "railroad", "river",
    "road", "rock", "roof", "rug", "salad", "sand", "sea", "shelf", "sky-other", "skyscraper", "snow",
    "solid-other", "stairs", "stone", "straw", "structural-other", "table", "tent", "textile-other",
    "towel", "tree", "vegetable", "wall-brick", "wall-concrete", "wall-other", "wall-panel",
    "wall-stone", "wall-tile", "wall-wood", "water-other", "waterdrops", "window-blind",
    "window-other", "wood",
)
"""All 182 COCO-Stuff names, indexed by 0-based 182-id, in the official name table's spelling
(`class_names_coco_stuff182_dict` of TagCLIP's clip_text.py: 'motorcycle', 'airplane', 'tv',
not COCO-80's 'motorbike', 'aeroplane', 'tvmonitor'), its commented-out entries included."""

UNUSED_182_CLASSES: tuple[str, ...] = (
    "street sign", "hat", "shoe", "eye glasses", "plate", "mirror", "window", "desk", "door",
    "blender", "hair brush",
)
"""The eleven COCO thing categories that COCO-Stuff never annotates; TagCLIP drops them."""

REMOVED_182_IDS: tuple[int, ...] = tuple(FINE182_CLASSES.index(n) for n in UNUSED_182_CLASSES)
"""0-based 182-ids of the unused categories (the official list, 12, 26, ..., 91, minus one)."""

COCO_STUFF_CLASSES: tuple[str, ...] = tuple(n for n in FINE182_CLASSES if n not in UNUSED_182_CLASSES)
"""The 171 COCO-Stuff classes TagCLIP scores, in the official order: index i is 171-class i."""

# The names CLIP-ES prompts instead, where they differ: `generate_cams_cocostuff.py` runs from
# CLIP-ES/ (as the official README says) and so reads CLIP-ES's own name table, whose entries
# for these thirteen classes are the richer prompts it uses for COCO; TagCLIP's table (above)
# has the plain names. Labels stay the plain names.
CLIPES_PROMPT_NAMES: Mapping[str, str] = MappingProxyType({
    "person": "person with clothes,people,human", "airplane": "aeroplane", "bird": "bird avian",
    "backpack": "backpack,bag", "umbrella": "umbrella,parasol", "handbag": "handbag,purse",
    "tie": "necktie", "baseball glove": "glove", "spoon": "dessertspoon", "chair": "chair seat",
    "tv": "tvmonitor screen", "remote": "remote control", "hair drier": "hairdrier,blowdrier",
})

COARSE_HIERARCHY: Mapping[str, tuple[str, ...]] = MappingProxyType({
    # things: COCO's supercategories
    "electronic": ("tv", "laptop", "mouse", "remote", "keyboard", "cell phone"),
    "appliance": ("microwave", "oven", "toaster", "sink", "refrigerator", "blender"),
    "food": ("banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza",
             "donut", "cake"),
    "furniture": ("chair", "couch", "pottedplant", "bed", "mirror", "diningtable", "window", "desk",
                  "toilet", "door"),
    "indoor": ("book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
               "hair brush"),
    "kitchen": ("bottle", "plate", "wine glass", "cup", "fork", "knife", "spoon", "bowl"),
    "accessory": ("hat", "backpack", "umbrella", "shoe", "eye glasses", "handbag", "tie", "suitcase"),
    "animal": ("bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe"),
    "outdoor": ("traffic light", "fire hydrant", "street sign", "stop sign", "parking meter", "bench"),
    "person": ("person",),
    "sports": ("frisbee", "skis", "snowboard", "sports ball", "kite", "baseball bat",
               "baseball glove", "skateboard", "surfboard", "tennis racket"),
    "vehicle": ("bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat"),
    # stuff: COCO-Stuff's supercategories
    "ceiling": ("ceiling-other", "ceiling-tile"),
    "floor": ("carpet", "floor-marble", "floor-other", "floor-stone", "floor-tile", "floor-wood"),
    "food-stuff": ("food-other", "fruit", "salad", "vegetable"),
    "furniture-stuff": ("cabinet", "counter", "cupboard", "desk-stuff", "door-stuff",
                        "furniture-other", "light", "mirror-stuff", "shelf", "stairs", "table"),
    "raw-material": ("cardboard", "metal", "paper", "plastic"),
    "textile": ("banner", "blanket", "cloth", "clothes", "curtain", "mat", "napkin", "pillow", "rug",
                "textile-other", "towel"),
    "wall": ("wall-brick", "wall-concrete", "wall-other", "wall-panel", "wall-stone", "wall-tile",
             "wall-wood"),
    "window": ("window-blind", "window-other"),
    "building": ("bridge", "building-other", "house", "roof", "skyscraper", "tent"),
    "ground": ("dirt", "gravel", "ground-other", "mud", "pavement", "platform", "playingfield",
               "railroad", "road", "sand", "snow"),
    "plant": ("branch", "bush", "flower", "grass", "leaves", "moss", "plant-other", "straw", "tree"),
    "sky": ("clouds", "sky-other"),
    "solid": ("hill", "mountain", "rock", "solid-other", "stone", "wood"),
    "structural": ("cage", "fence", "net", "railing", "structural-other"),
    "water": ("fog", "river", "sea", "water-other", "waterdrops"),
})
"""COCO-Stuff-27: coarse class -> its fine classes (all 182, the unused eleven included, so that
ground truth maps completely), in coarse-id order. The names are COCO's thing supercategories and
COCO-Stuff's stuff supercategories as spelt in the COCO-Stuff annotation files ('food' and
'furniture' are things, 'food-stuff' and 'furniture-stuff' stuff); TagCLIP's clip_text.py lists
the same 27 in the same order as 'food things', 'food stuff', 'raw material', etc."""

COARSE_CLASSES: tuple[str, ...] = tuple(COARSE_HIERARCHY)
"""The 27 coarse class names; index c is coarse id c (0 = electronic, ..., 26 = water)."""


def _coarse_of_name() -> dict[str, int]:
    """Fine name -> coarse id from the hierarchy; every one of the 182 names exactly once."""
    coarse: dict[str, int] = {}
    for cid, members in enumerate(COARSE_HIERARCHY.values()):
        for name in members:
            if name in coarse or name not in FINE182_CLASSES:
                raise ValueError(f"COARSE_HIERARCHY: {name!r} is repeated or not a COCO-Stuff name")
            coarse[name] = cid
    missing = set(FINE182_CLASSES) - set(coarse)
    if missing:
        raise ValueError(f"COARSE_HIERARCHY leaves out {sorted(missing)}")
    return coarse


def _lookup(pairs: Iterable[tuple[int, int]]) -> np.ndarray:
    """A read-only 256-entry uint8 table (IGNORE where unset), indexable by any uint8 label map."""
    table = np.full(256, IGNORE, dtype=np.uint8)
    for src, dst in pairs:
        table[src] = dst
    table.flags.writeable = False
    return table


_COARSE = _coarse_of_name()

GT182_TO_171: np.ndarray = _lookup(
    (fid, COCO_STUFF_CLASSES.index(n)) for fid, n in enumerate(FINE182_CLASSES) if n in COCO_STUFF_CLASSES)
"""0-based 182-id -> 171-class index; the unused ids and 255 (unlabelled) -> IGNORE."""

FINE171_TO_COARSE: np.ndarray = _lookup((i, _COARSE[n]) for i, n in enumerate(COCO_STUFF_CLASSES))
"""171-class index -> coarse id 0..26 (indices 171..255 -> IGNORE). A project mask holds index + 1:
map it with `FINE171_TO_COARSE[mask - 1]` where mask > 0."""

GT182_TO_COARSE: np.ndarray = _lookup((fid, _COARSE[n]) for fid, n in enumerate(FINE182_CLASSES))
"""0-based 182-id -> coarse id 0..26, the unused ids included (as the official evaluation maps the
ground truth); 255 -> IGNORE. This is how COCO-Stuff-27 ground truth is made from the PNGs."""


def gt_ids_to_171(ids: Iterable[int | str]) -> list[int]:
    """A tag ground-truth line's 0-based 182-ids (ints or their strings, as in the official split
    files) -> the sorted, unique 171-class indices. Unused ids and 255 are dropped (the official
    split never lists them; its classify.py would fail on one); any other id outside 0..181 is a
    ValueError, since it means the line is not in 182-id form."""
    out: set[int] = set()
    for raw in ids:
        fid = int(raw)
        if fid != IGNORE and not 0 <= fid < len(FINE182_CLASSES):
            raise ValueError(f"{raw!r} is not a 0-based COCO-Stuff 182-id (0..181, or 255)")
        if GT182_TO_171[fid] != IGNORE:
            out.add(int(GT182_TO_171[fid]))
    return sorted(out)
