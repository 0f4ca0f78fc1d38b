"""Read and write Pascal VOC: ``Annotations/*.xml``, ``JPEGImages/``, ``ImageSets/Main/<split>.txt``.

Boxes are kept exactly as written in the XML (``[xmin, ymin, xmax, ymax]``, no 1-based shift), so
``read_voc(write_voc(...))`` is lossless. Only the annotation ``<size>`` is advisory: it may be 0x0
and is never trusted over the decoded image.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DatasetError
from ._files import IMAGE_EXTENSIONS, check_classes, check_labels, check_unique, place_images
from .problems import Invalid, Problem, report_error
from .records import ImageRecord

__all__ = ["read_voc", "write_voc"]
_BOX_FIELDS = ("xmin", "ymin", "xmax", "ymax")


@dataclass
class _VocFile:
    """One parsed annotation file, before class names are turned into ids."""

    xml: Path
    filename: str
    width: int
    height: int
    names: list[str]
    boxes: list[list[float]]
    difficult: list[bool]
    iscrowd: list[bool]
    objects: list[int]  # the position of each kept object among the file's <object>s


def read_voc(
    root: str | Path,
    split: str | None = None,
    classes: Sequence[str] | None = None,
    problems: list[Problem] | None = None,
) -> tuple[list[str], list[ImageRecord]]:
    """Read a Pascal VOC folder.

    Args:
        root: folder holding ``Annotations/``, ``JPEGImages/`` and (for ``split``) ``ImageSets/Main/``.
        split: name of ``ImageSets/Main/<split>.txt``; None reads every annotation file (sorted).
        classes: class names in id order; None takes the sorted union of the names in every
            annotation file under ``root`` (so all splits of one root agree).
        problems: None raises at the first bad file or object; a list collects every one
            (as errors) and skips the bad items: a malformed file or missing image drops that
            record, a bad object drops that box. A missing folder still raises.

    Returns:
        ``(classes, records)``; boxes are ``[xmin, ymin, xmax, ymax]`` exactly as written.

    Raises:
        DatasetError: a folder, file or image is missing, an XML file is malformed, or an object
            has a bad box or a class outside ``classes`` (the message names the file).

    >>> classes, records = read_voc("datasets/raccoon", split="train")  # doctest: +SKIP
    """
    root = Path(root)
    ann_dir = root / "Annotations"
    if not ann_dir.is_dir():
        raise DatasetError(f"{root}: not a Pascal VOC folder (no Annotations/ directory)")
    xml_files = {p.stem: p for p in sorted(ann_dir.iterdir()) if p.suffix.lower() == ".xml"}
    ids = sorted(xml_files) if split is None else _read_split(root, split, xml_files, problems)
    parsed = {i: _parse_xml(xml_files[i], problems, "image") for i in ids}
    if classes is None:
        for stem, path in xml_files.items():  # every file under root, not only the split's
            if stem not in parsed:  # not an image of this dataset: a bad one costs none of its images
                parsed[stem] = _parse_xml(path, problems, "")
        classes = sorted({name for f in parsed.values() if f is not None for name in f.names})
    classes = check_classes(classes)
    index = {name: i for i, name in enumerate(classes)}
    images = _ImageIndex(root / "JPEGImages")
    records = [_to_record(i, parsed[i], index, images, problems) for i in ids if parsed[i] is not None]
    return classes, [r for r in records if r is not None]


def write_voc(
    classes: Sequence[str],
    records: Sequence[ImageRecord],
    root: str | Path,
    split: str | None = None,
) -> None:
    """Write records as a Pascal VOC folder (image files are copied, names kept).

    Each record becomes ``Annotations/<image_id>.xml`` (the file stem when ``image_id`` is empty);
    with ``split`` the ids are also listed in ``ImageSets/Main/<split>.txt``. A COCO ``iscrowd`` flag
    is written as ``<iscrowd>1</iscrowd>`` in its object (not a VOC field; read back by ``read_voc``).

    Args:
        classes: class names; ``labels`` index into it.
        records: the images and boxes to write.
        root: output folder (created; existing files of the same name are overwritten).
        split: optional split name to write.

    Raises:
        DatasetError: two records share an id or an image file name, or a label is out of range.
    """
    root = Path(root)
    ann_dir, img_dir = root / "Annotations", root / "JPEGImages"
    ann_dir.mkdir(parents=True, exist_ok=True)
    ids = [r.image_id or r.path.stem for r in records]
    check_unique(ids, "image id")
    check_labels(records, len(classes))
    names = place_images([r.path for r in records], img_dir)
    for image_id, name, rec in zip(ids, names, records):
        tree = ET.ElementTree(_to_xml(classes, rec, name))
        ET.indent(tree, space="\t")
        tree.write(ann_dir / f"{image_id}.xml", encoding="utf-8", xml_declaration=False)
    if split is not None:
        split_dir = root / "ImageSets" / "Main"
        split_dir.mkdir(parents=True, exist_ok=True)
        (split_dir / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")


def _format_number(value: float) -> str:
    """Shortest text that reads back to the same float32 (``81`` rather than ``81.0``)."""
    return np.format_float_positional(np.float32(value), trim="-")


def _read_split(root: Path, split: str, xml_files: dict[str, Path], problems: list[Problem] | None) -> list[str]:
    split_file = root / "ImageSets" / "Main" / f"{split}.txt"
    if not split_file.is_file():
        found = sorted(p.stem for p in split_file.parent.glob("*.txt")) if split_file.parent.is_dir() else []
        raise DatasetError(f"{split_file}: split file not found (splits present: {found or 'none'})")
    ids = []
    for lineno, line in enumerate(split_file.read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if fields[0] not in xml_files:
            missing = f"id {fields[0]!r} has no annotation file {root / 'Annotations' / (fields[0] + '.xml')}"
            if problems is None:
                raise DatasetError(f"{split_file}, line {lineno}: {missing}")
            problems.append(Problem("error", "annotation_missing", str(split_file), f"line {lineno}: {missing}",
                                    fields[0], "id skipped", "image"))
            continue
        ids.append(fields[0])
    return ids


def _parse_xml(path: Path, problems: list[Problem] | None, drops: str) -> _VocFile | None:
    """One annotation file; None (after recording why, as costing ``drops``) when it cannot be parsed."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        line, column = exc.position
        message = f"malformed XML at line {line}, column {column}: {exc}"
    except OSError as exc:
        message = f"cannot read annotation file ({exc})"
    else:
        return _parse_root(root, path, problems)
    report_error(problems, "annotation_malformed", path, message, path.stem, "annotation file skipped", drops)
    return None


def _parse_root(root: ET.Element, path: Path, problems: list[Problem] | None) -> _VocFile:
    size = root.find("size")
    out = _VocFile(
        xml=path,
        filename=Path((root.findtext("filename") or "").strip().replace("\\", "/")).name,
        width=_size_field(size, "width"),
        height=_size_field(size, "height"),
        names=[], boxes=[], difficult=[], iscrowd=[], objects=[],
    )
    for k, obj in enumerate(root.iter("object")):
        try:
            name, box, difficult, iscrowd = _parse_object(obj, k)
        except Invalid as exc:
            report_error(problems, exc.code, path, exc.message, path.stem, "object skipped", "box")
            continue
        out.names.append(name)
        out.boxes.append(box)
        out.difficult.append(difficult)
        out.iscrowd.append(iscrowd)
        out.objects.append(k)
    return out


def _parse_object(obj: ET.Element, k: int) -> tuple[str, list[float], bool, bool]:
    """``(name, box, difficult, iscrowd)`` of the k-th ``<object>``; raises Invalid."""
    name = (obj.findtext("name") or "").strip()
    if not name:
        raise Invalid("field_missing", f"object #{k} has no <name>")
    where = f"object #{k} ({name})"
    bndbox = obj.find("bndbox")
    if bndbox is None:
        raise Invalid("field_missing", f"{where}: no <bndbox>")
    box = [_number(bndbox, f, where) for f in _BOX_FIELDS]
    difficult, iscrowd = (bool(_number(obj, tag, where, default=0.0)) for tag in ("difficult", "iscrowd"))
    return name, box, difficult, iscrowd


def _number(parent: ET.Element, tag: str, where: str, default: float | None = None) -> float:
    text = parent.findtext(tag)
    if text is None or not text.strip():
        if default is not None:
            return default
        raise Invalid("field_missing", f"{where}: missing field <{tag}>")
    try:
        value = float(text)
    except ValueError:
        raise Invalid("field_type", f"{where}: field <{tag}> is not a number: {text.strip()!r}") from None
    if not np.isfinite(value):
        code = "box_nan" if tag in _BOX_FIELDS else "field_type"
        raise Invalid(code, f"{where}: field <{tag}> is not finite: {text.strip()!r}")
    return value


def _size_field(size: ET.Element | None, tag: str) -> int:
    """Annotated size, 0 when absent or unreadable (it is advisory only)."""
    try:
        return max(int(float(size.findtext(tag) or 0)), 0) if size is not None else 0
    except ValueError:
        return 0


class _ImageIndex:
    """Finds image files in one folder by name, case-insensitive name, or stem."""

    def __init__(self, folder: Path) -> None:
        if not folder.is_dir():
            raise DatasetError(f"{folder}: image folder not found")
        self.folder = folder
        files = sorted(p for p in folder.iterdir() if p.is_file())
        self.by_lower = {p.name.lower(): p for p in files}
        self.by_stem = {p.stem: p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS}

    def find(self, filename: str, image_id: str) -> Path | None:
        for candidate in (filename.lower(), *(image_id.lower() + e for e in IMAGE_EXTENSIONS)):
            if candidate in self.by_lower:
                return self.by_lower[candidate]
        return self.by_stem.get(Path(filename).stem) or self.by_stem.get(image_id)


def _to_record(
    image_id: str, f: _VocFile, index: dict[str, int], images: _ImageIndex, problems: list[Problem] | None
) -> ImageRecord | None:
    """The record of one parsed file; None (after recording why) when its image is missing."""
    known = [name in index for name in f.names]
    for k, name, ok in zip(f.objects, f.names, known):
        if not ok:
            report_error(problems, "unknown_class", f.xml, f"object #{k} has class {name!r}, not in classes "
                         f"{list(index)}", image_id, "object skipped", "box")
    path = images.find(f.filename, image_id)
    if path is None:
        wanted = f.filename or f"{image_id}.jpg"
        report_error(problems, "image_missing", f.xml, f"image {wanted!r} not found in {images.folder}",
                     image_id, "image skipped", "image")
        return None
    record = ImageRecord(
        path=path,
        width=f.width,
        height=f.height,
        boxes=np.asarray(f.boxes, dtype=np.float32).reshape(-1, 4),
        labels=[index.get(n, -1) for n in f.names],
        difficult=f.difficult,
        iscrowd=f.iscrowd,
        image_id=image_id,
        source=str(f.xml),
    )
    return record if all(known) else record.with_boxes(np.array(known))


def _to_xml(classes: Sequence[str], rec: ImageRecord, filename: str) -> ET.Element:
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "JPEGImages"
    ET.SubElement(root, "filename").text = filename
    size = ET.SubElement(root, "size")
    for tag, value in (("width", rec.width), ("height", rec.height), ("depth", 3)):
        ET.SubElement(size, tag).text = str(int(value))
    ET.SubElement(root, "segmented").text = "0"
    for box, label, difficult, crowd in zip(rec.boxes, rec.labels, rec.difficult, rec.iscrowd):
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = classes[label]
        ET.SubElement(obj, "pose").text = "Unspecified"
        ET.SubElement(obj, "truncated").text = "0"
        ET.SubElement(obj, "difficult").text = str(int(difficult))
        if crowd:  # not a VOC field: written only when set, so COCO -> VOC -> COCO keeps it
            ET.SubElement(obj, "iscrowd").text = "1"
        bndbox = ET.SubElement(obj, "bndbox")
        for tag, value in zip(_BOX_FIELDS, box):
            ET.SubElement(bndbox, tag).text = _format_number(value)
    return root
