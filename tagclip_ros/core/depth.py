"""3D boxes of label-mask regions from an aligned depth image and the colour camera's intrinsics.

Each region's pixels with a valid depth are back-projected into the colour camera's optical frame
(x right, y down, z forward, metres). The box's centre is the coordinate-wise median of those
points and its size the per-axis extent between their 5th and 95th percentiles, so that a few
pixels of background at a region's rim (depth edges) move neither much.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from .detections import Region

DEFAULT_MIN_POINTS = 50  # valid depth pixels a region needs for a 3D box
DEFAULT_MAX_DELAY = 0.05  # s between a frame's stamp and its depth image's, at most
PERCENTILES = (5.0, 95.0)  # the box's extent along each axis
ASPECT_TOLERANCE = 0.01  # relative difference of aspect ratios still taken for the same view


class DepthError(ValueError):
    """A depth image or camera model that cannot give positions for this frame; one sentence."""


@dataclass(frozen=True)
class Intrinsics:
    """The colour camera's pinhole model at the label mask's size."""

    fx: float
    fy: float
    cx: float
    cy: float

    @classmethod
    def from_k(cls, k: Sequence[float], info_size: tuple[int, int],
               image_size: tuple[int, int]) -> Intrinsics:
        """From CameraInfo's row-major 3×3 `k` for images of `info_size` (height, width),
        scaled to `image_size` when the camera reports another resolution (0: the same)."""
        fx, fy, cx, cy = float(k[0]), float(k[4]), float(k[2]), float(k[5])
        if not (np.isfinite([fx, fy, cx, cy]).all() and fx > 0 and fy > 0):
            raise DepthError(f"camera_info has no usable focal length (fx {fx}, fy {fy})")
        height, width = info_size
        if not (height and width) or (height, width) == tuple(image_size):
            return cls(fx, fy, cx, cy)
        sx, sy = image_size[1] / width, image_size[0] / height
        # pixel centres at integers: the edge at -0.5 stays at -0.5 when scaling
        return cls(fx * sx, fy * sy, (cx + 0.5) * sx - 0.5, (cy + 0.5) * sy - 0.5)


@dataclass(frozen=True)
class Box3D:
    """A region's extent in the optical frame, metres."""

    center: tuple[float, float, float]
    size: tuple[float, float, float]
    points: int  # valid depth pixels it was computed from


def depth_metres(depth: np.ndarray) -> np.ndarray:
    """Float32 metres from a uint16 image in millimetres or a float32 one in metres; zero,
    negative, NaN and infinite depths become NaN (no measurement)."""
    if depth.ndim != 2:
        raise DepthError(f"a depth image has one channel, not shape {depth.shape}")
    if depth.dtype == np.uint16:
        metres = depth.astype(np.float32) / np.float32(1000.0)
    elif depth.dtype == np.float32:
        metres = depth.copy()
    else:
        raise DepthError(f"depth must be uint16 millimetres or float32 metres, not {depth.dtype}")
    metres[~(np.isfinite(metres) & (metres > 0))] = np.nan
    return metres


def aligned(depth_m: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """`depth_m` at the colour image's `image_size` (height, width): scaled (nearest, so no depth
    is invented between a near and a far pixel) when only the resolution differs."""
    if depth_m.shape == tuple(image_size):
        return depth_m
    (dh, dw), (ih, iw) = depth_m.shape, image_size
    if abs(dw / dh - iw / ih) > ASPECT_TOLERANCE * (iw / ih):
        raise DepthError(f"depth is {dw}×{dh} and the image {iw}×{ih}: another aspect ratio, "
                         "so not registered to it")
    return cv2.resize(depth_m, (iw, ih), interpolation=cv2.INTER_NEAREST)


def region_box(region: Region, depth_m: np.ndarray, camera: Intrinsics,
               min_points: int = DEFAULT_MIN_POINTS) -> Box3D | None:
    """The region's 3D box from the image-sized `depth_m`, or None with fewer than `min_points`
    valid depth pixels in it."""
    rows, cols = region.pixels()
    z = depth_m[rows, cols]
    valid = ~np.isnan(z)
    if int(valid.sum()) < max(1, min_points):
        return None
    z = z[valid].astype(np.float64)
    x = (cols[valid] - camera.cx) * z / camera.fx
    y = (rows[valid] - camera.cy) * z / camera.fy
    points = np.stack([x, y, z], axis=1)
    low, high = np.percentile(points, PERCENTILES, axis=0)
    center = np.median(points, axis=0)
    return Box3D(tuple(float(v) for v in center), tuple(float(v) for v in high - low), len(z))


def region_boxes(found: Iterable[Region], depth: np.ndarray, camera: Intrinsics,
                 image_size: tuple[int, int], min_points: int = DEFAULT_MIN_POINTS
                 ) -> list[tuple[Region, Box3D]]:
    """Each region with enough valid depth and its 3D box; DepthError when the depth image
    cannot serve the frame at all (encoding, shape, or no valid pixel)."""
    depth_m = aligned(depth_metres(depth), image_size)
    if np.isnan(depth_m).all():
        raise DepthError("the depth image has no valid pixel (all zero, NaN or infinite)")
    boxes = []
    for region in found:
        box = region_box(region, depth_m, camera, min_points)
        if box is not None:
            boxes.append((region, box))
    return boxes
