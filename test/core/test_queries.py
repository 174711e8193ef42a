"""Queries (the node's ~/tag_image, ROS-free): request names read as the `vocabulary` parameter
reads them, a Perception per request vocabulary that shares the node's model and text caches and
scores as one built on its own, kept for the last few vocabularies only."""
from __future__ import annotations

import os

import numpy as np
import pytest

from tagclip_ros.core import TextFeatureCache, read_image
from tagclip_ros.core.dataset_profiles import CUSTOM, PROFILES
from tagclip_ros.core.pipeline import Perception
from tagclip_ros.core.queries import QueryPerceptions, query_profile
from tagclip_ros.core.vocab import (COCO_BACKGROUND, MAX_CLASSES, VOC_BACKGROUND, VOC_CLASSES,
                                    Vocabulary)

from ..conftest import IMAGES

NODE = (list(VOC_CLASSES), list(VOC_BACKGROUND))  # the node's vocabulary and background parameters


def chelsea() -> np.ndarray:
    return read_image(os.path.join(IMAGES, "chelsea.jpg"))


@pytest.fixture(scope="module")
def base(loaded, text_cache) -> Perception:
    """The node's Perception: VOC."""
    return Perception.for_profile(loaded, PROFILES["voc"], text_cache)


def test_a_profile_name_is_that_profile_with_its_background_and_settings():
    profile = query_profile(["coco"], [], *NODE)
    assert profile is PROFILES["coco"] and profile.vocabulary.background == COCO_BACKGROUND
    assert query_profile(["COCO"], [], *NODE) is PROFILES["coco"]


def test_empty_names_are_the_nodes_and_a_given_background_replaces_the_vocabularys():
    assert query_profile([], [], *NODE) is None  # the node's own Perception
    mine = query_profile([], ["sky", "road"], *NODE)
    assert mine.vocabulary.classes == VOC_CLASSES and mine.vocabulary.background == ("sky", "road")
    coco = query_profile(["coco"], ["sky"], *NODE)
    assert coco.vocabulary.classes == PROFILES["coco"].vocabulary.classes
    assert coco.vocabulary.background == ("sky",) and coco.clipes == PROFILES["coco"].clipes


def test_a_list_of_classes_is_scored_beside_the_nodes_background():
    profile = query_profile(["fire extinguisher", "door"], [], *NODE)
    assert profile.name == CUSTOM and profile.vocabulary.background == VOC_BACKGROUND
    single = query_profile(["=fire extinguisher"], [], *NODE)
    assert single.vocabulary.classes == ("fire extinguisher",)


@pytest.mark.parametrize("vocabulary, background, reason", [
    (["extinguisher"], [], "vocabulary 'extinguisher' is not a dataset profile (voc, coco, cocostuff); "
                           "to tag the single class 'extinguisher', write '=extinguisher'"),
    (["door", "door"], [], "vocabulary contains 'door' more than once"),
    (["door", " "], [], "vocabulary contains a blank name"),
    ([" "], [], "vocabulary contains a blank name"),
    (["door", "wall"], ["wall", "sky"], "names appear both as classes and as background: ['wall']"),
    (["door", "keyboard"], [], "names appear both as classes and as background: ['keyboard']"),
    (["door", "cat"], ["sky", "sky"], "background contains 'sky' more than once"),
    ([f"c{i}" for i in range(MAX_CLASSES + 1)], [],
     f"vocabulary has {MAX_CLASSES + 1} names; at most {MAX_CLASSES} are allowed"),
])
def test_names_that_cannot_be_used_are_one_sentence(vocabulary, background, reason):
    with pytest.raises(ValueError) as error:
        query_profile(vocabulary, background, *NODE)
    assert str(error.value) == reason


def test_a_query_scores_and_segments_as_a_perception_of_its_own_and_shares_the_model(
        base, loaded, text_cache):
    queries = QueryPerceptions(base)
    rgb = chelsea()
    coco = queries.perception(PROFILES["coco"])
    answer = coco.run(rgb, "clipes")
    alone = Perception.for_profile(loaded, PROFILES["coco"], text_cache).run(rgb, "clipes")
    np.testing.assert_allclose(answer.tags.scores, alone.tags.scores, rtol=0, atol=1e-6)
    assert [t.label for t in answer.tags.tags] == [t.label for t in alone.tags.tags]
    np.testing.assert_array_equal(answer.segmentation.mask, alone.segmentation.mask)
    assert coco.tagger.vision is base.tagger.vision and coco.segmenter.vision is base.segmenter.vision
    assert coco.segmenter.loaded is base.segmenter.loaded  # no second fp16-rounded copy
    assert base.vocabulary is PROFILES["voc"].vocabulary  # the node's own is untouched
    assert queries.perception(None) is base
    assert queries.perception(PROFILES["coco"]) is coco  # asked again: nothing built
    assert queries.perception(PROFILES["coco"], {"tag_threshold": 0.3}) is not coco  # other settings


def test_only_the_last_vocabularies_are_kept_and_the_shared_cache_does_not_keep_theirs(loaded):
    memory_only = TextFeatureCache(loaded)  # no disk: a name not in memory is encoded again
    base = Perception(loaded, Vocabulary(("cat", "dog"), ("sky",)), text_cache=memory_only)
    caches = {id(c): c for c in (base.tagger.text_cache, base.segmenter.text_cache)}.values()

    def encoded() -> int:  # names run through the text encoder, TagCLIP's and CLIP-ES's prompts
        return sum(cache.encoded_names for cache in caches)
    queries = QueryPerceptions(base, size=2)
    profiles = [query_profile([f"gadget {i}", f"widget {i}"], ["sky"], *NODE) for i in range(3)]
    before = encoded()
    first = queries.perception(profiles[0])
    assert encoded() == before + 4  # its two names, in both prompt sets
    for profile in profiles[1:]:
        queries.perception(profile)
    assert len(queries) == 2
    before = encoded()
    assert queries.perception(profiles[2]) is not None and encoded() == before
    again = queries.perception(profiles[0])  # dropped, and its features with it
    assert again is not first and encoded() == before + 4
    base.set_vocabulary(base.vocabulary)  # the node's own names stayed in memory
    assert encoded() == before + 4
