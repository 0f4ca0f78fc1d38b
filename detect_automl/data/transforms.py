"""Augmentation pipelines (albumentations) with one strength knob.

Transforms only augment: they never resize or normalise, because the torchvision detector owns
that (and maps boxes back to the original image). Boxes are xyxy pixels ("pascal_voc") in and out.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..errors import InputError
from .boxes import MIN_BOX_SIDE

__all__ = ["build_transforms", "identity", "Transform"]

Transform = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]
"""``(image HxWx3 uint8, boxes (N, 4) float32 xyxy, labels (N,) int64) -> the same, augmented``."""

_MIN_VISIBILITY = 0.1  # a box cut to less than 10 % of its area is dropped, never kept as a sliver


def build_transforms(train: bool, augment: float = 0.5, seed: int | None = None) -> Transform:
    """Build the training or evaluation transform.

    Args:
        train: False gives the identity (evaluation never augments).
        augment: strength ``s`` in [0, 1]; 0 gives the identity. With ``s > 0``: horizontal flip
            (p=0.5), a box-safe scale/shift keeping the image size (scale 1±0.3s, shift ±0.1s of
            the side, applied with probability s) and colour jitter (brightness, contrast and
            saturation ±0.4s, hue ±0.05s, applied with probability s).
        seed: seed of the pipeline's own random state (albumentations ignores numpy's global
            seed); None draws a fresh one. ``reseed(seed)`` on the result changes it later.

    Returns:
        A callable ``(image, boxes, labels) -> (image, boxes, labels)``; boxes that end up less
        than 10 % visible or under 1 px wide or high are dropped with their labels.

    Raises:
        InputError: ``augment`` is outside [0, 1].

    >>> tf = build_transforms(train=True, augment=0.5, seed=0)  # doctest: +SKIP
    >>> image, boxes, labels = tf(image, boxes, labels)  # doctest: +SKIP
    """
    augment = float(augment)
    if not 0.0 <= augment <= 1.0:
        raise InputError(f"augment must be in [0, 1], got {augment}")
    if not train or augment == 0.0:
        return identity
    A = _albumentations()
    s = augment
    ops = [
        A.HorizontalFlip(p=0.5),
        A.Affine(scale=(1.0 - 0.3 * s, 1.0 + 0.3 * s), translate_percent=(-0.1 * s, 0.1 * s), p=s),
        A.ColorJitter(brightness=0.4 * s, contrast=0.4 * s, saturation=0.4 * s, hue=0.05 * s, p=s),
    ]
    return _Albumentations(ops, seed)


def identity(image: np.ndarray, boxes: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The evaluation transform: returns its inputs unchanged."""
    return image, boxes, labels


class _Albumentations:
    """Wraps albumentations ops with xyxy box handling, as a picklable ``Transform``."""

    def __init__(self, ops: Sequence[Any], seed: int | None = None) -> None:
        A = _albumentations()
        bbox_params = A.BboxParams(
            format="pascal_voc", label_fields=["labels"], min_visibility=_MIN_VISIBILITY,
            min_width=MIN_BOX_SIDE, min_height=MIN_BOX_SIDE, clip=True,
        )
        self.pipeline = A.Compose(list(ops), bbox_params=bbox_params, seed=seed)

    def reseed(self, seed: int) -> None:
        """Reset the random state (used per DataLoader worker)."""
        self.pipeline.set_random_seed(seed)

    def __call__(self, image: np.ndarray, boxes: np.ndarray,
                 labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        out = self.pipeline(
            image=image,
            bboxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
            labels=np.asarray(labels, dtype=np.int64),
        )
        out_boxes = np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4)
        out_labels = np.asarray(out["labels"], dtype=np.int64).reshape(-1)
        return out["image"], out_boxes, out_labels

    def __repr__(self) -> str:
        return f"{type(self).__name__}({[type(t).__name__ for t in self.pipeline.transforms]})"


def _albumentations():
    """Import albumentations lazily, without its network update check unless the user asked."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import albumentations

    return albumentations
