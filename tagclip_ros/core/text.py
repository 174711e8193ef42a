"""Text features: prompt-ensemble encoding and a cache keyed by (weights, templates, name).

Text encoding is the main start-up cost on a CPU (85 prompts per name). Two things keep it low:
the transformer runs only up to the longest prompt's end-of-text token instead of the full
77-token context (the causal mask means later positions never influence earlier ones, so the
features are the same), and every name's feature is cached in memory and on disk, so a
vocabulary change encodes only names never seen before with these weights and templates.

The disk cache is a convenience, never an input: an entry is trusted only after it proves to be
the feature of this name, template set and weights (see `FeatureStore`); anything else (empty,
truncated, another format, a pickle, NaN, wrong shape, written for another name) is encoded
again and rewritten, so nothing in the cache folder can crash the program or change a score.
The folder is bounded (MAX_ENTRIES): a node answering `~/tag_image` queries with ever new names
must not fill the disk, so the least recently used entries go first.
"""
from __future__ import annotations

import glob
import hashlib
import os
import re
import secrets
import stat
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import BinaryIO

import numpy as np
import open_clip
import torch

from .loading import LoadedModel
from .prompts import resolve_templates

PROMPTS_PER_BATCH = 1024
ENTRY_SUFFIX = ".v2.npy"  # not plain ".npy": older releases wrote bare arrays under that name
NORM_TOLERANCE = 1e-4  # an encoded feature's norm is 1 to float32 rounding (~1e-7)
# Entries a cache folder keeps (~3 KB each, ~80 MB in 4 KB blocks): VOC, COCO, COCO-Stuff-171
# and ADE names take ~1,500 per prompt set. Past it, the least recently used are removed down
# to PRUNED_FRACTION of it, so a pruning scan comes once per thousands of new names.
MAX_ENTRIES = 20_000
PRUNED_FRACTION = 0.9
NPY_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0,
                      (2, 0): np.lib.format.read_array_header_2_0}


@torch.no_grad()
def encode_tokens(loaded: LoadedModel, tokens: torch.Tensor, truncate: bool = True) -> torch.Tensor:
    """Projected text features (unnormalised) of token rows, read at each end-of-text token.

    With `truncate`, positions after the longest row's end-of-text token are never computed."""
    model = loaded.model
    eot = tokens.argmax(dim=-1)
    length = int(eot.max()) + 1 if truncate else tokens.shape[1]
    x = model.token_embedding(tokens[:, :length])  # the text tower is float32 at any precision
    x = x + model.positional_embedding[:length]
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
        dim = int(loaded.model.text_projection.shape[-1])
        # The text tower computes in float32 at every precision (core/precision.py), so one
        # store serves them all; the suffix names the precision the features were computed in.
        self.store = (FeatureStore(cache_dir, f"{loaded.weights_id}-float32", dim, MAX_ENTRIES)
                      if cache_dir else None)
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
                if self.store is not None:
                    self.store.write(key, name, feature)
        stacked = np.stack([self._memory[(key, n)] for n in names])
        return torch.from_numpy(stacked).to(self.loaded.device)

    @contextmanager
    def transient(self) -> Iterator[None]:
        """Features first read or encoded inside this block are dropped from memory after it
        (the disk keeps them): whoever asked for them holds them as long as it needs, and names
        asked for once (a query's vocabulary) do not grow the memory without bound."""
        kept = set(self._memory)
        try:
            yield
        finally:
            for key in set(self._memory) - kept:
                del self._memory[key]

    def _load_from_disk(self, key: str, name: str) -> bool:
        feature = self.store.read(key, name) if self.store is not None else None
        if feature is None:
            return False
        self._memory[(key, name)] = feature
        return True


class FeatureStore:
    """Text features on disk: one `.npy` file per (weights, template set, name).

    An entry is a single structured record — the name, template key and weights tag it was
    written for, and the float32 feature — saved without pickles. `read` trusts an entry only
    if its header declares exactly that record (checked before any data is read, so a damaged
    or hostile file costs at most one header and one record's bytes), the name, key and tag
    match, and the feature is finite and of unit norm; it never unpickles. `write` makes an
    entry appear whole or not at all, even with several processes writing the same entries.

    The folder (all weights and template sets in it) holds at most `max_entries` entries: a read
    marks an entry used (its mtime), and a write past the bound removes the least recently used.
    Only files named like entries, two levels below `root`, are ever removed."""

    def __init__(self, root: str, weights_tag: str, dim: int, max_entries: int = MAX_ENTRIES) -> None:
        self.root = root
        self.weights_tag = weights_tag
        self.dim = dim
        self.max_entries = max_entries
        self._entries: int | None = None  # counted at the first new entry, then kept up to date

    def path(self, key: str, name: str) -> str:
        """Where the entry of `name` under template key `key` lives."""
        folder = re.sub(r"[^A-Za-z0-9_.-]", "_", self.weights_tag)
        digest = hashlib.sha1(name.encode("utf-8", "surrogatepass")).hexdigest()  # any str
        return os.path.join(self.root, folder, key[:16], digest + ENTRY_SUFFIX)

    def read(self, key: str, name: str) -> np.ndarray | None:
        """The cached feature of `name`, or None when absent or not provably right."""
        path = self.path(key, name)
        try:
            record = _read_record(path, self._record_dtype(key, name))
        except Exception:  # any failure to parse untrusted bytes only means "not cached"
            return None
        if record is None or (str(record["name"]), str(record["templates"]),
                              str(record["weights"])) != (name, key, self.weights_tag):
            return None
        feature = np.array(record["feature"], dtype=np.float32)
        if not self.is_valid(feature):
            return None
        _mark_used(path)
        return feature

    def write(self, key: str, name: str, feature: np.ndarray) -> None:
        """Store a feature (silently not, if the folder is not writable: that costs only speed)."""
        if not self.is_valid(feature):
            return  # never store what `read` would refuse
        record = np.array((name, key, self.weights_tag, feature), self._record_dtype(key, name))
        path = self.path(key, name)
        new = not os.path.lexists(path)
        try:
            _replace_atomically(path, record)
        except OSError:
            return
        if new:
            self._count_new_entry()

    def _count_new_entry(self) -> None:
        """Keep the folder within `max_entries` (other processes' entries are found by the
        count at the first new entry and by every pruning scan)."""
        self._entries = len(_entry_files(self.root)) if self._entries is None else self._entries + 1
        if self._entries > self.max_entries:
            self._entries = _remove_least_recently_used(self.root,
                                                        int(self.max_entries * PRUNED_FRACTION))

    def is_valid(self, feature: np.ndarray) -> bool:
        """A text feature as `encode_names` makes it: (D,) float32, finite, unit norm."""
        return (feature.shape == (self.dim,) and feature.dtype == np.float32
                and bool(np.isfinite(feature).all())
                and abs(float(np.linalg.norm(feature.astype(np.float64))) - 1.0) <= NORM_TOLERANCE)

    def _record_dtype(self, key: str, name: str) -> np.dtype:
        return np.dtype([("name", f"<U{max(len(name), 1)}"), ("templates", f"<U{max(len(key), 1)}"),
                         ("weights", f"<U{max(len(self.weights_tag), 1)}"),
                         ("feature", "<f4", (self.dim,))])


def _entry_files(root: str) -> list[str]:
    """The entries under a cache folder: `root/<weights>/<templates>/<digest>.v2.npy`."""
    return glob.glob(os.path.join(glob.escape(root), "*", "*", "*" + ENTRY_SUFFIX))


def _remove_least_recently_used(root: str, keep: int) -> int:
    """Remove all but the `keep` most recently used entries under `root`; how many remain."""
    used = []
    for path in _entry_files(root):
        try:
            used.append((os.stat(path).st_mtime_ns, path))
        except OSError:  # removed meanwhile by another process
            pass
    used.sort(reverse=True)
    for _, path in used[keep:]:
        try:
            os.remove(path)
        except OSError:
            pass
    return min(len(used), keep)


def _mark_used(path: str) -> None:
    """Set an entry's mtime to now, so pruning keeps it longer (not at all in a read-only
    folder, which is never pruned either)."""
    try:
        os.utime(path, follow_symlinks=False)
    except OSError:
        pass


def _read_record(path: str, expected: np.dtype) -> np.void | None:
    """The one record of a `.npy` file whose header declares exactly `expected` (a 0-d array
    of that dtype and nothing after it), else None."""
    f = _open_regular_file(path)
    if f is None:
        return None
    with f:
        reader = NPY_HEADER_READERS.get(np.lib.format.read_magic(f))
        if reader is None:
            return None
        shape, _, dtype = reader(f)
        if shape != () or dtype != expected:
            return None
        data = f.read(expected.itemsize + 1)
    return np.frombuffer(data, expected)[0] if len(data) == expected.itemsize else None


def _open_regular_file(path: str) -> BinaryIO | None:
    """`path` opened for reading if it is a regular file (not a FIFO or device, which could
    block or never end), else None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not block the open
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return os.fdopen(fd, "rb")


def _replace_atomically(path: str, record: np.ndarray) -> None:
    """Write `path` so that readers in any process see the previous file or the whole new one.

    The record goes to a temporary file of its own (a random name, created exclusively, so
    concurrent writers never share one), is flushed to disk, then renamed over `path`; rename
    is atomic on POSIX file systems. A crash leaves at most a stray `.tmp` file, never a
    partial entry."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    temporary = f"{path}.{os.getpid()}-{secrets.token_hex(8)}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, record, allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def _templates_key(templates: tuple[str, ...]) -> str:
    """The identity of a template set (its folder name is the first 16 digits; entries hold
    all 40, which a read checks)."""
    return hashlib.sha1("\n".join(templates).encode("utf-8")).hexdigest()
