"""TagCLIP against the official implementation's scores, and exact properties of its steps."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from tagclip_ros.core import TagClip, TagClipSettings, load_vocabulary, read_image
from tagclip_ros.core.transform import prepare_image
from tagclip_ros.core.boxes import box_mask, contour_boxes
from tagclip_ros.core.tagclip import dmar, min_max, region_box
from tagclip_ros.core.tags import relative_threshold_tags

from ..conftest import IMAGES, REFERENCE, reference_scores


@pytest.mark.parametrize("dataset", ["voc", "coco"])
def test_scores_match_official_implementation(dataset, loaded, text_cache):
    reference = reference_scores(dataset)
    tagger = TagClip(loaded, load_vocabulary(dataset), text_cache=text_cache)
    assert list(tagger.vocabulary.classes) == reference["classes"]
    for image, expected in zip(reference["images"], reference["scores"]):
        result = tagger.classify(read_image(os.path.join(IMAGES, image)))
        np.testing.assert_allclose(result.scores, expected, rtol=0, atol=1e-4, err_msg=image)


def test_tags_are_the_reference_labels(voc_tagger):
    with open(os.path.join(REFERENCE, "clipes", "labels_voc.json"), encoding="utf-8") as f:
        expected = json.load(f)
    for image, class_ids in expected.items():
        tags = voc_tagger.classify(read_image(os.path.join(IMAGES, image))).tags
        assert sorted(t.index for t in tags) == class_ids


def test_batched_and_sequential_cwr_agree(voc_tagger):
    rgb = read_image(os.path.join(IMAGES, "rocket.jpg"))
    result = voc_tagger.classify(rgb)
    pixels = prepare_image(rgb, 16)
    local = result.refined[:, :20].max(dim=0).values
    crops = voc_tagger.candidate_crops(result.refined, local, result.grid)
    assert len(crops) > 1
    text = voc_tagger.text_cache.features(voc_tagger.vocabulary.all_names)
    batched = voc_tagger.reidentify(pixels, crops, text)
    sequential = [voc_tagger.reidentify(pixels, [c], text)[0] for c in crops]
    np.testing.assert_allclose(batched, sequential, rtol=0, atol=1e-6)


def test_dmar_masks_each_class_by_its_own_matrix_vector_product():
    """Each refined column is the official per-class product (affinity with its box columns
    kept) @ coarse column, bit for bit: thresholds downstream see the official values."""
    torch.manual_seed(3)
    grid = (12, 17)
    n = grid[0] * grid[1]
    affinity = torch.rand(n, n) ** 4
    coarse = torch.rand(n, 6).softmax(dim=-1)
    refined = dmar(coarse, affinity, grid)
    first = affinity @ coarse
    for c in range(6):
        column = min_max(first[:, c:c + 1])[:, 0]
        boxes = contour_boxes(column.reshape(grid).numpy(), float(column.mean()))
        keep = torch.from_numpy(box_mask(grid, boxes)).reshape(1, -1)
        assert 0 < keep.sum() < n  # a real box, so the mask matters
        assert torch.equal(refined[:, c:c + 1], (affinity * keep) @ coarse[:, c:c + 1])


def test_relative_threshold_tags_and_fallback():
    labels = ("a", "b", "c")
    tags = relative_threshold_tags(np.array([0.1, 0.9, 0.6]), labels, 0.5)
    assert [(t.label, t.class_id) for t in tags] == [("b", 2), ("c", 3)]
    flat = relative_threshold_tags(np.array([0.3, 0.3, 0.3]), labels, 0.5)
    assert [t.label for t in flat] == ["a"]


def test_region_box_follows_official_clamp():
    grid = (4, 5)
    column = torch.zeros(20)
    column[[6, 7, 11, 12]] = 1.0  # rows 1-2, cols 1-2
    crop = region_box(column, grid)
    assert crop.box == (1, 1, 3, 3) and crop.region.all()
    last_row = torch.zeros(20)
    last_row[15:] = 1.0  # only the last row: the clamp leaves an empty box
    assert region_box(last_row, grid) is None
    assert region_box(torch.ones(20), grid) is None  # constant map: nothing above 0.5


def test_degenerate_box_stops_or_skips(voc_tagger, loaded, text_cache):
    refined = torch.rand(20, 45)
    refined[15:, 0] = 5.0   # class 0: strong, but only on the last row -> empty box
    refined[5, 1] = 4.0     # class 1: strong, an inner patch -> a real box
    local = refined[:, :20].max(dim=0).values
    grid = (4, 5)
    assert voc_tagger.candidate_crops(refined, local, grid) == []
    skipper = TagClip(loaded, load_vocabulary("voc"), TagClipSettings(skip_degenerate=True),
                      text_cache)
    assert [c.index for c in skipper.candidate_crops(refined, local, grid)] == [1]


def test_settings_reject_out_of_range_thresholds():
    with pytest.raises(ValueError, match="tag_threshold"):
        TagClipSettings(tag_threshold=1.5)


def test_vocabulary_change_applies_to_next_image(loaded, text_cache):
    tagger = TagClip(loaded, load_vocabulary("voc"), text_cache=text_cache)
    rgb = read_image(os.path.join(IMAGES, "chelsea.jpg"))
    voc = reference_scores("voc")
    np.testing.assert_allclose(tagger.classify(rgb).scores, voc["scores"][voc["images"].index("chelsea.jpg")],
                               rtol=0, atol=1e-4)  # before: the VOC scores
    small = load_vocabulary("cat,dog,robot", "")
    tagger.set_vocabulary(small)
    result = tagger.classify(rgb)
    fresh = TagClip(loaded, small, text_cache=text_cache).classify(rgb)
    assert np.array_equal(result.scores, fresh.scores)  # after: exactly a fresh tagger's
    assert [t.label for t in result.tags] == [t.label for t in fresh.tags]
