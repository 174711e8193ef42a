"""The ROS-free core: model loading, TagCLIP, text features, segmentation and metrics.

Nothing in this package imports rclpy; the CLI, the ROS node and the benchmarks all use it.
"""
from .image import ImageError, read_image, to_rgb
from .loading import LoadedModel, WeightsError, load_model
from .tagclip import Tag, TagClip, TagClipSettings, TagResult
from .text import TextFeatureCache, default_cache_dir
from .vocab import BUILTIN, Vocabulary, load_vocabulary

__all__ = [
    "BUILTIN", "ImageError", "LoadedModel", "Tag", "TagClip", "TagClipSettings", "TagResult",
    "TextFeatureCache", "Vocabulary", "WeightsError", "default_cache_dir", "load_model",
    "load_vocabulary", "read_image", "to_rgb",
]
