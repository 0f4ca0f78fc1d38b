"""Tests of detect_automl.viz: detections drawn on images, per-class AP bars, PR curves, history."""

from __future__ import annotations

import subprocess
import sys

import matplotlib
import numpy as np
import pytest
from PIL import Image

from detect_automl.errors import InputError
from detect_automl.metrics import coco_metrics
from detect_automl.results import Detections
from detect_automl.viz import (
    _colour,
    draw_detections,
    plot_history,
    plot_per_class_ap,
    plot_pr_curves,
)

matplotlib.use("Agg")

NAMES = ["raccoon", "dog", "cat", "bird"]
LABEL_ROOM = 40  # px above a box that its label strip may use (font 12 px at this image size)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


def _noise(height=240, width=320, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _detections(boxes, class_ids, scores=None):
    scores = np.linspace(0.9, 0.5, len(class_ids)) if scores is None else scores
    return Detections(class_ids, scores, np.asarray(boxes, np.float32).reshape(-1, 4), NAMES)


def _changed(a, b):
    return np.any(a != b, axis=2)


def test_drawing_changes_only_the_box_outline_and_its_label():
    image = _noise()
    before = image.copy()
    x1, y1, x2, y2 = 40, 60, 200, 180
    drawn = draw_detections(image, _detections([[x1, y1, x2, y2]], [1]), line_width=2)
    np.testing.assert_array_equal(image, before)  # the input is untouched
    assert drawn.shape == image.shape and drawn.dtype == np.uint8

    changed = _changed(drawn, image)
    allowed = np.zeros_like(changed)
    allowed[y1 - LABEL_ROOM:y2 + 1, x1:x2 + 1] = True
    assert changed.any() and not (changed & ~allowed).any()  # nothing outside the box and its label
    assert not changed[y1 + 3:y2 - 2, x1 + 3:x2 - 2].any()  # an outline, not a filled box
    colour = np.array(_colour(1))
    for edge in (drawn[y1:y2 + 1, x1], drawn[y1:y2 + 1, x2], drawn[y2, x1:x2 + 1], drawn[y1, x1:x2 + 1]):
        assert (edge == colour).all()  # the whole outline is the class colour
    label = drawn[y1 - LABEL_ROOM:y1, x1:x2 + 1]
    assert (label == colour).all(axis=2).sum() > 100  # a strip of the class colour above the box
    assert _changed(label, image[y1 - LABEL_ROOM:y1, x1:x2 + 1]).any()


def test_labels_are_readable_text_in_black_or_white_on_the_class_colour():
    image = np.full((200, 300, 3), 128, np.uint8)
    for class_id in range(len(NAMES)):
        drawn = draw_detections(image, _detections([[50, 80, 250, 190]], [class_id]), line_width=2)
        colour = _colour(class_id)
        luma = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
        text = (0, 0, 0) if luma > 140 else (255, 255, 255)
        strip = drawn[40:80, 50:251]
        near_text = np.abs(strip.astype(int) - text).max(axis=2) < 60  # glyphs (anti-aliased edges aside)
        assert near_text.sum() > 20, (class_id, colour)
        assert (strip == colour).all(axis=2).sum() > 100


def test_one_stable_colour_per_class():
    image = np.zeros((200, 300, 3), np.uint8)
    boxes = [[10, 50, 90, 150], [110, 50, 190, 150], [210, 50, 290, 150]]
    drawn = draw_detections(image, _detections(boxes, [2, 2, 0]), line_width=2)
    left_edges = [tuple(drawn[100, b[0]]) for b in boxes]
    assert left_edges[0] == left_edges[1] == _colour(2) != left_edges[2] == _colour(0)
    assert len({_colour(k) for k in range(20)}) == 20


def test_no_detections_or_all_below_the_threshold_give_an_identical_copy():
    image = _noise()
    empty = draw_detections(image, Detections([], [], np.zeros((0, 4)), NAMES))
    np.testing.assert_array_equal(empty, image)
    assert not np.shares_memory(empty, image)
    some = _detections([[40, 60, 200, 180], [10, 10, 30, 30]], [0, 1], scores=[0.6, 0.3])
    np.testing.assert_array_equal(draw_detections(image, some, score_threshold=0.7), image)
    only_best = draw_detections(image, some, score_threshold=0.5)
    assert _changed(only_best, image)[60:181, 40:201].any() and not _changed(only_best, image)[:41, :35].any()


def test_boxes_partly_or_wholly_outside_the_image():
    image = _noise(100, 120)
    boxes = [[-30, -20, 60, 50],          # over the top-left corner: clipped, label inside at the top
             [80, 70, 500, 400],          # over the bottom-right corner
             [200, 10, 260, 60],          # wholly outside: ignored
             [np.nan, 0, 10, 10]]         # undefined: ignored
    drawn = draw_detections(image, _detections(boxes, [0, 1, 2, 3]), line_width=1, font_size=8)
    assert drawn.shape == image.shape
    assert (drawn[45, 0] == _colour(0)).all() and (drawn[50, 30] == _colour(0)).all()  # clipped left, bottom
    assert (drawn[99, 100] == _colour(1)).all() and (drawn[85, 119] == _colour(1)).all()  # clipped bottom, right
    far = draw_detections(image, _detections(boxes[2:], [2, 3]))
    np.testing.assert_array_equal(far, image)


def test_accepts_a_path_or_a_pil_image_and_rejects_other_things(tmp_path):
    image = _noise()
    detections = _detections([[40, 60, 200, 180]], [0])
    path = tmp_path / "noise.png"
    Image.fromarray(image).save(path)
    expected = draw_detections(image, detections)
    np.testing.assert_array_equal(draw_detections(str(path), detections), expected)
    np.testing.assert_array_equal(draw_detections(Image.fromarray(image), detections), expected)
    with pytest.raises(InputError, match="Detections"):
        draw_detections(image, [[40, 60, 200, 180]])
    with pytest.raises(InputError, match="image #0"):
        draw_detections(image[None], detections)  # a batch, not an image


def _metrics():
    gt = [{"boxes": [[0, 0, 50, 50], [100, 100, 150, 150], [0, 100, 40, 140]], "labels": [0, 0, 1]},
          {"boxes": [[10, 10, 90, 90], [120, 20, 180, 70]], "labels": [2, 1]}]
    preds = [{"boxes": [[0, 0, 50, 50], [200, 200, 240, 240], [0, 100, 40, 140]], "labels": [0, 0, 1],
              "scores": [0.9, 0.8, 0.7]},
             {"boxes": [[10, 10, 90, 60], [120, 20, 180, 70]], "labels": [2, 1], "scores": [0.6, 0.5]}]
    return coco_metrics(gt, preds, NAMES)  # "bird" has no ground truth


def test_per_class_ap_bars_are_sorted_with_n_a_for_classes_without_ground_truth():
    metrics = _metrics()
    ax = plot_per_class_ap(metrics)
    ticks = [t.get_text() for t in ax.get_yticklabels()]
    expected = sorted((n for n in NAMES if metrics["per_class"][n] is not None),
                      key=lambda n: -metrics["per_class"][n])
    assert ticks == [*expected, "bird"]
    widths = [p.get_width() for p in ax.patches]
    np.testing.assert_allclose(widths, [metrics["per_class"][n] for n in expected])
    assert [p.get_facecolor()[:3] for p in ax.patches] == [
        tuple(c / 255 for c in _colour(NAMES.index(n))) for n in expected]
    assert "n/a" in [t.get_text() for t in ax.texts]
    ax50 = plot_per_class_ap(metrics, key="per_class_50")
    assert sorted(p.get_width() for p in ax50.patches) == sorted(
        v for v in metrics["per_class_50"].values() if v is not None)
    with pytest.raises(InputError, match="key"):
        plot_per_class_ap(metrics, key="per_class_75")
    with pytest.raises(InputError, match="per_class"):
        plot_per_class_ap({"map": 0.5})


def test_pr_curves_one_line_per_class_with_its_ap():
    metrics = _metrics()
    ax = plot_pr_curves(metrics)
    with_gt = [n for n in NAMES if metrics["per_class_50"][n] is not None]
    assert len(ax.lines) == len(with_gt) == 3
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == [f"{n} (AP {metrics['per_class_50'][n]:.3f})" for n in with_gt]
    for line, name in zip(ax.lines, with_gt):
        np.testing.assert_allclose(line.get_xdata(), np.linspace(0, 1, 101))
        np.testing.assert_allclose(line.get_ydata(), metrics["pr_curves"]["precision_50"][name])
    assert len(plot_pr_curves(metrics, iou=0.75).lines) == 3
    with pytest.raises(InputError, match=r"IoU 0.6.*\['0.5', '0.75'\]"):
        plot_pr_curves(metrics, iou=0.6)
    saved = {k: v for k, v in metrics.items() if k != "pr_curves"}  # as config.json keeps them
    with pytest.raises(InputError, match="pr_curves"):
        plot_pr_curves(saved)


def test_plots_draw_into_a_given_axes_and_history_has_one_line_per_trial(tmp_path):
    import matplotlib.pyplot as plt

    history = {"0": [{"epoch": 1, "val_map": 0.1}, {"epoch": 2, "val_map": 0.2}],
               "1": [{"epoch": 1, "val_map": 0.05}, {"epoch": 2, "val_map": None}, {"epoch": 3, "val_map": 0.3}]}
    fig, axes = plt.subplots(1, 3, figsize=(12, 4))
    assert plot_history(history, ax=axes[0]) is axes[0]
    assert plot_per_class_ap(_metrics(), ax=axes[1]) is axes[1]
    assert plot_pr_curves(_metrics(), ax=axes[2]) is axes[2]
    assert len(axes[0].lines) == 2
    np.testing.assert_allclose(axes[0].lines[1].get_xdata(), [1, 3])
    fig.savefig(tmp_path / "all.png")
    assert Image.open(tmp_path / "all.png").size == (1200, 400)


def test_importing_viz_does_not_import_matplotlib():
    code = "import sys, detect_automl.viz; assert 'matplotlib' not in sys.modules, 'matplotlib imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
