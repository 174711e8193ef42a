"""Image input: reading files, converting arrays to RGB, and CLIP's native-resolution transform.

TagCLIP feeds the image at (about) its own size: each side rounded up to a multiple of the patch
size, resized with PIL's bicubic filter (what the official torchvision transform does on PIL
images; OpenCV's bicubic differs by far more than the 1e-4 score tolerance), then normalised
with CLIP's mean and std.
"""
from __future__ import annotations

import math
import os

import numpy as np
import torch
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from PIL import Image, UnidentifiedImageError

MAX_PIXELS = 64_000_000
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


def model_input_size(height: int, width: int, patch_size: int) -> tuple[int, int]:
    """Each side rounded up to a whole number of patches (at least one)."""
    return (max(1, math.ceil(height / patch_size)) * patch_size,
            max(1, math.ceil(width / patch_size)) * patch_size)


def normalize(pixels: torch.Tensor) -> torch.Tensor:
    """CLIP normalisation of float pixels in [0, 1], channels first."""
    mean = torch.tensor(OPENAI_DATASET_MEAN, dtype=pixels.dtype, device=pixels.device)
    std = torch.tensor(OPENAI_DATASET_STD, dtype=pixels.dtype, device=pixels.device)
    return (pixels - mean[:, None, None]) / std[:, None, None]


def prepare_image(rgb: np.ndarray, patch_size: int) -> torch.Tensor:
    """The model input (1, 3, H', W') for an RGB uint8 image at native resolution."""
    height, width = model_input_size(rgb.shape[0], rgb.shape[1], patch_size)
    resized = Image.fromarray(rgb).resize((width, height), Image.Resampling.BICUBIC)
    pixels = torch.from_numpy(np.asarray(resized).copy()).permute(2, 0, 1).float().div(255.0)
    return normalize(pixels).unsqueeze(0)
