"""Building a CLIP model from a named pretrained tag or a local checkpoint file.

Checkpoints come in three shapes, all accepted: OpenAI's TorchScript archive (`ViT-B-16.pt`),
an OpenAI-format plain state dict (its architecture is read off the tensor shapes, so narrow
test checkpoints load through the same path), and open_clip training checkpoints
(`{"state_dict": ...}`), which are loaded into the architecture named by `model_name`.
Every failure becomes a `WeightsError` whose message is one sentence naming what to set.
"""
from __future__ import annotations

import hashlib
import os
import zipfile
from dataclasses import dataclass
from functools import lru_cache

import open_clip
import torch
from open_clip.model import CLIP, build_model_from_openai_state_dict

from .device import resolve_device, resolve_precision

OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")


class WeightsError(RuntimeError):
    """The model weights could not be found, read or downloaded."""


@dataclass
class LoadedModel:
    """A CLIP model ready for inference, with what the rest of the core needs to know of it."""

    model: CLIP
    device: torch.device
    dtype: torch.dtype
    weights_id: str  # stable identity of the weights, used to key the text-feature cache
    description: str

    @property
    def patch_size(self) -> int:
        return int(self.model.visual.conv1.kernel_size[0])

    @property
    def image_size(self) -> int:
        """Side of the square input the positional embeddings were trained for (224)."""
        grid = int(round((self.model.visual.positional_embedding.shape[0] - 1) ** 0.5))
        return grid * self.patch_size

    @property
    def context_length(self) -> int:
        return int(self.model.positional_embedding.shape[0])


def load_model(model_name: str = "ViT-B-16", pretrained: str = "openai",
               weights: str | None = None, device: str = "auto",
               precision: str = "fp32") -> LoadedModel:
    """Load CLIP for inference; `weights` (a local file) wins over `pretrained`."""
    dev = resolve_device(device)
    dtype = resolve_precision(precision, dev)
    if weights:
        model, weights_id = _load_local(weights, model_name), file_fingerprint(weights)
        description = f"{model_name} from {weights}"
    else:
        model, weights_id = _load_pretrained(model_name, pretrained), f"{model_name}:{pretrained}"
        description = f"{model_name} ({pretrained})"
    if not isinstance(model, CLIP):
        raise WeightsError(f"model {model_name!r} is not a plain CLIP ViT; TagCLIP needs one "
                           "such as ViT-B-16")
    model = model.to(device=dev, dtype=dtype).eval().requires_grad_(False)
    return LoadedModel(model, dev, dtype, weights_id, description)


def from_model(model: torch.nn.Module, device: torch.device | str = "cpu",
               dtype: torch.dtype = torch.float32, weights_id: str = "in-memory",
               description: str | None = None) -> LoadedModel:
    """Wrap a CLIP built in memory (e.g. randomly initialised for a benchmark) for inference:
    moved to `device`/`dtype`, in eval mode, without gradients. `weights_id` keys the text
    cache, so give every distinct set of weights its own."""
    if not isinstance(model, CLIP):
        raise WeightsError(f"a {type(model).__name__} is not a plain CLIP ViT; TagCLIP needs one "
                           "such as ViT-B-16")
    dev = torch.device(device)
    model = model.to(device=dev, dtype=dtype).eval().requires_grad_(False)
    return LoadedModel(model, dev, dtype, weights_id, description or f"in-memory CLIP ({weights_id})")


def _load_pretrained(model_name: str, pretrained: str) -> torch.nn.Module:
    try:
        return open_clip.create_model(model_name, pretrained=pretrained or None, device="cpu")
    except Exception as exc:  # network, hub and unknown-tag errors all end here
        raise WeightsError(
            f"could not get pretrained weights {model_name}/{pretrained} ({_first_line(exc)}); "
            "on a machine without network access set the weights path (--weights, or "
            "model.weights for the node) to a local checkpoint") from None


def _load_local(path: str, model_name: str) -> torch.nn.Module:
    if not os.path.isfile(path):
        raise WeightsError(f"weights file {path!r} does not exist; set the weights path "
                           "(--weights, or model.weights for the node) to a CLIP checkpoint")
    state_dict = _read_state_dict(path)
    try:
        if "state_dict" in state_dict and isinstance(state_dict["state_dict"], dict):
            return _load_open_clip_checkpoint(state_dict["state_dict"], model_name)
        return _build_from_openai_state_dict(state_dict)
    except WeightsError:
        raise
    except Exception as exc:
        raise WeightsError(f"weights file {path!r} is not a CLIP checkpoint this loader knows "
                           f"({_first_line(exc)}); give an OpenAI .pt or an open_clip "
                           "checkpoint") from None


def _read_state_dict(path: str) -> dict:
    """Tensors of an OpenAI TorchScript archive or a torch-saved (state) dict."""
    try:
        if zipfile.is_zipfile(path) and _is_torchscript(path):
            return torch.jit.load(path, map_location="cpu").state_dict()
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"weights file {path!r} could not be read as a torch checkpoint "
                           f"({_first_line(exc)}); it may be truncated or corrupt") from None
    if not isinstance(obj, dict):
        raise WeightsError(f"weights file {path!r} holds a {type(obj).__name__}, not a state dict")
    return obj


def _is_torchscript(path: str) -> bool:
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("constants.pkl") for name in archive.namelist())


def _build_from_openai_state_dict(state_dict: dict) -> CLIP:
    if "visual.proj" not in state_dict:
        raise WeightsError("the checkpoint has no 'visual.proj': it is not an OpenAI-format "
                           "CLIP ViT state dict")
    tensors = {k: v for k, v in state_dict.items() if k not in OPENAI_EXTRA_KEYS}
    model = build_model_from_openai_state_dict(dict(tensors))
    # open_clip's builder stores the weights in float16; reload them at full precision so a
    # float32 checkpoint keeps every bit (OpenAI's own .pt files are float16 anyway).
    model.float().load_state_dict({k: v.float() for k, v in tensors.items()})
    return model


def _load_open_clip_checkpoint(state_dict: dict, model_name: str) -> torch.nn.Module:
    state_dict = {k.removeprefix("module."): v for k, v in state_dict.items()}
    model = open_clip.create_model(model_name, pretrained=None, device="cpu")
    model.load_state_dict(state_dict)
    return model


@lru_cache(maxsize=16)
def _hash_file(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def file_fingerprint(path: str) -> str:
    """Content hash of a weights file (memoised by path, size and mtime)."""
    stat = os.stat(path)
    return "sha256:" + _hash_file(os.path.abspath(path), stat.st_size, stat.st_mtime_ns)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
