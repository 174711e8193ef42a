"""Pictures of results: a class-colour palette and masks blended on the image with tag names."""
from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np


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


def render_overlay(rgb: np.ndarray, mask: np.ndarray | None, captions: Sequence[tuple[int, str]],
                   alpha: float = 0.5) -> np.ndarray:
    """The image with non-background mask pixels tinted by class colour, and a legend of one
    line per (class id, text): text at least ~11 px high whatever the image size, on a darkened
    panel, each class swatch outlined in white so that dark palette colours stay visible."""
    out = rgb.copy()
    highest = max([0] + [c for c, _ in captions] + ([int(mask.max())] if mask is not None and mask.size else []))
    colours = palette(max(256, highest + 1))
    if mask is not None:
        fg = mask > 0
        out[fg] = (alpha * colours[mask][fg] + (1 - alpha) * out[fg]).astype(np.uint8)
    if captions:
        draw_legend(out, captions, colours)
    return out


def draw_legend(out: np.ndarray, captions: Sequence[tuple[int, str]], colours: np.ndarray) -> None:
    """Write the caption lines, with colour swatches, in the top-left corner of `out`."""
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, max(0.45, min(out.shape[:2]) / 900)
    thickness = max(1, round(scale * 1.6))
    (_, text_h), _ = cv2.getTextSize("Ag", font, scale, thickness)
    line, pad = int(text_h * 1.9), max(3, text_h // 3)
    width = max(cv2.getTextSize(t, font, scale, thickness)[0][0] for _, t in captions)
    panel_w = min(out.shape[1], 3 * pad + line + width)
    panel_h = min(out.shape[0], pad + line * len(captions))
    region = out[:panel_h, :panel_w]
    region[:] = (0.4 * region).astype(np.uint8)  # darken behind the legend
    for row, (class_id, text) in enumerate(captions):
        top = pad + row * line
        swatch = (pad, top, pad + line - pad, top + line - pad)
        cv2.rectangle(out, swatch[:2], swatch[2:], tuple(int(c) for c in colours[class_id]), -1)
        cv2.rectangle(out, swatch[:2], swatch[2:], (255, 255, 255), 1)
        baseline_y = top + (line - pad + text_h) // 2
        cv2.putText(out, text, (2 * pad + line, baseline_y), font, scale, (255, 255, 255),
                    thickness, cv2.LINE_AA)
