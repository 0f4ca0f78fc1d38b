"""Turn what users pass to predict()/evaluate() into what the model takes, with clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .data.dataset import Dataset
from .data.image import read_image
from .data.records import ImageRecord
from .errors import DatasetError, InputError

__all__ = ["to_rgb_array", "match_classes"]


def to_rgb_array(item: Any, index: int = 0) -> np.ndarray:
    """A path, numpy HxWx3 RGB uint8 array or PIL image -> HxWx3 RGB uint8 array.

    Raises:
        InputError: anything else, naming the input's position and what is wrong.
    """
    where = f"image #{index}"
    if isinstance(item, (str, Path)):
        try:
            return read_image(item)
        except DatasetError as exc:
            raise InputError(f"{where}: {exc}") from exc
    if hasattr(item, "convert") and hasattr(item, "size"):  # PIL.Image.Image, without importing PIL
        return np.array(item.convert("RGB"))  # a writable copy
    if isinstance(item, np.ndarray):
        if item.ndim != 3 or item.shape[2] != 3:
            raise InputError(f"{where}: expected an HxWx3 RGB array, got shape {item.shape}")
        if item.dtype != np.uint8:
            raise InputError(f"{where}: expected dtype uint8 (0-255 RGB), got {item.dtype}")
        if min(item.shape[:2]) < 1:
            raise InputError(f"{where}: empty image of shape {item.shape}")
        return np.ascontiguousarray(item)
    raise InputError(f"{where}: expected a path, a numpy RGB array or a PIL image, got {type(item).__name__}")


def match_classes(data: Dataset, class_names: list[str]) -> Dataset:
    """Re-index ``data``'s labels onto ``class_names`` by name.

    Raises:
        DatasetError: the dataset has classes the model does not know (named in the message).
    """
    if list(data.classes) == list(class_names):
        return data
    unknown = [c for c in data.classes if c not in class_names]
    if unknown:
        raise DatasetError(
            f"the dataset's classes {unknown} are not among the model's classes {class_names}; "
            "evaluate on data labelled with the classes the model was trained on"
        )
    mapping = np.array([class_names.index(c) for c in data.classes], dtype=np.int64)
    records = [
        ImageRecord(r.path, r.width, r.height, r.boxes, mapping[r.labels], r.difficult, r.iscrowd,
                    r.image_id, r.source)
        for r in data.records
    ]
    return Dataset.from_records(records, list(class_names), root=data.root, format=data.format)
