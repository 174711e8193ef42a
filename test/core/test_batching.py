"""Several frames at once (several cameras, one model): `TagClip.classify_batch` and
`Perception.run_batch` give every frame what it gets alone (`classify`, `run`), equal-sized
frames sharing the coarse pass and all frames one CWR pass; no frame sees another's attention;
and `batching_pays` says where that is worth it."""
from __future__ import annotations

import dataclasses
import os
import types

import numpy as np
import pytest
import torch

from tagclip_ros.core import TagClip, load_vocabulary, read_image
from tagclip_ros.core.pipeline import Perception, batching_pays
from tagclip_ros.core.tagclip import COARSE_BATCH_TOKENS, coarse_batches

from ..conftest import IMAGES, reference_scores

SCORE_ATOL = 1e-4       # a batched frame's scores against its own run's (float32)
MASK_AGREEMENT = 0.999  # ... and its label mask (fraction of equal pixels)
METHODS = ["clipes", "dmar"]


def fixture(name: str) -> np.ndarray:
    return read_image(os.path.join(IMAGES, name))


def same_size_frames() -> dict[str, np.ndarray]:
    """Three frames the model sees at one size (304×464): chelsea (300×451), a 298×450 cut of
    coffee (prepare_image rounds both up to the same patch grid) and chelsea mirrored."""
    chelsea = fixture("chelsea.jpg")
    return {"chelsea.jpg": chelsea, "coffee cut": np.ascontiguousarray(fixture("coffee.jpg")[40:338, 70:520]),
            "chelsea mirrored": np.ascontiguousarray(chelsea[:, ::-1])}


def mixed_size_frames(same: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Three frames of two model-input sizes, the odd one first: rocket (640×432 to the model),
    and `same`'s chelsea and chelsea mirrored (464×304)."""
    return {"rocket.jpg": fixture("rocket.jpg"), "chelsea.jpg": same["chelsea.jpg"],
            "chelsea mirrored": same["chelsea mirrored"]}


@pytest.fixture(scope="module")
def same_size() -> dict[str, np.ndarray]:
    return same_size_frames()


@pytest.fixture(scope="module")
def mixed_sizes(same_size) -> dict[str, np.ndarray]:
    return mixed_size_frames(same_size)


@pytest.fixture(scope="module")
def perception(loaded, text_cache) -> Perception:
    return Perception(loaded, load_vocabulary("voc"), text_cache=text_cache)


def assert_same_frame(batched, alone, name: str) -> None:
    """A frame's batched Perceived against its own run's: the same tags in the same order,
    scores to SCORE_ATOL, the label mask on ≥ MASK_AGREEMENT of the pixels."""
    assert [t.index for t in batched.tags.tags] == [t.index for t in alone.tags.tags], name
    np.testing.assert_allclose(batched.tags.scores, alone.tags.scores, rtol=0, atol=SCORE_ATOL, err_msg=name)
    np.testing.assert_allclose(batched.tags.local_scores, alone.tags.local_scores, rtol=0, atol=SCORE_ATOL,
                               err_msg=name)
    assert batched.tags.grid == alone.tags.grid, name
    # (1, tokens, width): each frame its own last-block input, as alone
    assert batched.tags.last_block_input.shape == alone.tags.last_block_input.shape, name
    if alone.segmentation is None:
        assert batched.segmentation is None
        return
    assert batched.segmentation.class_indices == alone.segmentation.class_indices, name
    assert batched.segmentation.mask.shape == alone.segmentation.mask.shape, name
    assert np.mean(batched.segmentation.mask == alone.segmentation.mask) >= MASK_AGREEMENT, name


def assert_official_scores(frames: dict[str, np.ndarray], results: list) -> None:
    """The frames the reference files score (the unaltered fixtures) against the official scores."""
    voc = reference_scores("voc")
    checked = 0
    for name, result in zip(frames, results):
        if name in voc["images"]:
            expected = voc["scores"][voc["images"].index(name)]
            np.testing.assert_allclose(result.tags.scores, expected, rtol=0, atol=1e-4, err_msg=name)
            checked += 1
    assert checked >= 1


@pytest.mark.parametrize("method", METHODS)
def test_equal_sized_frames_batched_are_each_what_they_are_alone(perception, same_size, method):
    assert len(coarse_batches([(19, 29)] * 3)) == 1  # one coarse pass for the three
    batched = perception.run_batch(list(same_size.values()), method)
    assert len(batched) == len(same_size)
    for (name, rgb), result in zip(same_size.items(), batched):
        assert_same_frame(result, perception.run(rgb, method), name)
    assert_official_scores(same_size, batched)


@pytest.mark.parametrize("method", METHODS)
def test_frames_of_two_sizes_are_batched_by_size(perception, mixed_sizes, method):
    batched = perception.run_batch(list(mixed_sizes.values()), method)
    assert [r.tags.grid for r in batched] == [(27, 40), (19, 29), (19, 29)]  # in the order given
    for (name, rgb), result in zip(mixed_sizes.items(), batched):
        assert_same_frame(result, perception.run(rgb, method), name)
    assert_official_scores(mixed_sizes, batched)


def test_no_frame_sees_another_frames_attention(loaded, text_cache, same_size):
    """A frame's result and what its hook sees are the same beside a copy of itself, beside
    another frame, and alone: the votes, the affinity and the hooks get each frame's own slice."""
    tagger = TagClip(loaded, load_vocabulary("voc"), text_cache=text_cache)
    a, b = same_size["chelsea.jpg"], same_size["coffee cut"]

    def recorded(rgbs: list[np.ndarray]) -> tuple[list, list[list[torch.Tensor]]]:
        seen: list[list[torch.Tensor]] = [[] for _ in rgbs]
        hooks = [lambda index, attention, maps=maps: maps.append(attention.clone()) for maps in seen]
        return tagger.classify_batch(rgbs, hooks), seen

    (alone_a,), (seen_a,) = recorded([a])
    (alone_b,), (seen_b,) = recorded([b])
    for pair in ([a, a], [a, b], [b, a]):
        results, seen = recorded(pair)
        for rgb, result, maps in zip(pair, results, seen):
            alone, alone_maps = (alone_a, seen_a) if rgb is a else (alone_b, seen_b)
            np.testing.assert_allclose(result.scores, alone.scores, rtol=0, atol=SCORE_ATOL)
            assert len(maps) == len(alone_maps) == len(tagger.vision.blocks)
            for own, expected in zip(maps, alone_maps):
                assert own.shape == expected.shape and own.shape[0] == 1
                torch.testing.assert_close(own, expected, rtol=0, atol=1e-6)
    assert not np.allclose(alone_a.scores, alone_b.scores, rtol=0, atol=SCORE_ATOL)  # the test can tell


def test_classify_is_a_batch_of_one(voc_tagger, same_size):
    rgb = same_size["chelsea.jpg"]
    single, (batched,) = voc_tagger.classify(rgb), voc_tagger.classify_batch([rgb])
    assert np.array_equal(single.scores, batched.scores) and single.tags == batched.tags
    assert torch.equal(single.last_block_input, batched.last_block_input)


def test_selects_apply_per_frame_and_time_is_shared(perception, same_size):
    frames = list(same_size.values())
    first = perception.run(frames[0], "dmar").tags.tags[:1]
    selected = perception.run_batch(frames, "dmar", selects=[
        lambda r: dataclasses.replace(r, tags=first), None, lambda r: dataclasses.replace(r, tags=[])])
    assert selected[0].tags.tags == first and selected[0].segmentation.class_indices == [first[0].index]
    assert_same_frame(selected[1], perception.run(frames[1], "dmar"), "unselected")
    assert selected[2].tags.tags == [] and not selected[2].segmentation.mask.any()
    assert len({r.seconds for r in selected}) == 1 and selected[0].seconds > 0  # the batch's, shared
    assert perception.run_batch([], "clipes") == []


def test_unusable_batches_are_refused(perception, voc_tagger, same_size):
    frames = list(same_size.values())
    with pytest.raises(ValueError, match="2 hooks for 3 images"):
        voc_tagger.classify_batch(frames, [None, None])
    with pytest.raises(ValueError, match="1 selects for 3 images"):
        perception.run_batch(frames, "dmar", selects=[None])
    with pytest.raises(ValueError, match="segmentation method 'grabcut'"):
        perception.run_batch(frames, "grabcut")


def test_coarse_batches_group_equal_grids_within_the_memory_bound():
    grids = [(30, 40), (19, 29), (30, 40), (19, 29), (30, 40)]
    assert coarse_batches(grids) == [[0, 2, 4], [1, 3]]  # by grid, in order of first appearance
    assert coarse_batches([(45, 80)] * 3) == [[0], [1], [2]]  # a 720×1280 frame: one at a time
    assert coarse_batches([(30, 40)] * 10) == [list(range(8)), [8, 9]]  # 480×640: 8 per batch
    assert coarse_batches([(40, 40)] * 6) == [list(range(5)), [5]]  # 640×640: 5
    assert COARSE_BATCH_TOKENS == 45 * 80 + 1
    assert coarse_batches([]) == []


def test_batching_pays_on_cuda_only(loaded):
    assert batching_pays(loaded) is False  # the CPU: measured no faster (bench/bench_batching.py)
    assert batching_pays(types.SimpleNamespace(device=torch.device("cuda", 0))) is True
