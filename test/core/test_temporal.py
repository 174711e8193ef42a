"""Stable tags on constructed score sequences: flicker suppressed, a real change followed within
min_frames, hysteresis, resets; and the exact property that with no smoothing, no run and no
hysteresis the stable tags are TagCLIP's own."""
from __future__ import annotations

from dataclasses import fields

import numpy as np
import pytest
import torch

from tagclip_ros.core.tags import TagResult, relative_threshold_tags
from tagclip_ros.core.temporal import SETTING_HELP, StableTags, TemporalSettings
from tagclip_ros.core.vocab import Vocabulary

VOCAB = Vocabulary(("cat", "dog", "car", "tree"))
FACTOR = 0.5  # TagCLIP's relative threshold: min + 0.5 (max - min)


def frame(scores, vocabulary: Vocabulary = VOCAB) -> TagResult:
    scores = np.asarray(scores, np.float32)
    return TagResult(vocabulary, scores, scores.copy(),
                     relative_threshold_tags(scores, vocabulary.classes, FACTOR),
                     torch.zeros(0))


def labels(result: TagResult) -> list[str]:
    return [t.label for t in result.tags]


def stream(stable: StableTags, sequence, period: float = 0.1) -> list[list[str]]:
    return [labels(stable.update(frame(s), FACTOR, i * period)) for i, s in enumerate(sequence)]


# cat always high; dog flickers above the threshold every other frame
STEADY_CAT = [0.9, 0.1, 0.05, 0.0]
CAT_AND_DOG = [0.9, 0.8, 0.05, 0.0]


def test_a_flickering_class_never_becomes_a_tag():
    stable = StableTags(TemporalSettings(alpha=0.5, min_frames=3, release=0.8))
    flicker = [CAT_AND_DOG if i % 2 else STEADY_CAT for i in range(12)]
    raw = [labels(frame(s)) for s in flicker]
    assert ["cat", "dog"] in raw  # TagCLIP alone: dog comes and goes
    assert stream(stable, flicker)[2:] == [["cat"]] * 10


def test_a_real_change_is_followed_within_min_frames():
    stable = StableTags(TemporalSettings(alpha=0.5, min_frames=3, release=0.8))
    sequence = [STEADY_CAT] * 5 + [CAT_AND_DOG] * 6
    tags = stream(stable, sequence)
    assert tags[:3] == [[], [], ["cat"]]  # a tag needs min_frames frames, the first included
    assert tags[5:7] == [["cat"], ["cat"]]
    assert tags[7:] == [["cat", "dog"]] * 4  # the third frame with dog above: within min_frames


def test_a_tag_is_released_only_below_release_times_the_threshold():
    settings = TemporalSettings(alpha=1.0, min_frames=1, release=0.5)
    stable = StableTags(settings)
    # threshold = min + 0.5 (max - min) = 0.5 with cat 1.0 and tree 0.0
    sequence = [[1.0, 0.6, 0.0, 0.0],    # dog above 0.5: a tag
                [1.0, 0.3, 0.0, 0.0],    # 0.3 ≥ 0.5 × 0.5: kept
                [1.0, 0.24, 0.0, 0.0]]   # 0.24 < 0.25: released
    assert stream(stable, sequence) == [["cat", "dog"], ["cat", "dog"], ["cat"]]
    plain = StableTags(TemporalSettings(alpha=1.0, min_frames=1, release=1.0))
    assert stream(plain, sequence) == [["cat", "dog"], ["cat"], ["cat"]]


def test_scores_are_smoothed_exponentially_and_tags_carry_them():
    stable = StableTags(TemporalSettings(alpha=0.25, min_frames=1))
    first = stable.update(frame([0.8, 0.0, 0.0, 0.0]), FACTOR, 0.0)
    second = stable.update(frame([0.4, 0.0, 0.0, 0.4]), FACTOR, 0.1)
    np.testing.assert_allclose(first.scores, [0.8, 0, 0, 0])
    np.testing.assert_allclose(second.scores, [0.7, 0, 0, 0.1], atol=1e-7)
    assert [(t.label, round(t.score, 6)) for t in second.tags] == [("cat", 0.7)]


@pytest.mark.parametrize("change", ["vocabulary", "gap", "backwards"])
def test_a_new_vocabulary_a_long_gap_or_an_earlier_stamp_starts_over(change):
    stable = StableTags(TemporalSettings(alpha=0.5, min_frames=2, reset_after=1.0))
    for i in range(4):
        stable.update(frame(STEADY_CAT), FACTOR, i * 0.1)
    assert labels(stable.update(frame(STEADY_CAT), FACTOR, 0.4)) == ["cat"]
    vocabulary, stamp = VOCAB, 0.5
    if change == "vocabulary":
        vocabulary = Vocabulary(("cat", "dog", "car", "bus"))
    elif change == "gap":
        stamp = 1.41
    else:
        stamp = 0.2
    restarted = stable.update(frame(STEADY_CAT, vocabulary), FACTOR, stamp)
    assert labels(restarted) == []  # one frame of the new stream: not yet min_frames
    np.testing.assert_allclose(restarted.scores, STEADY_CAT)  # nothing smoothed in


def test_without_smoothing_run_or_hysteresis_the_tags_are_tagclips():
    rng = np.random.default_rng(0)
    stable = StableTags(TemporalSettings(alpha=1.0, min_frames=1, release=1.0))
    for i in range(200):
        result = frame(rng.random(4))
        assert labels(stable.update(result, FACTOR, i * 0.1)) == labels(result)


@pytest.mark.parametrize("field, value", [("alpha", 0.0), ("alpha", 1.5), ("min_frames", 0),
                                          ("release", 1.2), ("reset_after", 0.0)])
def test_settings_out_of_range_are_refused_with_their_name(field, value):
    with pytest.raises(ValueError, match=f"temporal.{field}"):
        TemporalSettings(**{field: value})


def test_every_setting_has_its_help():
    """The node's temporal.* parameters and `tagclip bag`'s --temporal-* options come from it."""
    assert list(SETTING_HELP) == [f.name for f in fields(TemporalSettings)]
