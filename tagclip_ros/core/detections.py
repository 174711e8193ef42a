"""Where each tagged class is: one region per 8-connected piece of its label-mask pixels.

Planners need boxes (and, with depth, positions) rather than a label image. A region is one
8-connected component of one tagged class's pixels in the label mask, kept when its area is at
least `min_area` of the image; regions of a label are numbered largest first. Boxes are in the
label mask's pixels, which are the input image's (masks keep the frame's size).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import cv2
import numpy as np

from .tags import Tag

DEFAULT_MIN_AREA = 0.001  # a region's least share of the image's pixels


@dataclass(frozen=True)
class Region:
    """One connected region of a tagged class in the label mask."""

    class_id: int  # the label mask's id: vocabulary index + 1
    label: str
    score: float   # the tag's score
    rank: int      # k: 0 for the label's largest region, 1 for the next, ...
    area: int      # pixels
    box: tuple[int, int, int, int]  # x0, y0, x1, y1: end-exclusive pixel bounds
    mask: np.ndarray = field(repr=False, compare=False)  # bool (y1 - y0, x1 - x0): its pixels

    @property
    def id(self) -> str:
        """`<label>/<k>`: stable within a frame, as Detection2D.id."""
        return f"{self.label}/{self.rank}"

    @property
    def center(self) -> tuple[float, float]:
        """The box's centre (x, y) in pixel coordinates whose integers are pixel centres: a box
        of the single pixel (3, 4) is centred at (3.0, 4.0)."""
        x0, y0, x1, y1 = self.box
        return (x0 + x1 - 1) / 2.0, (y0 + y1 - 1) / 2.0

    @property
    def size(self) -> tuple[int, int]:
        """The box's width and height in pixels."""
        x0, y0, x1, y1 = self.box
        return x1 - x0, y1 - y0

    def pixels(self) -> tuple[np.ndarray, np.ndarray]:
        """Row and column of every pixel of the region, in image coordinates."""
        rows, cols = np.nonzero(self.mask)
        return rows + self.box[1], cols + self.box[0]


def regions(mask: np.ndarray, tags: Iterable[Tag], min_area: float = DEFAULT_MIN_AREA) -> list[Region]:
    """The regions of each of `tags` in the label `mask`, tags in the given order (best first),
    each tag's regions largest first (ties: top-most, then left-most). Regions smaller than
    `min_area` of the image are left out."""
    if not 0.0 <= min_area <= 1.0:
        raise ValueError(f"min_area is a fraction of the image in [0, 1], not {min_area}")
    least = max(1, int(np.ceil(min_area * mask.size)))
    found: list[Region] = []
    for tag in tags:
        found += _class_regions(mask == tag.class_id, tag, least)
    return found


def _class_regions(pixels: np.ndarray, tag: Tag, least: int) -> list[Region]:
    """The 8-connected regions of one class's `pixels` with at least `least` pixels."""
    if not pixels.any():
        return []
    count, labels, stats, _ = cv2.connectedComponentsWithStats(pixels.view(np.uint8), connectivity=8)
    kept = [i for i in range(1, count) if stats[i, cv2.CC_STAT_AREA] >= least]
    kept.sort(key=lambda i: (-stats[i, cv2.CC_STAT_AREA], stats[i, cv2.CC_STAT_TOP],
                             stats[i, cv2.CC_STAT_LEFT]))
    found = []
    for rank, i in enumerate(kept):
        x0, y0 = int(stats[i, cv2.CC_STAT_LEFT]), int(stats[i, cv2.CC_STAT_TOP])
        x1, y1 = x0 + int(stats[i, cv2.CC_STAT_WIDTH]), y0 + int(stats[i, cv2.CC_STAT_HEIGHT])
        found.append(Region(tag.class_id, tag.label, float(tag.score), rank,
                            int(stats[i, cv2.CC_STAT_AREA]), (x0, y0, x1, y1),
                            labels[y0:y1, x0:x1] == i))
    return found
