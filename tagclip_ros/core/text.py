"""Text features: prompt-ensemble encoding and a cache keyed by (weights, templates, name).

Text encoding is the main start-up cost on a CPU (85 prompts per name). Two things keep it low:
the transformer runs only up to the longest prompt's end-of-text token instead of the full
77-token context (the causal mask means later positions never influence earlier ones, so the
features are the same), and every name's feature is cached in memory and on disk, so a
vocabulary change encodes only names never seen before with these weights and templates.
"""
from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence

import numpy as np
import open_clip
import torch

from .loading import LoadedModel
from .prompts import resolve_templates

PROMPTS_PER_BATCH = 1024


def default_cache_dir() -> str:
    """Where text features persist between runs ($TAGCLIP_CACHE, else ~/.cache/tagclip_ros)."""
    root = os.environ.get("TAGCLIP_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "tagclip_ros")
    return os.path.join(root, "text")


@torch.no_grad()
def encode_tokens(loaded: LoadedModel, tokens: torch.Tensor, truncate: bool = True) -> torch.Tensor:
    """Projected text features (unnormalised) of token rows, read at each end-of-text token.

    With `truncate`, positions after the longest row's end-of-text token are never computed."""
    model = loaded.model
    eot = tokens.argmax(dim=-1)
    length = int(eot.max()) + 1 if truncate else tokens.shape[1]
    x = model.token_embedding(tokens[:, :length]).to(loaded.dtype)
    x = x + model.positional_embedding[:length].to(loaded.dtype)
    x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])
    x = model.ln_final(x)
    x = x[torch.arange(x.shape[0], device=x.device), eot]
    return x @ model.text_projection


def tokenize(loaded: LoadedModel, prompts: Sequence[str]) -> torch.Tensor:
    """CLIP BPE tokens, one row per prompt, padded to the model's context length."""
    return open_clip.tokenize(list(prompts), context_length=loaded.context_length).to(loaded.device)


@torch.no_grad()
def encode_names(loaded: LoadedModel, names: Sequence[str], templates: Sequence[str],
                 truncate: bool = True) -> torch.Tensor:
    """Prompt-ensemble features (len(names), D), float32 and L2-normalised: each prompt's feature
    is normalised, the name's prompts averaged, and the mean normalised again."""
    prompts = [t.format(name) for name in names for t in templates]
    features = []
    for start in range(0, len(prompts), PROMPTS_PER_BATCH):
        tokens = tokenize(loaded, prompts[start:start + PROMPTS_PER_BATCH])
        features.append(encode_tokens(loaded, tokens, truncate).float())
    per_prompt = torch.cat(features).reshape(len(names), len(templates), -1)
    per_prompt = per_prompt / per_prompt.norm(dim=-1, keepdim=True)
    mean = per_prompt.mean(dim=1)
    return mean / mean.norm(dim=-1, keepdim=True)


class TextFeatureCache:
    """Name → text feature, remembered in memory and (optionally) on disk.

    Keys are (weights identity, template set, name), so changing weights or templates can never
    return a stale feature."""

    def __init__(self, loaded: LoadedModel, cache_dir: str | None = None) -> None:
        self.loaded = loaded
        self.cache_dir = cache_dir
        self._memory: dict[tuple[str, str], np.ndarray] = {}
        self.encoded_names = 0  # how many names were actually run through the text encoder

    def features(self, names: Sequence[str],
                 templates: str | Sequence[str] = "tagclip") -> torch.Tensor:
        """Features (len(names), D) on the model's device, encoding only names not yet cached."""
        template_tuple = resolve_templates(templates)
        key = _templates_key(template_tuple)
        missing = [n for n in dict.fromkeys(names) if (key, n) not in self._memory
                   and not self._load_from_disk(key, n)]
        if missing:
            encoded = encode_names(self.loaded, missing, template_tuple).cpu().numpy()
            self.encoded_names += len(missing)
            for name, feature in zip(missing, encoded):
                self._memory[(key, name)] = feature
                self._save_to_disk(key, name, feature)
        stacked = np.stack([self._memory[(key, n)] for n in names])
        return torch.from_numpy(stacked).to(self.loaded.device)

    def _path(self, key: str, name: str) -> str | None:
        if not self.cache_dir:
            return None
        dtype = str(self.loaded.dtype).removeprefix("torch.")
        weights = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{self.loaded.weights_id}-{dtype}")
        digest = hashlib.sha1(name.encode("utf-8")).hexdigest()
        return os.path.join(self.cache_dir, weights, key, digest + ".npy")

    def _load_from_disk(self, key: str, name: str) -> bool:
        path = self._path(key, name)
        if path is None or not os.path.isfile(path):
            return False
        try:
            self._memory[(key, name)] = np.load(path)
        except (OSError, ValueError):
            return False  # a damaged cache entry is simply encoded again
        return True

    def _save_to_disk(self, key: str, name: str, feature: np.ndarray) -> None:
        path = self._path(key, name)
        if path is None:
            return
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.{os.getpid()}.tmp"
            with open(tmp, "wb") as f:
                np.save(f, feature)
            os.replace(tmp, path)
        except OSError:
            pass  # a read-only cache only costs speed


def _templates_key(templates: tuple[str, ...]) -> str:
    return hashlib.sha1("\n".join(templates).encode("utf-8")).hexdigest()[:16]
