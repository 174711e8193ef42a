"""Text features: truncated encoding equals the full context, and the cache encodes only once."""
from __future__ import annotations

import torch

from tagclip_ros.core import TextFeatureCache
from tagclip_ros.core.text import encode_names, encode_tokens, tokenize

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
