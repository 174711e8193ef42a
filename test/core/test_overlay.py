"""The overlay picture stays readable for any number of tags and any image: a legend that fits
("+k more"), each region named where it lies, scores with the digits that tell them apart,
swatches and edges that show on a black image."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from tagclip_ros.core.overlay import (FONT, LEGEND_HEIGHT, Caption, TextStyle, overlaps, overlay_layout,
                                      palette, render_overlay, score_texts)

HEIGHT, WIDTH, ROWS, COLS = 240, 320, 6, 5  # 30 cells of 64×40 px, one tag each


@pytest.mark.parametrize("scores, texts", [
    ([0.9558], ["0.96"]),                                   # real CLIP: one clear winner
    ([0.0316, 0.0291, 0.0287], ["0.0316", "0.0291", "0.0287"]),  # one digit count for all
    ([0.0316, 0.0291], ["0.032", "0.029"]),                 # the random checkpoint's scores
    ([0.95581, 0.95582], ["0.95581", "0.95582"]),
    ([0.5, 0.5], ["0.50", "0.50"]),                         # equal scores stay equal
    ([0.25, 0.0001234], ["0.25", "0.00012"]),               # small scores keep their digits
    ([0.0], ["0"]),
    ([], []),
])
def test_scores_are_written_with_the_digits_that_tell_them_apart(scores, texts):
    assert score_texts(scores) == texts


def grid_of_tags() -> tuple[np.ndarray, list[Caption], dict[int, tuple[int, int, int, int]]]:
    """A 320×240 label mask of 30 rectangles, its captions (best first) and each class's cell."""
    mask, cells, captions = np.zeros((HEIGHT, WIDTH), np.int64), {}, []
    for index in range(ROWS * COLS):
        row, col = divmod(index, COLS)
        class_id, cell = 3 * index + 1, (col * 64, row * 40, col * 64 + 64, row * 40 + 40)
        mask[cell[1]:cell[3], cell[0]:cell[2]] = class_id
        cells[class_id] = cell
        captions.append(Caption(class_id, f"class {index:02d}", f"{0.0315 - index * 1e-4:.4f}"))
    return mask, captions, cells


def inside(box: tuple[int, int, int, int]) -> bool:
    return 0 <= box[0] < box[2] <= WIDTH and 0 <= box[1] < box[3] <= HEIGHT


def text_box(text: str, origin: tuple[int, int], style: TextStyle) -> tuple[int, int, int, int]:
    """The pixels cv2.putText covers for `text` at `origin`."""
    (width, height), baseline = cv2.getTextSize(text, FONT, style.scale, style.thickness)
    return origin[0], origin[1] - height, origin[0] + width, origin[1] + baseline


def within(inner: tuple[int, int, int, int], outer: tuple[int, int, int, int]) -> bool:
    return outer[0] <= inner[0] and outer[1] <= inner[1] and inner[2] <= outer[2] and inner[3] <= outer[3]


def test_thirty_tags_fit_a_small_image_with_the_rest_counted():
    mask, captions, _ = grid_of_tags()
    legend, style = overlay_layout(mask.shape, mask, captions).legend, TextStyle.for_image(mask.shape)
    assert inside(legend.box) and legend.box[3] <= HEIGHT * LEGEND_HEIGHT
    listed = [row for row in legend.rows if row.class_id is not None]
    assert [row.class_id for row in listed] == [c.class_id for c in captions[:len(listed)]]
    assert listed[0].text == "class 00 0.0315"
    assert legend.more == 30 - len(listed) > 0 and legend.rows[-1].text == f"+{legend.more} more"
    for row in legend.rows:
        assert within(text_box(row.text, row.origin, style), legend.box)
        assert row.swatch is None or within(row.swatch, legend.box)
    # the picture shows that line: every pixel of "+k more" drawn alone is drawn in the overlay
    alone = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    cv2.putText(alone, legend.rows[-1].text, legend.rows[-1].origin, FONT, style.scale, (255, 255, 255),
                style.thickness, cv2.LINE_AA)
    drawn = render_overlay(np.full((HEIGHT, WIDTH, 3), 128, np.uint8), mask, captions)
    assert np.array_equal(drawn[alone == 255], alone[alone == 255])


def test_every_region_clear_of_the_legend_is_named_readably():
    mask, captions, cells = grid_of_tags()
    layout, style = overlay_layout(mask.shape, mask, captions), TextStyle.for_image(mask.shape)
    clear = {c for c, cell in cells.items() if not overlaps(cell, layout.legend.box)}
    assert {label.class_id for label in layout.labels} == clear
    names = {c.class_id: c.label for c in captions}
    drawn = render_overlay(np.full((HEIGHT, WIDTH, 3), 220, np.uint8), mask, captions)  # a light image
    boxes = [layout.legend.box]
    for label in layout.labels:
        assert label.text == names[label.class_id] and inside(label.box)
        assert within(text_box(label.text, label.origin, style), label.box)
        assert not any(overlaps(label.box, other) for other in boxes)  # no label hides another
        boxes.append(label.box)
        x, y = (label.box[0] + label.box[2]) // 2, (label.box[1] + label.box[3]) // 2
        assert mask[y, x] == label.class_id  # at its own region
        patch = drawn[label.box[1] + 1:label.box[3] - 1, label.box[0] + 1:label.box[2] - 1]
        text = np.all(patch >= 230, axis=2)
        assert text.mean() > 0.02 and np.median(patch) < 100  # white text on a dark backing


def test_dark_swatches_and_regions_show_on_a_black_image():
    dark = 64  # palette (32, 0, 0): a tint nobody sees on black
    assert palette(256)[dark].max() <= 32
    black, mask = np.zeros((HEIGHT, WIDTH, 3), np.uint8), np.zeros((HEIGHT, WIDTH), np.int64)
    mask[120:200, 150:300] = dark
    captions = [Caption(dark, "night sky", "0.96")]
    layout = overlay_layout(black.shape, mask, captions)
    drawn = render_overlay(black, mask, captions)
    x0, y0, x1, y1 = layout.legend.rows[0].swatch
    ring = np.concatenate([drawn[y0, x0:x1], drawn[y1 - 1, x0:x1], drawn[y0:y1, x0], drawn[y0:y1, x1 - 1]])
    assert np.all(ring == 255)  # the swatch's outline, white on the black panel
    assert np.array_equal(drawn[(y0 + y1) // 2, (x0 + x1) // 2], palette(256)[dark])
    edges = np.concatenate([drawn[120, 160:290], drawn[199, 160:290],
                            drawn[130:190, 150], drawn[130:190, 299]])
    assert np.all(edges == 255)  # the region's outline, where its tint is nearly black
    (label,) = layout.labels
    patch = drawn[label.box[1]:label.box[3], label.box[0]:label.box[2]]
    assert np.all(patch >= 230, axis=2).mean() > 0.02  # its name, white
