"""CLIP's native-resolution transform: an RGB image as the model's normalised input tensor.

The image is resized once, to `image.model_input_size` (its own size rounded up to whole
patches, or downscaled to a max side), with PIL's bicubic filter (what the official torchvision
transform does on PIL images; OpenCV's bicubic differs by far more than the 1e-4 score
tolerance), then normalised with CLIP's mean and std.
"""
from __future__ import annotations

import numpy as np
import torch
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from PIL import Image

from .image import model_input_size


def normalize(pixels: torch.Tensor) -> torch.Tensor:
    """CLIP normalisation of float pixels in [0, 1], channels first."""
    mean = torch.tensor(OPENAI_DATASET_MEAN, dtype=pixels.dtype, device=pixels.device)
    std = torch.tensor(OPENAI_DATASET_STD, dtype=pixels.dtype, device=pixels.device)
    return (pixels - mean[:, None, None]) / std[:, None, None]


def prepare_image(rgb: np.ndarray, patch_size: int, max_side: int | None = None) -> torch.Tensor:
    """The model input (1, 3, H', W') for an RGB uint8 image: at native resolution, or with
    its longer side brought down to `max_side` (see `model_input_size`), in one resize."""
    height, width = model_input_size(rgb.shape[0], rgb.shape[1], patch_size, max_side)
    resized = Image.fromarray(rgb).resize((width, height), Image.Resampling.BICUBIC)
    pixels = torch.from_numpy(np.asarray(resized).copy()).permute(2, 0, 1).float().div(255.0)
    return normalize(pixels).unsqueeze(0)
