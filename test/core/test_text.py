"""Text features: truncated encoding equals the full context, the cache encodes only once, and
nothing in a cache folder (damage, pickles, races between writers) can change a feature."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from tagclip_ros.core import TextFeatureCache
from tagclip_ros.core.text import FeatureStore, encode_names, encode_tokens, tokenize

from ..conftest import REPO

PROMPTS = ["a photo of a cat.", "a", "there is the traffic light in the scene.",
           "a photo of a person with clothes,people,human in a video game."]


def test_truncated_encoding_equals_full_context(loaded):
    tokens = tokenize(loaded, PROMPTS)
    full = loaded.model.encode_text(tokens)  # open_clip's own 77-token forward
    truncated = encode_tokens(loaded, tokens, truncate=True)
    torch.testing.assert_close(truncated, full, rtol=0, atol=1e-5)
    assert int(tokens.argmax(dim=-1).max()) + 1 < tokens.shape[1]  # truly shorter


def test_name_features_are_unit_vectors(loaded):
    features = encode_names(loaded, ["cat", "dog"], ("a photo of a {}.", "a {}."))
    torch.testing.assert_close(features.norm(dim=-1), torch.ones(2))


def test_cache_encodes_only_new_names(loaded, tmp_path):
    cache = TextFeatureCache(loaded, str(tmp_path))
    first = cache.features(["cat", "dog"], "single")
    assert cache.encoded_names == 2
    again = cache.features(["dog", "cat", "robot"], "single")
    assert cache.encoded_names == 3
    torch.testing.assert_close(again[:2], first.flip(0), rtol=0, atol=0)


def test_disk_cache_survives_a_restart_and_is_keyed_by_templates(loaded, tmp_path):
    before = TextFeatureCache(loaded, str(tmp_path)).features(["cat"], "single")
    restarted = TextFeatureCache(loaded, str(tmp_path))
    torch.testing.assert_close(restarted.features(["cat"], "single"), before, rtol=0, atol=0)
    assert restarted.encoded_names == 0
    other = restarted.features(["cat"], ("a drawing of a {}.",))
    assert restarted.encoded_names == 1 and not torch.equal(other, before)


def test_damaged_cache_entry_is_encoded_again(loaded, tmp_path):
    cache = TextFeatureCache(loaded, str(tmp_path))
    expected = cache.features(["cat"], "single")
    for path in tmp_path.rglob("*.npy"):
        path.write_bytes(b"not numpy")
    fresh = TextFeatureCache(loaded, str(tmp_path))
    torch.testing.assert_close(fresh.features(["cat"], "single"), expected, rtol=0, atol=0)
    assert fresh.encoded_names == 1


# ---- damaged entries ---------------------------------------------------------------------------
def entry_of(folder, name: str):
    """The cache file holding `name`'s feature."""
    for path in folder.rglob("*.npy"):
        if str(np.load(path, allow_pickle=False)["name"]) == name:
            return path
    raise AssertionError(f"no cache entry for {name!r} in {folder}")


def with_field(record: np.ndarray, **values) -> np.ndarray:
    """A copy of a cache record with some fields replaced (same dtype)."""
    copy = record.copy()
    for field, value in values.items():
        copy[field] = value
    return copy


def reshaped(record: np.ndarray, feature: np.ndarray) -> np.ndarray:
    """The record with a feature of another shape or dtype (so another record dtype)."""
    fields = [(n, record.dtype[n]) for n in record.dtype.names if n != "feature"]
    dtype = np.dtype(fields + [("feature", feature.dtype, feature.shape)])
    return np.array(tuple(record[n] for n in record.dtype.names[:-1]) + (feature,), dtype)


class Mkdir:
    """Unpickling this creates a folder: proof of whether a pickle was ever loaded."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return os.mkdir, (self.path,)


def damage(kind: str, cat, dog, tmp_path) -> None:
    """Damage `cat`'s entry (a path) the way `kind` names; `dog` is another name's entry."""
    good = cat.read_bytes()
    record = np.load(cat, allow_pickle=False)
    other = np.load(dog, allow_pickle=False)["feature"]

    def save(array: np.ndarray, pickles: bool = False) -> None:
        np.save(cat, array, allow_pickle=pickles)

    if kind == "empty":
        cat.write_bytes(b"")
    elif kind == "truncated":
        cat.write_bytes(good[:len(good) // 2])
    elif kind == "one byte short":
        cat.write_bytes(good[:-1])
    elif kind == "trailing bytes":
        cat.write_bytes(good + b"\0")
    elif kind == "garbage":
        cat.write_bytes(b"not numpy at all")
    elif kind == "old format":  # what earlier releases wrote: a bare array (here a wrong one)
        save(other)
    elif kind == "wrong shape":
        save(reshaped(record, np.concatenate([other, [0.0]]).astype(np.float32)))
    elif kind == "wrong dtype":
        save(reshaped(record, other.astype(np.float64)))
    elif kind == "nan":
        save(with_field(record, feature=np.full_like(other, np.nan)))
    elif kind == "not unit norm":
        save(with_field(record, feature=2 * record["feature"]))
    elif kind == "wrong name":  # dog's entry under cat's file name
        cat.write_bytes(dog.read_bytes())
    elif kind == "wrong templates":
        save(with_field(record, templates="0" * 40, feature=other))
    elif kind == "wrong weights":
        weights = str(record["weights"])  # the same length: the field is fixed-width
        save(with_field(record, weights=weights[:-1] + ("y" if weights.endswith("x") else "x"),
                        feature=other))
    elif kind == "fifo":  # reading it must neither block nor fail
        cat.unlink()
        os.mkfifo(cat)
    elif kind == "pickle":
        save(np.array([Mkdir(str(tmp_path / "pickle-ran"))], dtype=object), pickles=True)
    else:
        raise ValueError(kind)


DAMAGE = ("empty", "truncated", "one byte short", "trailing bytes", "garbage", "old format",
          "wrong shape", "wrong dtype", "nan", "not unit norm", "wrong name", "wrong templates",
          "wrong weights", "fifo", "pickle")


@pytest.mark.parametrize("kind", DAMAGE)
def test_a_damaged_entry_is_encoded_again_and_repaired(loaded, tmp_path, kind):
    folder = tmp_path / "cache"
    expected = TextFeatureCache(loaded, str(folder)).features(["cat", "dog"], "single")
    damage(kind, entry_of(folder, "cat"), entry_of(folder, "dog"), tmp_path)
    fresh = TextFeatureCache(loaded, str(folder))
    again = fresh.features(["cat", "dog"], "single")
    # cat alone, not batched with dog: the same feature to float32 rounding
    torch.testing.assert_close(again, expected, rtol=0, atol=1e-6)
    assert fresh.encoded_names == 1  # cat only: dog's entry was fine
    assert not (tmp_path / "pickle-ran").exists()
    repaired = TextFeatureCache(loaded, str(folder))
    torch.testing.assert_close(repaired.features(["cat", "dog"], "single"), again, rtol=0, atol=0)
    assert repaired.encoded_names == 0


def test_the_pickle_test_would_notice_an_unpickling(tmp_path):
    """The sentinel works: loading that file with pickles allowed does create the folder."""
    path = tmp_path / "entry.npy"
    np.save(path, np.array([Mkdir(str(tmp_path / "pickle-ran"))], dtype=object), allow_pickle=True)
    np.load(path, allow_pickle=True)
    assert (tmp_path / "pickle-ran").is_dir()


def test_invalid_features_are_never_written(tmp_path):
    store = FeatureStore(str(tmp_path), "weights-float32", 4)
    for bad in (np.full(4, np.nan, np.float32), np.ones(4, np.float32), np.zeros(3, np.float32),
                np.full(4, 0.5, np.float64)):
        store.write("k" * 40, "cat", bad)
    assert not list(tmp_path.rglob("*.npy"))
    store.write("k" * 40, "cat", np.full(4, 0.5, np.float32))
    np.testing.assert_array_equal(store.read("k" * 40, "cat"), np.full(4, 0.5, np.float32))


def test_an_unwritable_cache_folder_costs_only_speed(loaded, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    cache = TextFeatureCache(loaded, str(blocker))
    expected = TextFeatureCache(loaded, None).features(["cat"], "single")
    torch.testing.assert_close(cache.features(["cat"], "single"), expected, rtol=0, atol=0)


# ---- the folder's bound --------------------------------------------------------------------------
def unit(seed: int, dim: int = 4) -> np.ndarray:
    values = np.random.default_rng(seed).standard_normal(dim)
    return (values / np.linalg.norm(values)).astype(np.float32)


def test_the_cache_folder_keeps_the_most_recently_used_entries_within_its_bound(tmp_path):
    """Past `max_entries`, a write removes the least recently used entries (a read counts as a
    use) down to PRUNED_FRACTION of the bound; other weights' entries in the folder count too,
    and nothing but entries is ever removed."""
    other_weights = FeatureStore(str(tmp_path), "other-float32", 4, max_entries=10)
    store = FeatureStore(str(tmp_path), "weights-float32", 4, max_entries=10)
    (tmp_path / "notes.npy").write_text("not an entry")
    other_weights.write("k" * 40, "old", unit(0))
    names = [f"name{i}" for i in range(9)]
    for i, name in enumerate(names):
        store.write("k" * 40, name, unit(i + 1))
    for age, path in enumerate([other_weights.path("k" * 40, "old")]
                               + [store.path("k" * 40, n) for n in names]):
        os.utime(path, ns=(10**9 * (age + 1),) * 2)  # "old" is the oldest, then name0, name1, ...
    np.testing.assert_array_equal(store.read("k" * 40, "name0"), unit(1))  # used: now the newest
    assert len(list(tmp_path.rglob("*.v2.npy"))) == 10  # at the bound, nothing removed yet

    store.write("k" * 40, "new", unit(99))
    kept = {p.name for p in tmp_path.rglob("*.v2.npy")}
    expected = {os.path.basename(store.path("k" * 40, n)) for n in ["name0", "new"] + names[-7:]}
    assert kept == expected  # 9 = 0.9 × 10: the two least recently used, "old" and name1, went
    assert (tmp_path / "notes.npy").exists()
    assert store.read("k" * 40, "name1") is None and other_weights.read("k" * 40, "old") is None
    np.testing.assert_array_equal(store.read("k" * 40, "new"), unit(99))


def test_rewriting_an_entry_does_not_count_as_a_new_one(tmp_path):
    store = FeatureStore(str(tmp_path), "weights-float32", 4, max_entries=2)
    for _ in range(5):
        for seed, name in enumerate(["cat", "dog"]):
            store.write("k" * 40, name, unit(seed))
    assert store.read("k" * 40, "cat") is not None and store.read("k" * 40, "dog") is not None


# ---- concurrent writers --------------------------------------------------------------------------
NAMES = tuple(f"name{i}" for i in range(6))
KEY, TAG, DIM = "f" * 40, "sha256:0123456789abcdef-float32", 512
WRITER = """
import os, sys, time
from tagclip_ros.core.text import FeatureStore
from test.core.test_text import DIM, KEY, NAMES, TAG, features
root, seed, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
store, mine = FeatureStore(root, TAG, DIM), features(seed)
open(os.path.join(root, f"ready-{seed}"), "w").close()
while not os.path.exists(os.path.join(root, "go")):  # start both writers together
    time.sleep(0.005)
for _ in range(rounds):
    for name, feature in zip(NAMES, mine):
        store.write(KEY, name, feature)
"""


def features(seed: int) -> np.ndarray:
    """Writer `seed`'s unit features, one per name in NAMES (the same in every process)."""
    values = np.random.default_rng(seed).standard_normal((len(NAMES), DIM))
    return (values / np.linalg.norm(values, axis=1, keepdims=True)).astype(np.float32)


def complete_files(tmp_path, seeds) -> dict[str, set[bytes]]:
    """For each name, the bytes of every whole entry a writer can produce."""
    files: dict[str, set[bytes]] = {name: set() for name in NAMES}
    for seed in seeds:
        store = FeatureStore(str(tmp_path / f"reference-{seed}"), TAG, DIM)
        for name, feature in zip(NAMES, features(seed)):
            store.write(KEY, name, feature)
            with open(store.path(KEY, name), "rb") as f:
                files[name].add(f.read())
    return files


def test_concurrent_writers_never_expose_a_partial_entry(tmp_path):
    """Two processes rewrite the same entries as fast as they can while this one reads them:
    every file seen at an entry's path is a whole entry, and every read is a writer's feature."""
    root, seeds = tmp_path / "shared", (1, 2)
    root.mkdir()
    whole, valid = complete_files(tmp_path, seeds), [features(s) for s in seeds]
    store = FeatureStore(str(root), TAG, DIM)
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(root), str(s), "400"], cwd=REPO,
                                stderr=subprocess.PIPE, text=True) for s in seeds]
    try:
        wait_for(lambda: all((root / f"ready-{s}").exists() for s in seeds)
                 or any(w.poll() is not None for w in writers), 300, "writers ready")
        (root / "go").touch()
        reads, deadline = 0, time.monotonic() + 300
        while any(w.poll() is None for w in writers) and time.monotonic() < deadline:
            for i, name in enumerate(NAMES):
                path = store.path(KEY, name)
                try:
                    with open(path, "rb") as f:
                        assert f.read() in whole[name], "a partial or foreign entry was visible"
                except FileNotFoundError:
                    continue
                feature = store.read(KEY, name)
                assert feature is not None
                assert any(np.array_equal(feature, v[i]) for v in valid)
                reads += 1
    finally:
        for w in writers:
            if w.poll() is None:
                w.kill()
    assert [w.wait() for w in writers] == [0, 0], [w.stderr.read() for w in writers]
    assert reads > 0
    assert not list(root.rglob("*.tmp"))  # every temporary file was renamed into place


def wait_for(condition, timeout: float, what: str) -> None:
    """Poll `condition` until true; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out: {what}"
        time.sleep(0.01)
