"""The ROS-free core: model loading, TagCLIP, text features, segmentation and metrics.

Nothing in this package imports rclpy; the CLI, the ROS node and the benchmarks all use it.
Its names are imported on first use (PEP 562), so that `core.doctor` can report a missing
open_clip or torch instead of failing with them at `import tagclip_ros.core`.
"""
from __future__ import annotations

import importlib
from typing import Any

# exported name → the module of this package that defines it
_EXPORTS = {
    "ImageError": "image", "read_image": "image", "to_rgb": "image",
    "LoadedModel": "loading", "WeightsError": "errors", "load_model": "loading",
    "Tag": "tags", "TagClip": "tagclip", "TagClipSettings": "settings", "TagResult": "tags",
    "TextFeatureCache": "text", "default_cache_dir": "settings",
    "Vocabulary": "vocab", "BUILTIN": "dataset_profiles", "load_vocabulary": "dataset_profiles",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value
