"""The knobs of TagCLIP and CLIP-ES, and the names of the choices the command line and the node
offer (precisions, segmentation methods, the text-feature cache folder).

Plain data without torch, so that argument parsing, `--help` and the camera feeder answer
without loading it; the modules that compute import their settings from here.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from .image import DEFAULT_MAX_INPUT_SIDE, check_max_side
from .vocab import VOC_BACKGROUND, validate_names

# The numeric precisions a model runs in (core/device.py maps them to torch dtypes).
PRECISION_NAMES = ("fp32", "fp16", "bf16")

# How a label mask is computed after tagging (core/pipeline.py): CLIP-ES, or the DMAR map.
SEGMENTATION_METHODS = ("clipes", "dmar")

# CLIP-ES's background names (its BACKGROUND_CATEGORY), the default when the vocabulary has none.
CLIPES_BACKGROUND: tuple[str, ...] = VOC_BACKGROUND


def default_cache_dir() -> str:
    """Where text features persist between runs ($TAGCLIP_CACHE, else ~/.cache/tagclip_ros)."""
    root = os.environ.get("TAGCLIP_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "tagclip_ros")
    return os.path.join(root, "text")


@dataclass(frozen=True)
class TagClipSettings:
    """The algorithm's knobs; defaults are the paper's VOC/COCO settings."""

    tag_threshold: float = 0.5        # relative threshold that turns final scores into tags
    candidate_threshold: float = 0.5  # relative threshold for CWR candidates (COCO-Stuff: 0.1)
    vote_min_layers: int = 4          # attention-level mask: entries above mean in ≥ this many blocks
    affinity_start: int = -4          # affinity = mean attention of blocks[affinity_start:-1]
    global_weight: float = 0.5        # weight of the CWR (global) score in the final score
    skip_degenerate: bool = False     # official CWR stops at the first empty box; True skips it only
    templates: str | tuple[str, ...] = "tagclip"
    max_input_side: int | None = DEFAULT_MAX_INPUT_SIDE  # larger images are downscaled; None: never

    def __post_init__(self) -> None:
        for name in ("tag_threshold", "candidate_threshold", "global_weight"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], not {value}")
        check_max_side(self.max_input_side)


@dataclass(frozen=True)
class SegmentationSettings:
    """CLIP-ES knobs; the defaults are the official VOC settings."""

    background_power: float = 1.0   # background score = (1 − max CAM) ** background_power
    box_threshold: float = 0.4      # CAM level (relative to its max) whose boxes mask the affinity
    background: tuple[str, ...] | None = None  # None: the vocabulary's, else CLIPES_BACKGROUND
    background_channel: bool = True  # False (COCO-Stuff): masks have no background, see label_mask
    templates: str | tuple[str, ...] = "clipes"  # "a clean origami {}."
    affinity_start: int = -8        # affinity = mean attention of blocks[affinity_start:-1]
    affinity_last_block: bool = False  # COCO's CLIP-ES: blocks[affinity_start:], the last too
    round_weights_fp16: bool = True  # use the weights as CLIP-ES's loader leaves them (clipes_model)
    max_input_side: int | None = DEFAULT_MAX_INPUT_SIDE  # larger images are downscaled; None: never

    def __post_init__(self) -> None:
        if not self.background_power > 0:
            raise ValueError(f"background_power must be positive, not {self.background_power}")
        if not 0.0 <= self.box_threshold <= 1.0:
            raise ValueError(f"box_threshold must lie in [0, 1], not {self.box_threshold}")
        if self.affinity_start >= -1:
            raise ValueError(f"affinity_start must be -2 or lower (the last block is never part "
                             f"of the affinity), not {self.affinity_start}")
        if self.background is not None:
            validate_names(tuple(self.background), "background", allow_empty=True)
        check_max_side(self.max_input_side)

    @property
    def mask_background_power(self) -> float | None:
        """The label-mask rule's background exponent; None when masks have no background."""
        return self.background_power if self.background_channel else None
