"""The one internal record type every dataset adapter produces."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

__all__ = ["ImageRecord"]


def _empty(shape: tuple[int, ...], dtype) -> np.ndarray:
    return np.zeros(shape, dtype=dtype)


@dataclass
class ImageRecord:
    """One image and its annotations.

    Attributes:
        path: the image file.
        width, height: size declared by the annotation (0 when unknown). The decoded image is the
            truth; these are only used for checks and for writing annotation files.
        boxes: float32 (N, 4), xyxy in absolute pixels of the (EXIF-oriented) image.
        labels: int64 (N,), 0-based indexes into ``Dataset.classes``.
        difficult: bool (N,), VOC ``difficult`` flag (ignored by evaluation).
        iscrowd: bool (N,), COCO ``iscrowd`` flag (ignored by evaluation, never a training target).
        image_id: the id in the source (VOC file stem, COCO image id as a string).
        source: the annotation file this record came from, for error messages.
        area: float32 (N,), the object's area from the file (COCO ``area``: the segmentation area),
            which decides COCO's small/medium/large buckets; NaN where unknown (VOC, no ``area``),
            meaning the box area (see :attr:`object_area`).
    """

    path: Path
    width: int = 0
    height: int = 0
    boxes: np.ndarray = field(default_factory=lambda: _empty((0, 4), np.float32))
    labels: np.ndarray = field(default_factory=lambda: _empty((0,), np.int64))
    difficult: np.ndarray = field(default_factory=lambda: _empty((0,), bool))
    iscrowd: np.ndarray = field(default_factory=lambda: _empty((0,), bool))
    image_id: str = ""
    source: str = ""
    area: np.ndarray = field(default_factory=lambda: _empty((0,), np.float32))

    def __post_init__(self) -> None:
        self.path = Path(self.path).absolute()  # trials run in other working directories
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        n = len(self.boxes)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(n)
        self.difficult = _per_box(self.difficult, n, bool, False)
        self.iscrowd = _per_box(self.iscrowd, n, bool, False)
        self.area = _per_box(self.area, n, np.float32, np.nan)

    @property
    def ignore(self) -> np.ndarray:
        """bool (N,): boxes that evaluation treats as "don't care" (difficult or crowd)."""
        return self.difficult | self.iscrowd

    @property
    def object_area(self) -> np.ndarray:
        """float32 (N,): the area COCO evaluates each box by: ``area`` where known, else width x height."""
        boxes = self.boxes.astype(np.float64)
        box_area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        return np.where(np.isnan(self.area), box_area, self.area).astype(np.float32)

    @property
    def name(self) -> str:
        """A short name for messages: the image id, or the file name."""
        return self.image_id or self.path.name

    def with_boxes(self, keep: np.ndarray) -> ImageRecord:
        """A copy keeping only the boxes (and their labels, flags and areas) where ``keep`` is True."""
        keep = np.asarray(keep, dtype=bool)
        return replace(self, boxes=self.boxes[keep], labels=self.labels[keep], difficult=self.difficult[keep],
                       iscrowd=self.iscrowd[keep], area=self.area[keep])


def _per_box(values, n: int, dtype, missing) -> np.ndarray:
    """``values`` as a (n,) array of ``dtype``; empty means ``missing`` for every box."""
    arr = np.asarray(values, dtype=dtype).reshape(-1)
    return np.full(n, missing, dtype=dtype) if arr.size == 0 and n else arr.reshape(n)
