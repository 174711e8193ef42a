"""Boxes around the high-scoring part of a small score map (the DMAR class-level mask).

The official code quantises the map to uint8, thresholds it, and takes the bounding boxes of
the external contours with OpenCV. The quantisation decides which boxes exist, so it is kept.
"""
from __future__ import annotations

import cv2
import numpy as np


def contour_boxes(score_map: np.ndarray, threshold: float) -> list[tuple[int, int, int, int]]:
    """Boxes (x0, y0, x1, y1), end-exclusive, of the external contours of
    `score_map > threshold·max` on the uint8-quantised map of a [0, 1] float32 map.

    As in the reference implementation, the end coordinates are clamped to width−1 and
    height−1, and a map with no contour yields one empty box."""
    height, width = score_map.shape
    quantised = (score_map.astype(np.float32) * np.float32(255)).astype(np.uint8)
    level = int(np.float32(threshold) * np.float32(quantised.max()))
    _, binary = cv2.threshold(quantised, level, 255, cv2.THRESH_BINARY)
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return [(0, 0, 0, 0)]
    boxes = []
    for contour in contours:
        x, y, w, h = cv2.boundingRect(contour)
        boxes.append((x, y, min(x + w, width - 1), min(y + h, height - 1)))
    return boxes


def box_mask(shape: tuple[int, int], boxes: list[tuple[int, int, int, int]]) -> np.ndarray:
    """Float mask of `shape`, 1 inside any of the end-exclusive boxes."""
    mask = np.zeros(shape, dtype=np.float32)
    for x0, y0, x1, y1 in boxes:
        mask[y0:y1, x0:x1] = 1.0
    return mask
