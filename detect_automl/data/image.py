"""Image decoding: by content, EXIF-oriented, always RGB uint8; and a cheap header probe."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from .problems import Problem, raise_problem

__all__ = ["read_image", "probe_image", "ImageInfo"]

_DECODABLE = {"JPEG", "PNG", "BMP", "TIFF", "WEBP", "PPM", "GIF", "JPEG2000"}
"""Formats (as PIL names them) that ``read_image`` (OpenCV) decodes."""
_END_MARKERS = {"JPEG": b"\xff\xd9", "PNG": b"IEND"}
_TAIL_BYTES = 1024
_ROTATED = (5, 6, 7, 8)  # EXIF orientations that swap width and height
_PNG_COLOR = {0: "grayscale", 2: "RGB", 3: "palette", 4: "grayscale with alpha", 6: "RGBA"}
_PIL_MODES = {"1": "1-bit", "L": "grayscale", "LA": "grayscale with alpha", "P": "palette",
              "PA": "palette with alpha", "RGBA": "RGBA", "CMYK": "CMYK", "I": "32-bit grayscale",
              "F": "float grayscale", "I;16": "16-bit grayscale", "I;16B": "16-bit grayscale"}


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
    except FileNotFoundError:
        _fail("image_missing", path, "image file not found")
    except (IsADirectoryError, PermissionError, OSError) as exc:
        _fail("image_unreadable", path, f"cannot read image file ({exc.__class__.__name__}: {exc})")
    if data.size == 0:
        _fail("image_unreadable", path, "image file is empty")
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)  # applies EXIF orientation, drops alpha, 8-bit
    if image is None:
        _fail("not_an_image", path, "not a decodable image (truncated or not an image file)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


@dataclass(frozen=True)
class ImageInfo:
    """What :func:`probe_image` found out about an image file.

    Attributes:
        width, height: the size ``read_image`` returns (EXIF orientation applied).
        format: the format of the bytes, as PIL names it (``"JPEG"``, ``"PNG"``, ...).
        pixels: the stored pixel format when it is not 8-bit RGB (``"grayscale"``, ``"RGBA"``,
            ``"palette"``, ``"16-bit RGB"``, ...), else "".
        orientation: the EXIF orientation tag when it rotates or flips the image (2-8), else 1.
    """

    width: int
    height: int
    format: str
    pixels: str = ""
    orientation: int = 1


def probe_image(path: str | Path, decode: bool = False) -> ImageInfo:
    """Size and kind of an image file, from its header: fast, no pixels decoded.

    A JPEG or PNG without its end marker is decoded to tell a truncated file from trailing
    bytes. With ``decode=True`` the image is decoded with :func:`read_image` too, and its
    decoded size is returned.

    Raises:
        DatasetError: missing, empty, unreadable, truncated or not an image; its ``problems``
            holds one Problem whose code says which (``image_missing``, ``image_unreadable``,
            ``not_an_image``, ``image_truncated``).
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        _fail("image_missing", path, "image file not found")
    except OSError as exc:
        _fail("image_unreadable", path, f"cannot read image file ({exc})")
    if not path.is_file():
        _fail("image_unreadable", path, "not a file")
    if size == 0:
        _fail("image_unreadable", path, "image file is empty")
    try:
        with Image.open(path) as image:
            fmt, (width, height), mode = image.format or "", image.size, image.mode
            orientation = _orientation(image)
            complete = _has_end_marker(path, fmt, size) or _decodes(image)
    except UnidentifiedImageError:
        _fail("not_an_image", path, "not an image file (no known image format in its bytes)")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        _fail("image_unreadable", path, f"cannot read image header ({exc})")
    if fmt not in _DECODABLE:
        _fail("not_an_image", path, f"{fmt or 'unknown'} images are not supported (use JPEG or PNG)")
    if not complete:
        _fail("image_truncated", path, f"truncated {fmt} file: its data ends early ({size} bytes)")
    if orientation in _ROTATED:
        width, height = height, width
    if decode:
        height, width = read_image(path).shape[:2]
    return ImageInfo(int(width), int(height), fmt, _pixels(path, fmt, mode), orientation)


def _fail(code: str, path: Path, message: str) -> NoReturn:
    raise_problem(Problem("error", code, str(path), message))


def _orientation(image: Image.Image) -> int:
    """EXIF orientation 2-8, else 1 (only EXIF found in the header is read: no decoding)."""
    if "exif" not in image.info:  # PNG's getexif() would decode the image to look further
        return 1
    try:
        value = image.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block: OpenCV ignores it too
        return 1
    return value if isinstance(value, int) and 2 <= value <= 8 else 1


def _has_end_marker(path: Path, fmt: str, size: int) -> bool:
    """True when the file ends like a complete ``fmt`` file (formats without a marker: True)."""
    marker = _END_MARKERS.get(fmt)
    if marker is None:
        return True
    with path.open("rb") as f:
        f.seek(max(size - _TAIL_BYTES, 0))
        return marker in f.read()


def _decodes(image: Image.Image) -> bool:
    """Whether the whole image decodes (used only when the end marker is missing)."""
    try:
        image.load()
    except (OSError, SyntaxError, ValueError, EOFError):
        return False
    return True


def _pixels(path: Path, fmt: str, mode: str) -> str:
    """The stored pixel format when it is not 8-bit RGB, else ""."""
    if fmt == "PNG":
        with path.open("rb") as f:
            header = f.read(26)
        if len(header) == 26:
            depth, color = header[24], header[25]
            kind = _PNG_COLOR.get(color, mode)
            if depth == 16:
                return f"16-bit {kind}"
            return "" if kind == "RGB" else kind
    return _PIL_MODES.get(mode, "" if mode in ("RGB", "YCbCr") else mode)
