"""Read and write COCO instances JSON (boxes only; polygons and masks are not read)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DatasetError
from ._files import check_classes, check_labels, place_images
from .records import ImageRecord

__all__ = ["read_coco", "write_coco", "default_images_dir"]


def read_coco(
    json_path: str | Path, images: str | Path | None = None
) -> tuple[list[str], list[ImageRecord], list[int]]:
    """Read a COCO instances file.

    Every declared category becomes a class, in category-id order, used or not. Images without
    annotations are kept as negative records. ``bbox`` ``[x, y, w, h]`` becomes xyxy.

    Args:
        json_path: the instances JSON file.
        images: folder the ``file_name`` entries are relative to; None tries
            ``<json dir>/../images``, ``<json dir>/images`` and ``<json dir>``, in that order.

    Returns:
        ``(classes, records, category_ids)``; ``records[i].image_id`` is the COCO image id as text
        and ``category_ids[k]`` is the file's id of ``classes[k]``.

    Raises:
        DatasetError: the file is missing or malformed, a key is missing, an annotation points to
            an unknown image or category, or an image file is missing (the message names it).

    >>> classes, records, cat_ids = read_coco("datasets/fruits_nuts/annotations/instances_train.json")  # doctest: +SKIP
    """
    json_path = Path(json_path)
    data = _load_json(json_path)
    categories = _entries(data, "categories", json_path, ("id", "name"))
    cat_ids = sorted(_category_id(c, json_path) for c in categories)
    if len(set(cat_ids)) != len(cat_ids):
        raise DatasetError(f"{json_path}: duplicate category ids in {cat_ids}")
    classes = check_classes(c["name"] for c in sorted(categories, key=lambda c: c["id"]))
    label_of = {cid: k for k, cid in enumerate(cat_ids)}
    image_entries = _entries(data, "images", json_path, ("id", "file_name"))
    folder = _images_dir(json_path, image_entries, images)
    objects: dict[Any, list[tuple]] = {}
    for entry in image_entries:
        if entry["id"] in objects:
            raise DatasetError(f"{json_path}: duplicate image id {entry['id']!r}")
        objects[entry["id"]] = []
    required = ("image_id", "category_id", "bbox")
    for k, ann in enumerate(_entries(data, "annotations", json_path, required, optional=True)):
        where = f"{json_path}: annotation id {ann['id']!r}" if "id" in ann else f"{json_path}: annotation #{k}"
        if ann["image_id"] not in objects:
            raise DatasetError(f"{where}: unknown image_id {ann['image_id']!r}")
        if ann["category_id"] not in label_of:
            raise DatasetError(f"{where}: unknown category_id {ann['category_id']!r} (declared: {cat_ids})")
        objects[ann["image_id"]].append(
            (_xyxy(ann["bbox"], where), label_of[ann["category_id"]],
             bool(ann.get("iscrowd", 0)), bool(ann.get("difficult", 0)))
        )
    records = [_image_record(e, objects[e["id"]], folder, json_path) for e in image_entries]
    return classes, records, cat_ids


def write_coco(
    classes: Sequence[str],
    records: Sequence[ImageRecord],
    json_path: str | Path,
    images_dir: str | Path | None = None,
) -> None:
    """Write records as a COCO instances file, copying image files into ``images_dir``.

    Category ids are 1..K in class order, annotation ids start at 1 (pycocotools treats id 0 as
    unmatched). Image ids are kept when every record's ``image_id`` is a distinct integer, else
    they are numbered from 1. ``file_name`` is relative to ``images_dir``. A ``difficult`` key is
    added to annotations whose VOC ``difficult`` flag is set (read back by ``read_coco``).

    Args:
        classes: class names; ``labels`` index into it.
        records: the images and boxes to write.
        json_path: output JSON file (parent folders are created).
        images_dir: where the images go; None uses :func:`default_images_dir`.

    Raises:
        DatasetError: a label is out of range or two different images share a file name.
    """
    json_path = Path(json_path)
    folder = Path(images_dir) if images_dir is not None else default_images_dir(json_path)
    check_labels(records, len(classes))
    names = place_images([r.path for r in records], folder)
    image_ids = _image_ids(records)
    images, annotations = [], []
    for image_id, name, rec in zip(image_ids, names, records):
        images.append({"id": image_id, "file_name": name, "width": int(rec.width), "height": int(rec.height)})
        for box, label, crowd, difficult in zip(rec.boxes, rec.labels, rec.iscrowd, rec.difficult):
            x1, y1, x2, y2 = (_plain(v) for v in box)
            w, h = _plain(x2 - x1), _plain(y2 - y1)
            ann = {"id": len(annotations) + 1, "image_id": image_id, "category_id": int(label) + 1,
                   "bbox": [x1, y1, w, h], "area": _plain(w * h), "iscrowd": int(crowd)}
            if difficult:
                ann["difficult"] = 1
            annotations.append(ann)
    categories = [{"id": k + 1, "name": name, "supercategory": name} for k, name in enumerate(classes)]
    json_path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"images": images, "annotations": annotations, "categories": categories}
    json_path.write_text(json.dumps(payload, indent=1), encoding="utf-8")


def default_images_dir(json_path: str | Path) -> Path:
    """``root/images`` for ``root/annotations/x.json`` (the COCO layout), else ``<json dir>/images``."""
    parent = Path(json_path).parent
    return parent.parent / "images" if parent.name == "annotations" else parent / "images"


def _load_json(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read COCO file ({exc})") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from exc
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a JSON object with 'images' and 'categories'")
    return data


def _entries(data: dict, key: str, path: Path, required: tuple[str, ...], optional: bool = False) -> list[dict]:
    """``data[key]`` as a list of dicts, each holding ``required`` keys (missing list allowed if optional)."""
    if key not in data and optional:
        return []
    entries = data.get(key)
    if not isinstance(entries, list):
        raise DatasetError(f"{path}: missing or invalid {key!r} list")
    for k, entry in enumerate(entries):
        name = f"{key}[{k}]" + (f" (id {entry['id']!r})" if isinstance(entry, dict) and "id" in entry else "")
        if not isinstance(entry, dict):
            raise DatasetError(f"{path}: {name} is not an object")
        missing = [r for r in required if r not in entry]
        if missing:
            raise DatasetError(f"{path}: {name} has no {', '.join(map(repr, missing))}")
    return entries


def _images_dir(json_path: Path, entries: list[dict], images: str | Path | None) -> Path:
    if images is not None:
        candidates = [Path(images)]
    else:
        here = json_path.parent
        candidates = [here.parent / "images", here / "images", here]
    probe = str(entries[0]["file_name"]) if entries else None
    for folder in candidates:
        if folder.is_dir() and (probe is None or (folder / probe).is_file()):
            return folder
    searched = ", ".join(str(c) for c in candidates)
    raise DatasetError(f"{json_path}: image {probe!r} not found (looked in {searched})")


def _image_record(entry: dict, objects: list[tuple], folder: Path, json_path: Path) -> ImageRecord:
    path = folder / str(entry["file_name"])
    if not path.is_file():
        raise DatasetError(f"{json_path}: image id {entry['id']!r}: file {path} not found")
    boxes, labels, iscrowd, difficult = zip(*objects) if objects else ((), (), (), ())
    return ImageRecord(
        path=path, width=_int(entry.get("width")), height=_int(entry.get("height")),
        boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4), labels=labels,
        iscrowd=iscrowd, difficult=difficult, image_id=str(entry["id"]), source=str(json_path),
    )


def _category_id(category: dict, json_path: Path) -> int:
    cid = category["id"]
    if not isinstance(cid, int) or isinstance(cid, bool):
        raise DatasetError(f"{json_path}: category {category['name']!r} has a non-integer id {cid!r}")
    return cid


def _xyxy(bbox: Any, where: str) -> list[float]:
    try:
        x, y, w, h = (float(v) for v in bbox)
    except (TypeError, ValueError):
        raise DatasetError(f"{where}: bbox must be 4 numbers [x, y, w, h], got {bbox!r}") from None
    if not np.isfinite([x, y, w, h]).all():
        raise DatasetError(f"{where}: bbox has a non-finite value: {bbox!r}")
    return [x, y, x + w, y + h]


def _int(value: Any) -> int:
    try:
        return max(int(value), 0)
    except (TypeError, ValueError):
        return 0


def _plain(value: float) -> int | float:
    """A JSON-friendly number: an int when integral, else the exact float."""
    value = float(value)
    return int(value) if value.is_integer() else value


def _image_ids(records: Sequence[ImageRecord]) -> list[int]:
    try:
        ids = [int(r.image_id) for r in records]
    except ValueError:
        ids = []
    if len(ids) == len(records) and len(set(ids)) == len(ids):
        return ids
    return list(range(1, len(records) + 1))
