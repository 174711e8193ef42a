"""Image input: reading files, converting arrays to RGB, and the size the model sees.

TagCLIP feeds the image at (about) its own size: each side rounded up to a multiple of the patch
size (`model_input_size`; the resize and normalisation are in transform.py).

Large inputs are downscaled in that same single resize: with a `max_side`, the longer side fed
to the model is at most `max_side` (rounded up to whole patches). This is CLIP-ES's own
multi-scale transform with a scale below 1 (each side `ceil(scale·side / patch)·patch`); the
maps computed on the patch grid are upsampled straight to the input's size, as CLIP-ES does at
every scale. It bounds memory: the attention maps grow with the square of the token count.

No torch here: the camera feeder and the command line's argument checks import this module.
"""
from __future__ import annotations

import os

import numpy as np
from PIL import Image, UnidentifiedImageError

MAX_PIXELS = 64_000_000
# Default limit on the longer side of the model input (pixels): the paper's datasets (VOC and
# COCO images are at most 640 on a side) and 720p frames run at native size, and one frame's
# peak memory stays bounded (docs/benchmarks.md, "Memory per frame").
DEFAULT_MAX_INPUT_SIDE = 1280
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


class ImageError(ValueError):
    """An image that cannot be used: unreadable, empty, or of an unsupported layout."""


def read_image(path: str) -> np.ndarray:
    """Decode an image file into an RGB uint8 array (H, W, 3)."""
    try:
        with Image.open(path) as img:
            img.load()
            return to_rgb(img)
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{path}: not a readable image ({exc})") from None


def image_files(folder: str) -> list[str]:
    """Paths of the image files directly in `folder`, sorted by name."""
    return sorted(os.path.join(folder, f) for f in os.listdir(folder)
                  if f.lower().endswith(IMAGE_EXTENSIONS))


def to_rgb(image: Image.Image | np.ndarray) -> np.ndarray:
    """RGB uint8 (H, W, 3) from a PIL image or an array that is gray (H, W) or (H, W, 1), RGB or
    RGBA (alpha dropped); 16-bit data is scaled to 8 bits."""
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB") if image.mode != "L" else image)
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ImageError(f"image array of shape {array.shape} is not gray, RGB or RGBA")
    check_size(array.shape[0], array.shape[1])
    array = array[:, :, :3]
    if array.dtype == np.uint16:
        array = (array >> 8).astype(np.uint8)
    elif array.dtype != np.uint8:
        raise ImageError(f"image array of type {array.dtype} is not uint8 or uint16")
    return np.ascontiguousarray(array)


def check_size(height: int, width: int) -> None:
    """Reject empty and absurdly large images with a sentence, before any work is done."""
    if height <= 0 or width <= 0:
        raise ImageError(f"image is empty ({width}x{height})")
    if height * width > MAX_PIXELS:
        raise ImageError(f"image of {width}x{height} pixels is larger than {MAX_PIXELS} pixels")


def check_max_side(max_side: int | None) -> int | None:
    """`max_side` if it is a usable limit (None: no limit), else ValueError with the reason."""
    if max_side is not None and (isinstance(max_side, bool) or not isinstance(max_side, int)
                                 or max_side < 1):
        raise ValueError(f"max_input_side must be a positive number of pixels (or None for the "
                         f"native size), not {max_side!r}")
    return max_side


def model_input_size(height: int, width: int, patch_size: int,
                     max_side: int | None = None) -> tuple[int, int]:
    """The size the model sees: each side scaled by max_side / longer side when the image is
    larger than `max_side`, then rounded up to a whole number of patches (at least one).
    Integer arithmetic, so that the longer side lands exactly on ceil(max_side / patch)."""
    longer = max(height, width)
    if max_side is None or longer <= max_side:
        longer = max_side = 1  # scale 1

    def side(length: int) -> int:
        return max(1, -(-length * max_side // (longer * patch_size))) * patch_size
    return side(height), side(width)


def downscale_note(height: int, width: int, patch_size: int, max_side: int | None) -> str | None:
    """One sentence saying that an image of this size is downscaled for the model, or None."""
    if max_side is None or max(height, width) <= max_side:
        return None
    model_h, model_w = model_input_size(height, width, patch_size, max_side)
    return (f"{width}x{height} images are downscaled to {model_w}x{model_h} for the model "
            f"(max_input_side {max_side}); tags and label masks still cover the whole image, "
            f"masks at its size")
