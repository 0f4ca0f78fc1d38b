"""Box rules, in numpy only: the one home for box sanitising and xyxy <-> xywh conversion.

Every layer that touches boxes (reading COCO files, checks, augmentation, the loader, evaluation,
metrics) takes its rule from here, so training, checking and scoring agree on which box is usable.
"""

from __future__ import annotations

import numpy as np

__all__ = ["MIN_BOX_SIDE", "sanitize_boxes", "xyxy_to_xywh", "xywh_to_xyxy"]

MIN_BOX_SIDE = 1.0
"""Boxes narrower or lower than this many pixels after clipping are dropped (torchvision rejects them)."""


def sanitize_boxes(
    boxes: np.ndarray, labels: np.ndarray, width: float, height: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clip xyxy boxes to a ``width`` x ``height`` image and drop those under 1 px wide or high.

    Non-finite boxes are dropped too. Training, checking and evaluation share this rule.

    Args:
        boxes: (N, 4) xyxy pixels.
        labels: (N,) class ids.
        width, height: size of the decoded image.

    Returns:
        ``(boxes float32 (M, 4), labels int64 (M,), keep bool (N,))`` where ``keep`` marks the
        input boxes that survived.

    >>> sanitize_boxes(np.array([[-5, 0, 10, 10], [3, 3, 3, 3]]), np.array([0, 1]), 8, 8)[0]
    array([[0., 0., 8., 8.]], dtype=float32)
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    finite = np.isfinite(boxes).all(axis=1)
    clipped = np.where(finite[:, None], boxes, 0.0).astype(np.float32)
    np.clip(clipped[:, 0::2], 0.0, width, out=clipped[:, 0::2])
    np.clip(clipped[:, 1::2], 0.0, height, out=clipped[:, 1::2])
    w = clipped[:, 2] - clipped[:, 0]
    h = clipped[:, 3] - clipped[:, 1]
    keep = finite & (w >= MIN_BOX_SIDE) & (h >= MIN_BOX_SIDE)
    return clipped[keep], labels[keep], keep


def xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    """``[x1, y1, x2, y2]`` corners -> COCO ``[x, y, width, height]``, computed in float64.

    Args:
        boxes: (N, 4) or (4,) xyxy boxes (any real dtype, lists too).

    Returns:
        float64 array of the same shape.

    >>> xyxy_to_xywh([[1, 2, 4, 6]]).tolist()
    [[1.0, 2.0, 3.0, 4.0]]
    """
    out = np.array(boxes, dtype=np.float64)
    out[..., 2:] -= out[..., :2]
    return out


def xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """COCO ``[x, y, width, height]`` -> ``[x1, y1, x2, y2]`` corners, computed in float64.

    Args:
        boxes: (N, 4) or (4,) xywh boxes (any real dtype, lists too).

    Returns:
        float64 array of the same shape.

    >>> xywh_to_xyxy([1, 2, 3, 4]).tolist()
    [1.0, 2.0, 4.0, 6.0]
    """
    out = np.array(boxes, dtype=np.float64)
    out[..., 2:] += out[..., :2]
    return out
