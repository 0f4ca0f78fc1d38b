"""Image decoding: by content, EXIF-oriented, always RGB uint8."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..errors import DatasetError

__all__ = ["read_image"]


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image file into an HxWx3 RGB uint8 array.

    The format is taken from the bytes, not the extension (PNG bytes in a ``.jpg`` decode fine),
    EXIF orientation is applied (an invalid tag such as 0 means "no rotation"), grayscale, RGBA,
    palette and 16-bit images become 8-bit RGB.

    Raises:
        DatasetError: the file is missing, empty or not a decodable image (the message names it).
    """
    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except (FileNotFoundError, IsADirectoryError, PermissionError, OSError) as exc:
        raise DatasetError(f"{path}: cannot read image file ({exc.__class__.__name__}: {exc})") from exc
    if data.size == 0:
        raise DatasetError(f"{path}: image file is empty")
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)  # applies EXIF orientation, drops alpha, 8-bit
    if image is None:
        raise DatasetError(f"{path}: not a decodable image (truncated or not an image file)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
