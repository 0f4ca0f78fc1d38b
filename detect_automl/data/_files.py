"""File helpers shared by the VOC and COCO readers and writers, and the image extensions the package reads."""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..errors import DatasetError
from .records import ImageRecord

IMAGE_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF",
                 ".webp": "WEBP"}
"""Lower-case image file extension -> the format (as PIL names it) such a file should hold."""
IMAGE_EXTENSIONS = tuple(IMAGE_FORMATS)
"""The extensions taken as image files (VOC image lookup, CLI folders), the one list of them."""


def place_images(paths: Sequence[Path], folder: Path) -> list[str]:
    """Copy image files into ``folder`` (names kept) and return their names relative to it.

    Files already inside ``folder`` are not copied. Two different files that would land on the
    same name are a DatasetError, raised before anything is copied.
    """
    folder.mkdir(parents=True, exist_ok=True)
    names = [_name_in(Path(p), folder) for p in paths]
    check_unique(names, "image file name")
    for path, name in zip(paths, names):
        target = folder / name
        if target.exists() and target.samefile(path):
            continue
        try:
            shutil.copyfile(path, target)
        except OSError as exc:
            raise DatasetError(f"{path}: cannot copy image to {folder} ({exc})") from exc
    return names


def _name_in(path: Path, folder: Path) -> str:
    try:
        return path.resolve().relative_to(folder.resolve()).as_posix()
    except ValueError:
        return path.name


def check_unique(values: Iterable[str], what: str) -> None:
    """Raise DatasetError when two records would be written under the same ``what``."""
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise DatasetError(f"two records share the {what} {value!r}; cannot write them")
        seen.add(value)


def check_classes(classes: Iterable[str]) -> list[str]:
    """Class names as a list of unique strings."""
    names = [str(c) for c in classes]
    if len(set(names)) != len(names):
        raise DatasetError(f"class names must be unique, got {names}")
    return names


def check_labels(records: Iterable[ImageRecord], num_classes: int) -> None:
    """Raise DatasetError when a record's label is not an index into ``num_classes`` classes."""
    for rec in records:
        bad = (rec.labels < 0) | (rec.labels >= num_classes)
        if bad.any():
            raise DatasetError(
                f"{rec.source or rec.path}: label {int(rec.labels[bad][0])} is outside the "
                f"{num_classes} classes (labels are 0-based class indexes)"
            )
