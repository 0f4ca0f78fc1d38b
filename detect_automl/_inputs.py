"""Turn what users pass to predict()/evaluate() into what the model takes, with clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .data.dataset import Dataset
from .data.image import read_image
from .errors import DatasetError, InputError

__all__ = ["to_rgb_array", "match_classes"]

_CHANNELS = {1: "grayscale", 2: "grayscale + alpha", 3: "RGB", 4: "RGBA"}
"""Channel counts an array may have, and what they hold."""
_PIL_AS_ARRAY = ("L", "LA", "RGB", "RGBA")
"""PIL modes whose pixels are taken as they are (8-bit, 1-4 channels)."""


def to_rgb_array(item: Any, index: int = 0) -> np.ndarray:
    """A path, numpy uint8 array or PIL image -> HxWx3 RGB uint8 array, converted as files are.

    Arrays may be HxW or HxWx1 (grayscale), HxWx2 (grayscale + alpha), HxWx3 (RGB) or HxWx4
    (RGBA), read-only or not (``np.asarray(Image.open(p))`` is read-only). They and PIL images of
    any mode become exactly what :func:`~detect_automl.data.image.read_image` makes of a file of
    that kind: gray is repeated into three channels, alpha is dropped (not composited, as OpenCV
    decodes), a palette gives its colours, 16 bits keep their high byte.

    Returns:
        A writable, C-contiguous array: ``item`` itself when it already is one, else a new one.

    Raises:
        InputError: anything else, naming the input's position and what is wrong.
    """
    where = f"image #{index}"
    if isinstance(item, (str, Path)):
        try:
            return read_image(item)
        except DatasetError as exc:
            raise InputError(f"{where}: {exc}") from exc
    if hasattr(item, "convert") and hasattr(item, "mode"):  # PIL.Image.Image, without importing PIL
        item = _pil_pixels(item)
    if isinstance(item, np.ndarray):
        return _rgb(item, where)
    raise InputError(f"{where}: expected a path, a numpy uint8 image array or a PIL image, got {type(item).__name__}")


def _pil_pixels(image: Any) -> np.ndarray:
    """A PIL image's pixels as a uint8 array of 1-4 channels, before :func:`_rgb` finishes it."""
    if image.mode in _PIL_AS_ARRAY:
        return np.asarray(image)
    if image.mode.startswith("I;16"):  # 16-bit grayscale: the high byte, as OpenCV reads the file
        return (np.asarray(image) >> 8).astype(np.uint8)
    if image.mode in ("P", "PA"):  # via RGBA: convert("RGB") warns when the palette has alpha
        return np.asarray(image.convert("RGBA"))
    return np.asarray(image.convert("RGB"))


def _rgb(array: np.ndarray, where: str) -> np.ndarray:
    """An HxW or HxWxC (C in 1-4) uint8 array -> writable contiguous HxWx3 RGB."""
    pixels = array[..., None] if array.ndim == 2 else array
    if pixels.ndim != 3 or pixels.shape[2] not in _CHANNELS:
        kinds = ", ".join(f"HxWx{c} {kind}" for c, kind in _CHANNELS.items())
        raise InputError(f"{where}: expected an HxW grayscale or {kinds} array, got shape {array.shape}")
    if array.dtype != np.uint8:
        raise InputError(f"{where}: expected dtype uint8 (0-255 pixel values), got {array.dtype}")
    if min(pixels.shape[:2]) < 1:
        raise InputError(f"{where}: empty image of shape {array.shape}")
    if pixels.shape[2] < 3:
        pixels = np.repeat(pixels[..., :1], 3, axis=2)
    rgb = pixels[..., :3]
    if rgb.flags.writeable and rgb.flags.c_contiguous:
        return rgb
    return np.array(rgb, order="C")  # a copy: torch.from_numpy warns on read-only arrays


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
    return data.with_classes(class_names)
