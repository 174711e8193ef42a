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
    """The image with non-background mask pixels tinted by class colour and one caption line
    per (class id, text), each on a swatch of its class colour."""
    out = rgb.copy()
    colours = palette(max([256] + [int(mask.max()) + 1 if mask is not None and mask.size else 0]))
    if mask is not None:
        tinted = colours[mask]
        fg = mask > 0
        out[fg] = (alpha * tinted[fg] + (1 - alpha) * out[fg]).astype(np.uint8)
    scale = max(0.4, min(out.shape[:2]) / 800)
    line = int(26 * scale) + 4
    for row, (class_id, text) in enumerate(captions):
        y = 6 + row * line
        colour = tuple(int(c) for c in colours[class_id])
        cv2.rectangle(out, (4, y), (4 + line - 6, y + line - 6), colour, thickness=-1)
        for thickness, ink in ((3, (0, 0, 0)), (1, (255, 255, 255))):
            cv2.putText(out, text, (line + 2, y + line - 9), cv2.FONT_HERSHEY_SIMPLEX, scale * 0.6,
                        ink, thickness, cv2.LINE_AA)
    return out
