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
        iscrowd: bool (N,), COCO ``iscrowd`` flag (ignored by evaluation).
        image_id: the id in the source (VOC file stem, COCO image id as a string).
        source: the annotation file this record came from, for error messages.
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

    def __post_init__(self) -> None:
        self.path = Path(self.path).absolute()  # trials run in other working directories
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        n = len(self.boxes)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(n)
        self.difficult = _flags(self.difficult, n)
        self.iscrowd = _flags(self.iscrowd, n)

    @property
    def ignore(self) -> np.ndarray:
        """bool (N,): boxes that evaluation treats as "don't care" (difficult or crowd)."""
        return self.difficult | self.iscrowd

    @property
    def name(self) -> str:
        """A short name for messages: the image id, or the file name."""
        return self.image_id or self.path.name

    def with_boxes(self, keep: np.ndarray) -> ImageRecord:
        """A copy keeping only the boxes (and their labels and flags) where ``keep`` is True."""
        keep = np.asarray(keep, dtype=bool)
        return replace(self, boxes=self.boxes[keep], labels=self.labels[keep],
                       difficult=self.difficult[keep], iscrowd=self.iscrowd[keep])


def _flags(values, n: int) -> np.ndarray:
    arr = np.asarray(values, dtype=bool).reshape(-1)
    return np.zeros(n, dtype=bool) if arr.size == 0 and n else arr.reshape(n)
