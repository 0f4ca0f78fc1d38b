"""Box rules: sanitising and xyxy <-> xywh conversion (detect_automl.data.boxes)."""

from __future__ import annotations

import numpy as np

from detect_automl.data.boxes import MIN_BOX_SIDE, sanitize_boxes, xywh_to_xyxy, xyxy_to_xywh


def test_sanitize_clips_and_drops():
    boxes = np.array([[-5, -2, 10, 10], [3, 3, 3, 3], [2, 2, 2.5, 9], [7.5, 0, 20, 9], [np.nan, 0, 4, 4],
                      [1, 1, 6, 6]], dtype=np.float32)
    kept, labels, keep = sanitize_boxes(boxes, np.arange(6), width=8, height=9)
    assert keep.tolist() == [True, False, False, False, False, True]  # 7.5..8 is < 1 px after clipping
    np.testing.assert_array_equal(kept, [[0, 0, 8, 9], [1, 1, 6, 6]])
    assert kept.dtype == np.float32 and labels.tolist() == [0, 5] and labels.dtype == np.int64
    empty = sanitize_boxes(np.zeros((0, 4)), np.zeros(0), 8, 8)
    assert empty[0].shape == (0, 4) and empty[1].shape == (0,)


def test_min_side_is_the_one_the_augmentations_use():
    from detect_automl.data.transforms import build_transforms

    params = build_transforms(True, 0.5, seed=0).pipeline.processors["bboxes"].params
    assert params.min_width == params.min_height == MIN_BOX_SIDE


def test_conversions_round_trip_in_float64():
    boxes = np.array([[1.5, 2, 4, 6.25], [0, 0, 0, 0]], dtype=np.float32)
    xywh = xyxy_to_xywh(boxes)
    assert xywh.dtype == np.float64 and xywh.tolist() == [[1.5, 2, 2.5, 4.25], [0, 0, 0, 0]]
    np.testing.assert_array_equal(xywh_to_xyxy(xywh), boxes)
    assert xyxy_to_xywh(np.zeros((0, 4))).shape == (0, 4)
    assert xywh_to_xyxy([10, 20, 5, 1]).tolist() == [10, 20, 15, 21]
    assert boxes[0, 2] == 4  # the input is not changed
