"""Pictures of results: a class-colour palette, and masks blended on the image with each region
named where it lies and a legend of the tags and scores that fits the image however many tags
there are."""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import cv2
import numpy as np

if TYPE_CHECKING:
    from .tags import Tag

FONT = cv2.FONT_HERSHEY_SIMPLEX
LEGEND_HEIGHT = 0.5  # the legend's share of the image height at most; "+k more" for the rest
LEGEND_WIDTH = 0.5   # and of its width: longer labels are shortened to ".."
MIN_SCORE_DIGITS, MAX_SCORE_DIGITS = 2, 6  # significant digits of the scores shown
LABEL_CANDIDATES = 256  # places tried for a region's label, most inside the region first

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (ends exclusive)


def palette(count: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map (id → RGB uint8), extended to `count` ids; id 0 is black."""
    colours = np.zeros((count, 3), dtype=np.uint8)
    for index in range(count):
        value, r, g, b = index, 0, 0, 0
        for bit in range(8):
            r |= ((value >> 0) & 1) << (7 - bit)
            g |= ((value >> 1) & 1) << (7 - bit)
            b |= ((value >> 2) & 1) << (7 - bit)
            value >>= 3
        colours[index] = (r, g, b)
    return colours


def score_texts(scores: Sequence[float]) -> list[str]:
    """The scores written with the fewest significant digits (at least MIN_SCORE_DIGITS) that
    tell different scores apart: 0.9558 → "0.96"; 0.0316, 0.0291 → "0.032", "0.029"."""
    for digits in range(MIN_SCORE_DIGITS, MAX_SCORE_DIGITS + 1):
        texts = [significant(s, digits) for s in scores]
        if len(set(texts)) == len(set(scores)):
            break
    return texts


def significant(value: float, digits: int) -> str:
    """`value` rounded to `digits` significant digits, in plain decimal notation."""
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
    return f"{value:.{decimals}f}"


class Caption(NamedTuple):
    """A tag as the overlay shows it: label-mask id, label, score as written (`score_texts`)."""

    class_id: int
    label: str
    score: str

    @property
    def text(self) -> str:
        """The caption's legend line (unless shortened to fit): "label score"."""
        return f"{self.label} {self.score}"


def tag_captions(tags: Sequence[Tag]) -> list[Caption]:
    """The captions of tags (`core.tags.Tag`s, best first) that every overlay shows."""
    return [Caption(t.class_id, t.label, s) for t, s in zip(tags, score_texts([t.score for t in tags]))]


@dataclass(frozen=True)
class TextStyle:
    """Font size and spacing for an image: text grows with the image and is ~12 px high at
    least."""

    scale: float
    thickness: int
    text_h: int
    baseline: int
    line: int  # legend line height
    pad: int

    @classmethod
    def for_image(cls, shape: tuple[int, ...]) -> TextStyle:
        scale = max(0.45, min(shape[:2]) / 900)
        thickness = max(1, round(scale * 1.6))
        (_, text_h), baseline = cv2.getTextSize("Ag", FONT, scale, thickness)
        return cls(scale, thickness, text_h, baseline, int(text_h * 1.9), max(3, text_h // 3))

    def width(self, text: str) -> int:
        return cv2.getTextSize(text, FONT, self.scale, self.thickness)[0][0]

    def fit(self, label: str, suffix: str, max_width: int) -> str:
        """`label + suffix`, the label shortened to "..", if need be, to fit `max_width` px."""
        text = label + suffix
        while label and self.width(text) > max_width:
            label = label[:-1]
            text = label.rstrip() + ".." + suffix
        return text


@dataclass(frozen=True)
class LegendRow:
    """One legend line: a tag (swatch and "label score") or, class_id None, "+k more"."""

    class_id: int | None
    text: str
    swatch: Box | None
    origin: tuple[int, int]  # text baseline start


@dataclass(frozen=True)
class Legend:
    """The top-left panel: its box, its lines, and how many tags "+k more" counts."""

    box: Box
    rows: tuple[LegendRow, ...]
    more: int  # tags it does not list


@dataclass(frozen=True)
class RegionLabel:
    """A tag's name written on a dark backing at the most inside place of its region."""

    class_id: int
    text: str
    box: Box
    origin: tuple[int, int]


@dataclass(frozen=True)
class Layout:
    """Where an overlay's text goes: the legend (None without tags) and the region labels."""

    legend: Legend | None
    labels: tuple[RegionLabel, ...]


def overlay_layout(shape: tuple[int, ...], mask: np.ndarray | None,
                   captions: Sequence[Caption]) -> Layout:
    """Where the legend and the region labels go on an image of `shape`: all inside it, no two
    overlapping (a region whose label finds no free place is named only in the legend)."""
    style = TextStyle.for_image(shape)
    legend = legend_layout(shape, captions, style) if captions else None
    taken = [legend.box] if legend else []
    labels = region_labels(mask, captions, style, taken) if mask is not None else []
    return Layout(legend, tuple(labels))


def legend_layout(shape: tuple[int, ...], captions: Sequence[Caption], style: TextStyle) -> Legend:
    """The legend in the top-left corner: as many captions as fit LEGEND_HEIGHT of the image
    (two lines at least, where the image has room), best first, then "+k more" for the rest."""
    height, width = shape[:2]
    line, pad = style.line, style.pad
    capacity = max(1, min((height - pad) // line, max(2, (int(height * LEGEND_HEIGHT) - pad) // line)))
    shown = list(captions) if len(captions) <= capacity else list(captions[:capacity - 1])
    more = len(captions) - len(shown)
    text_x = 2 * pad + line
    max_text = max(1, int(width * LEGEND_WIDTH) - text_x - pad)
    texts = [style.fit(c.label, f" {c.score}", max_text) for c in shown] + ([f"+{more} more"] if more else [])
    rows = []
    for row, text in enumerate(texts):
        top = pad + row * line
        swatch = (pad, top, pad + line - pad, top + line - pad) if row < len(shown) else None
        origin = (text_x, top + (line - pad + style.text_h) // 2)
        rows.append(LegendRow(shown[row].class_id if swatch else None, text, swatch, origin))
    box = (0, 0, min(width, text_x + max(map(style.width, texts)) + pad), min(height, pad + line * len(rows)))
    return Legend(box, tuple(rows), more)


def region_labels(mask: np.ndarray, captions: Sequence[Caption], style: TextStyle,
                  taken: list[Box]) -> list[RegionLabel]:
    """A label for each caption's region in `mask`, best tag first, each at the free place
    deepest inside its region; `taken` (boxes already used) grows with each label."""
    height, width = mask.shape[:2]
    labels = []
    for caption in captions:
        region = mask == caption.class_id
        if not region.any():
            continue
        text = style.fit(caption.label, "", width - 2 * style.pad)
        box_w, box_h = style.width(text) + 2 * style.pad, style.text_h + style.baseline + 2 * style.pad
        for y, x in label_places(region, max(2, style.text_h // 2)):
            x0 = int(min(max(0, x - box_w // 2), width - box_w))
            y0 = int(min(max(0, y - box_h // 2), height - box_h))
            box = (x0, y0, x0 + box_w, y0 + box_h)
            if min(x0, y0) >= 0 and not any(overlaps(box, other) for other in taken):
                taken.append(box)
                origin = (x0 + style.pad, y0 + style.pad + style.text_h)
                labels.append(RegionLabel(caption.class_id, text, box, origin))
                break
    return labels


def label_places(region: np.ndarray, step: int) -> Iterator[tuple[int, int]]:
    """Points (y, x) of a region, deepest inside first: its pole of inaccessibility (the point
    farthest from its edges and the image's), then points of a `step` grid by depth."""
    depth = cv2.distanceTransform(np.pad(region, 1).astype(np.uint8), cv2.DIST_L2, 3)[1:-1, 1:-1]
    yield np.unravel_index(int(np.argmax(depth)), depth.shape)
    ys, xs = np.arange(step // 2, region.shape[0], step), np.arange(step // 2, region.shape[1], step)
    grid = depth[np.ix_(ys, xs)]
    order = np.argsort(-grid, axis=None, kind="stable")[:LABEL_CANDIDATES]
    for index in order[grid.ravel()[order] > 0]:
        row, col = divmod(int(index), len(xs))
        yield int(ys[row]), int(xs[col])


def overlaps(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def render_overlay(rgb: np.ndarray, mask: np.ndarray | None, captions: Sequence[Caption],
                   alpha: float = 0.5) -> np.ndarray:
    """The image with non-background mask pixels tinted by class colour and region edges drawn
    in white or black, whichever contrasts; each tag's name at its region; and a legend of the
    tags with scores and white-outlined swatches (dark colours stay visible) on a darkened
    panel (see `overlay_layout`). What the CLI, the node and `tagclip bag` draw."""
    out = rgb.copy()
    ids = [c.class_id for c in captions] + ([int(mask.max())] if mask is not None and mask.size else [])
    colours = palette(max([256] + [i + 1 for i in ids]))
    if mask is not None:
        fg = mask > 0
        out[fg] = (alpha * colours[mask][fg] + (1 - alpha) * out[fg]).astype(np.uint8)
        draw_edges(out, mask)
    layout = overlay_layout(rgb.shape, mask, captions)
    style = TextStyle.for_image(rgb.shape)
    for label in layout.labels:
        draw_backed_text(out, label.box, label.text, label.origin, style, colours[label.class_id])
    if layout.legend is not None:
        draw_legend(out, layout.legend, colours, style)
    return out


def draw_edges(out: np.ndarray, mask: np.ndarray) -> None:
    """Mark pixels where the mask's class changes (next to a foreground class) in white on dark
    pixels and black on light ones, so regions show even where their tint does not."""
    edge = np.zeros(mask.shape, dtype=bool)
    for a, b in (((slice(None), slice(1, None)), (slice(None), slice(None, -1))),
                 ((slice(1, None), slice(None)), (slice(None, -1), slice(None)))):
        differ = mask[a] != mask[b]
        edge[a] |= differ & (mask[a] > 0)
        edge[b] |= differ & (mask[b] > 0)
    light = out @ np.array([0.299, 0.587, 0.114]) >= 128
    out[edge & light] = 0
    out[edge & ~light] = 255


def draw_backed_text(out: np.ndarray, box: Box, text: str, origin: tuple[int, int], style: TextStyle,
                     colour: np.ndarray) -> None:
    """White text on a darkened box edged in the class colour."""
    x0, y0, x1, y1 = box
    out[y0:y1, x0:x1] = (0.3 * out[y0:y1, x0:x1]).astype(np.uint8)
    cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), tuple(int(c) for c in colour), 1)
    cv2.putText(out, text, origin, FONT, style.scale, (255, 255, 255), style.thickness, cv2.LINE_AA)


def draw_legend(out: np.ndarray, legend: Legend, colours: np.ndarray, style: TextStyle) -> None:
    """The legend's darkened panel, swatches (outlined in white) and lines."""
    x0, y0, x1, y1 = legend.box
    out[y0:y1, x0:x1] = (0.4 * out[y0:y1, x0:x1]).astype(np.uint8)
    for row in legend.rows:
        if row.swatch is not None:
            sx0, sy0, sx1, sy1 = row.swatch
            corners = (sx0, sy0), (sx1 - 1, sy1 - 1)
            cv2.rectangle(out, *corners, tuple(int(c) for c in colours[row.class_id]), -1)
            cv2.rectangle(out, *corners, (255, 255, 255), 1)
        cv2.putText(out, row.text, row.origin, FONT, style.scale, (255, 255, 255), style.thickness,
                    cv2.LINE_AA)
