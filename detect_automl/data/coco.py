"""Read and write COCO instances JSON (boxes only; polygons and masks are not read)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from ._files import check_classes, check_labels, place_images
from .boxes import xywh_to_xyxy, xyxy_to_xywh
from .problems import Invalid, Problem, raise_problem, report_error
from .records import ImageRecord, gc_paused

__all__ = ["read_coco", "write_coco", "default_images_dir"]

_SKIPPED = {"images": ("image skipped", "id", "image"), "annotations": ("annotation skipped", "image_id", "box"),
            "categories": ("category skipped", None, "")}  # what a bad entry costs; its record's key


@gc_paused()  # millions of acyclic objects: the collector's passes would double the time
def read_coco(
    json_path: str | Path, images: str | Path | None = None, problems: list[Problem] | None = None
) -> tuple[list[str], list[ImageRecord], list[int]]:
    """Read a COCO instances file.

    Every declared category becomes a class, in category-id order, used or not. Images without
    annotations are kept as negative records. ``bbox`` ``[x, y, w, h]`` becomes xyxy. ``area`` (the
    segmentation area COCO evaluation sorts objects by) is kept; missing, or not a positive number,
    it is unknown (NaN) and the box area stands for it.

    Args:
        json_path: the instances JSON file.
        images: folder the ``file_name`` entries are relative to; None tries
            ``<json dir>/../images``, ``<json dir>/images`` and ``<json dir>``, in that order.
        problems: None raises at the first bad entry; a list collects every one (as errors)
            and skips the bad entries (an annotation, an image entry, a category). A missing or
            malformed file, a missing top-level list or image folder still raises.

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
    categories = _categories(data, json_path, problems)
    cat_ids = [c["id"] for c in categories]
    classes = check_classes(c["name"] for c in categories)
    label_of = {cid: k for k, cid in enumerate(cat_ids)}
    image_entries = _image_entries(data, json_path, problems)
    folder = _images_dir(json_path, image_entries, images)
    columns = _annotation_columns(data, image_entries, label_of)
    if columns is None:  # some annotation is not well-formed: read one by one, naming each bad one
        columns = _annotations_one_by_one(data, image_entries, label_of, json_path, problems)
    data.pop("annotations", None)  # parsed into columns: free them before the records are built
    folder = folder.absolute()  # records hold absolute paths: trials run in other working directories
    files = {entry.name for entry in os.scandir(folder) if entry.is_file()}  # one listing, not a stat per image
    source = str(json_path)
    records = [_image_record(e, c, folder, files, source, problems) for e, c in zip(image_entries, columns)]
    return classes, [r for r in records if r is not None], cat_ids


def write_coco(
    classes: Sequence[str],
    records: Sequence[ImageRecord],
    json_path: str | Path,
    images_dir: str | Path | None = None,
) -> None:
    """Write records as a COCO instances file, copying image files into ``images_dir``.

    Category ids are 1..K in class order, annotation ids start at 1 (pycocotools treats id 0 as
    unmatched). Image ids are kept when every record's ``image_id`` is a distinct integer, else
    they are numbered from 1. ``file_name`` is relative to ``images_dir``. ``area`` is the record's
    (:attr:`ImageRecord.object_area`: the box area where unknown). A ``difficult`` key is added to
    annotations whose VOC ``difficult`` flag is set (read back by ``read_coco``).

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
        for box, label, crowd, difficult, area in zip(xyxy_to_xywh(rec.boxes), rec.labels, rec.iscrowd,
                                                      rec.difficult, rec.object_area):
            ann = {"id": len(annotations) + 1, "image_id": image_id, "category_id": int(label) + 1,
                   "bbox": [_plain(v) for v in box], "area": _plain(area), "iscrowd": int(crowd)}
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
    """The parsed file, with the standard library's json, as pycocotools parses it: orjson parses a
    train2017-sized file in 70 % of the time but needs 1.5x the memory at its peak
    (benchmarks/RESULTS.md, "COCO 2017 scale")."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        _fatal("annotation_malformed", path, f"cannot read COCO file ({exc})")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        _fatal("annotation_malformed", path, f"malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}")
    if not isinstance(data, dict):
        _fatal("field_type", path, "expected a JSON object with 'images' and 'categories'")
    return data


def _fatal(code: str, path: Path, message: str) -> NoReturn:
    """Raise a problem that stops reading the file whatever the error policy."""
    raise_problem(Problem("error", code, str(path), message))


def _entries(
    data: dict, key: str, path: Path, required: tuple[str, ...], problems: list[Problem] | None,
    optional: bool = False,
) -> list[tuple[int, dict]]:
    """``(position, entry)`` for the dicts of ``data[key]`` holding ``required`` keys (others recorded)."""
    if key not in data and optional:
        return []
    entries = data.get(key)
    if not isinstance(entries, list):
        _fatal("field_missing", path, f"missing or invalid {key!r} list")
    action, record_key, drops = _SKIPPED[key]
    valid = []
    for k, entry in enumerate(entries):
        if not isinstance(entry, dict):
            report_error(problems, "field_type", path, f"{_entry_name(key, k, entry)} is not an object", action=action,
                         drops=drops)
            continue
        missing = [r for r in required if r not in entry]
        if missing:
            report_error(problems, "field_missing", path,
                         f"{_entry_name(key, k, entry)} has no {', '.join(map(repr, missing))}",
                         str(entry.get(record_key, "")) if record_key else "", action, drops)
            continue
        valid.append((k, entry))
    return valid


def _entry_name(key: str, k: int, entry: Any) -> str:
    return f"{key}[{k}]" + (f" (id {entry['id']!r})" if isinstance(entry, dict) and "id" in entry else "")


def _categories(data: dict, path: Path, problems: list[Problem] | None) -> list[dict]:
    """Category entries in id order; a non-integer or repeated id is recorded and skipped."""
    kept: dict[int, dict] = {}
    for _, category in _entries(data, "categories", path, ("id", "name"), problems):
        cid = category["id"]
        if not isinstance(cid, int) or isinstance(cid, bool):
            report_error(problems, "field_type", path, f"category {category['name']!r} has a non-integer id {cid!r}",
                         action="category skipped")
        elif cid in kept:
            report_error(problems, "duplicate_id", path, f"duplicate category id {cid} ({kept[cid]['name']!r} and "
                         f"{category['name']!r})", action="later category skipped")
        else:
            kept[cid] = category
    return [kept[cid] for cid in sorted(kept)]


def _image_entries(data: dict, path: Path, problems: list[Problem] | None) -> list[dict]:
    """Image entries with a usable, unique id (the others recorded and skipped)."""
    entries: list[dict] = []
    seen: set = set()
    for k, entry in _entries(data, "images", path, ("id", "file_name"), problems):
        image_id = entry["id"]
        if not _hashable(image_id):
            report_error(problems, "field_type", path, f"images[{k}]: id must be a number or a string, got "
                         f"{image_id!r}", action="image skipped", drops="image")
        elif image_id in seen:
            report_error(problems, "duplicate_id", path, f"duplicate image id {image_id!r} (images[{k}], "
                         f"{entry['file_name']!r}); its annotations go to the first entry", str(image_id),
                         "later image entry skipped", "image")
        else:
            seen.add(image_id)
            entries.append(entry)
    return entries


_Columns = tuple  # (boxes xyxy float32 (n, 4), labels int64, iscrowd bool, difficult bool, area float32) of one image


def _annotation_columns(data: dict, entries: list[dict], label_of: dict[int, int]) -> list[_Columns] | None:
    """Every image entry's annotations, read column by column with numpy, in file order.

    The fast path, for a file whose every annotation is well-formed (COCO-sized files are read
    about as fast as pycocotools reads them): None as soon as one is not (not an object, a key
    missing, an unknown image or category, a bbox that is not 4 finite numbers, a flag or area of
    another type), and :func:`_annotations_one_by_one` then reads the file naming each bad one.
    The two give identical columns on a well-formed file.
    """
    anns = data.get("annotations", [])
    if not isinstance(anns, list):
        return None
    row_of = {entry["id"]: k for k, entry in enumerate(entries)}
    try:
        rows = np.array([row_of[a["image_id"]] for a in anns], dtype=np.int64)
        labels = np.array([label_of[a["category_id"]] for a in anns], dtype=np.int64)
        bbox = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4) if anns else np.zeros((0, 4))
        flags = [[a.get(key, 0) for a in anns] for key in ("iscrowd", "difficult")]
        area = [a.get("area") for a in anns]
        if not all(set(map(type, values)) <= {int, bool} for values in flags) or not set(map(type, area)) <= {
                int, float, type(None)}:
            return None
        area = np.array([np.nan if v is None else v for v in area], dtype=np.float64)
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError):
        return None
    if len(bbox) != len(anns) or not np.isfinite(bbox).all():
        return None
    area = np.where(np.isfinite(area) & (area > 0), area, np.nan)  # as _area: unknown unless a positive number
    order = np.argsort(rows, kind="stable")
    boxes, labels, area = xywh_to_xyxy(bbox[order]).astype(np.float32), labels[order], area[order].astype(np.float32)
    iscrowd, difficult = (np.array(values, dtype=bool)[order] for values in flags)
    ends = np.cumsum(np.bincount(rows, minlength=len(entries))).tolist()
    return [(boxes[a:b], labels[a:b], iscrowd[a:b], difficult[a:b], area[a:b]) for a, b in zip([0, *ends[:-1]], ends)]


def _annotations_one_by_one(data: dict, entries: list[dict], label_of: dict[int, int], json_path: Path,
                            problems: list[Problem] | None) -> list[_Columns]:
    """Every image entry's annotations, read one by one: each bad one is recorded and skipped."""
    objects: dict[Any, list[tuple]] = {entry["id"]: [] for entry in entries}
    required = ("image_id", "category_id", "bbox")
    for k, ann in _entries(data, "annotations", json_path, required, problems, optional=True):
        where = f"annotation id {ann['id']!r}" if "id" in ann else f"annotation #{k}"
        try:
            parsed = _annotation(ann, where, objects, label_of)
        except Invalid as exc:
            report_error(problems, exc.code, json_path, exc.message, str(ann["image_id"]), "annotation skipped",
                         "box")
        else:
            objects[ann["image_id"]].append(parsed)
    columns = []
    for entry in entries:
        boxes, labels, iscrowd, difficult, area = zip(*objects[entry["id"]]) if objects[entry["id"]] else ((),) * 5
        columns.append((np.asarray(boxes, dtype=np.float32).reshape(-1, 4), np.asarray(labels, dtype=np.int64),
                        np.asarray(iscrowd, dtype=bool), np.asarray(difficult, dtype=bool),
                        np.asarray(area, dtype=np.float32)))
    return columns


def _annotation(ann: dict, where: str, objects: dict, label_of: dict[int, int]) -> tuple:
    """``(xyxy, label, iscrowd, difficult, area)`` of one annotation; raises Invalid."""
    if not _hashable(ann["image_id"]) or ann["image_id"] not in objects:
        raise Invalid("unknown_image", f"{where}: unknown image_id {ann['image_id']!r}")
    if not _hashable(ann["category_id"]) or ann["category_id"] not in label_of:
        raise Invalid("unknown_class", f"{where}: unknown category_id {ann['category_id']!r} "
                      f"(declared: {list(label_of)})")
    return (_xyxy(ann["bbox"], where), label_of[ann["category_id"]],
            bool(ann.get("iscrowd", 0)), bool(ann.get("difficult", 0)), _area(ann.get("area")))


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _images_dir(json_path: Path, entries: list[dict], images: str | Path | None) -> Path:
    if images is not None:
        candidates = [Path(images)]
    else:
        here = json_path.parent
        candidates = [here.parent / "images", here / "images", here]
    probes = [str(e["file_name"]) for e in entries[:20]]  # a few: one missing image must not hide the folder
    for folder in candidates:
        if folder.is_dir() and (not probes or any((folder / p).is_file() for p in probes)):
            return folder
    searched = ", ".join(str(c) for c in candidates)
    _fatal("image_missing", json_path, f"image {probes[0]!r} not found (looked in {searched})")


def _image_record(
    entry: dict, columns: _Columns, folder: Path, files: set[str], source: str, problems: list[Problem] | None
) -> ImageRecord | None:
    name = str(entry["file_name"])
    path = folder / name
    if name not in files and not path.is_file():  # not directly in the folder: a subfolder's, or missing
        report_error(problems, "image_missing", source, f"image id {entry['id']!r}: file {path} not found",
                     str(entry["id"]), "image skipped", "image")
        return None
    boxes, labels, iscrowd, difficult, area = columns
    return ImageRecord(
        path=path, width=_int(entry.get("width")), height=_int(entry.get("height")), boxes=boxes, labels=labels,
        iscrowd=iscrowd, difficult=difficult, image_id=str(entry["id"]), source=source, area=area,
    )


def _xyxy(bbox: Any, where: str) -> list[float]:
    try:
        x, y, w, h = (float(v) for v in bbox)
    except (TypeError, ValueError):
        raise Invalid("field_type", f"{where}: bbox must be 4 numbers [x, y, w, h], got {bbox!r}") from None
    if not np.isfinite([x, y, w, h]).all():
        raise Invalid("box_nan", f"{where}: bbox has a non-finite value: {bbox!r}")
    return xywh_to_xyxy([x, y, w, h]).tolist()


def _area(value: Any) -> float:
    """The annotation's ``area`` when it is a positive finite number, else NaN (unknown)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return float("nan")
    try:
        area = float(value)
    except OverflowError:  # an integer beyond the float range
        return float("nan")
    return area if np.isfinite(area) and area > 0 else float("nan")


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
