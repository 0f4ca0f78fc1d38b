"""Dataset inspection: every problem a fit would meet, found up front, each with one policy.

``inspect`` reads a dataset (or takes a Dataset), probes every image file's header (or decodes
it with ``decode=True``) and checks every box against the real image size. Errors are items
that cannot be used: ``fit`` and ``evaluate`` leave out exactly the items the report names, or
raise, as their ``on_error`` says (:mod:`detect_automl.data.policy`). Fixed problems are corrected
on load (boxes clipped, decoded size and RGB conversion used); warnings and notes are kept as they are.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DatasetError, InputError
from ._files import IMAGE_FORMATS
from .boxes import MIN_BOX_SIDE, sanitize_boxes
from .dataset import Dataset
from .image import ImageInfo, probe_image
from .policy import DEFAULT_ON_ERROR, check_on_error, refusal, skipped_counts
from .problems import SEVERITIES, Problem, drop_list
from .records import ImageRecord

__all__ = ["inspect", "check_dataset", "InspectionReport", "Problem", "CLIP_TOLERANCE"]

logger = logging.getLogger(__name__)

CLIP_TOLERANCE = 4.0
"""A box reaching at most this many pixels past the image edge is clipped (fixed); further is an error."""

_LISTED_PER_CODE = 10  # non-errors shown per code in the text report (to_dict() has them all)
_HEADINGS = {
    "error": "Errors (left out as the brackets say, or fit raises DatasetError, as on_error says)",
    "fixed": "Fixed automatically on load",
    "warning": "Warnings (kept as they are)",
    "info": "Notes",
}


@dataclass
class InspectionReport:
    """Every problem found in a dataset, and summary statistics.

    Attributes:
        source: what was inspected (path, format, split).
        problems: every problem, in the order found.
        stats: ``images``, ``boxes``, ``images_without_boxes``, ``boxes_per_class``,
            ``unused_classes``, ``box_width_px`` and ``box_height_px`` (min, p5, p50, p95, max),
            counted on what is kept once the errors are left out.
        dataset: the dataset without its errors (what a fit that skips them trains on), its
            ``problems`` listing them; the inspected Dataset itself when nothing is dropped;
            None when nothing could be read.
    """

    source: str
    problems: list[Problem]
    stats: dict[str, Any]
    dataset: Dataset | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        """True when there is no error (fixed problems, warnings and notes allowed)."""
        return not self.errors

    @property
    def errors(self) -> list[Problem]:
        """The problems of severity "error"."""
        return self.by_severity("error")

    def by_severity(self, severity: str) -> list[Problem]:
        """The problems of one severity (see :data:`~detect_automl.data.problems.SEVERITIES`)."""
        return [p for p in self.problems if p.severity == severity]

    def counts(self) -> dict[str, int]:
        """Number of problems per severity."""
        return {s: len(self.by_severity(s)) for s in SEVERITIES}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict: source, ok, counts, stats and every problem."""
        return {"source": self.source, "ok": self.ok, "counts": self.counts(), "stats": self.stats,
                "problems": [p.to_dict() for p in self.problems]}

    def __repr__(self) -> str:
        return f"InspectionReport({self.source!r}, ok={self.ok}, counts={self.counts()})"

    def __str__(self) -> str:
        s = self.stats
        errors = len(self.errors)
        lines = [f"Inspection of {self.source}: " + ("OK" if self.ok else f"{errors} error(s)"),
                 f"  {s['images']} images ({s['images_without_boxes']} without boxes), {s['boxes']} boxes"
                 + ("" if self.ok else " once the errors are left out")]
        if s["boxes_per_class"]:
            lines.append("  boxes per class: " + ", ".join(f"{k} {v}" for k, v in s["boxes_per_class"].items()))
        for key in ("box_width_px", "box_height_px"):
            if s[key]:
                lines.append(f"  {key.replace('_', ' ')}: " + "  ".join(f"{k} {v:g}" for k, v in s[key].items()))
        if s["unused_classes"]:
            lines.append("  unused classes: " + ", ".join(s["unused_classes"]))
        for severity in SEVERITIES:
            found = self.by_severity(severity)
            if found:
                lines.append(f"{_HEADINGS[severity]}: {len(found)}")
                lines.extend(_listing(found, None if severity == "error" else _LISTED_PER_CODE))
        return "\n".join(lines)


def inspect(
    data: str | Path | Dataset,
    format: str | None = None,  # noqa: A002 - the public argument name
    split: str | None = None,
    *,
    classes: list[str] | None = None,
    images: str | Path | None = None,
    decode: bool = False,
) -> InspectionReport:
    """Check everything a fit would read and report every problem, not just the first.

    Args:
        data: a dataset path (as for :class:`Dataset`) or a Dataset.
        format, split, classes, images: as for :class:`Dataset` (paths only).
        decode: decode every image fully (slow) instead of reading headers only (fast; a
            JPEG or PNG missing its end marker is still decoded to check it).

    Returns:
        The report: ``ok``, ``problems``, ``stats``, ``dataset``; ``print(report)`` shows it.

    >>> report = inspect("datasets/raccoon", split="train")  # doctest: +SKIP
    >>> report.ok, report.stats["images"]                     # doctest: +SKIP
    (True, 144)
    """
    if isinstance(data, Dataset):
        if any(v is not None for v in (format, split, classes, images)):
            raise InputError("format, split, classes and images apply to a path, not to a Dataset")
        dataset, source = data, _describe(data.root, data.format, None)
    else:
        source = _describe(data, format, split)
        try:
            dataset = Dataset(data, format=format, split=split, classes=classes, images=images, on_error="skip")
        except DatasetError as exc:
            found = exc.problems or [Problem("error", "dataset_unreadable", str(data), str(exc))]
            return InspectionReport(source, [replace(p, action="nothing read") for p in found], _stats(None))
        source = _describe(data, dataset.format, split)
    problems = list(dataset.problems)
    kept = _check_records(dataset, decode, problems)
    if len(kept) != len(dataset) or any(a is not b for a, b in zip(kept, dataset.records)):
        dataset = Dataset.from_records(kept, dataset.classes, root=dataset.root, format=dataset.format,
                                       problems=[p for p in problems if p.severity == "error"])
    stats = _stats(dataset)
    problems += [Problem("warning", "unused_class", str(dataset.root or source), f"class {name!r} has no boxes",
                         action="kept: its class id stays") for name in stats["unused_classes"]]
    return InspectionReport(source, problems, stats, dataset)


def check_dataset(dataset: Dataset, on_error: str = DEFAULT_ON_ERROR, decode: bool = False) -> Dataset:
    """Inspect ``dataset`` before training or evaluating; leave out its bad items, or raise.

    Args:
        dataset: the data about to be used.
        on_error: what the errors found do (:mod:`detect_automl.data.policy`): ``"auto"``
            (default): the bad images and boxes are left out, unless the problem looks
            systematic (over 10 % of the images or boxes, or all), which raises; ``"raise"``:
            any error raises; ``"skip"``: left out whatever the share. Leaving out warns once,
            listing each item. Items the Dataset already left out while reading are listed
            again, not judged again.
        decode: decode every image (slow) instead of reading headers.

    Returns:
        ``dataset`` itself when nothing is dropped, else a copy without the bad items; either
        way its ``problems`` list every item left out (the files on disk are never changed).

    Raises:
        DatasetError: ``on_error`` says the errors found must stop the call (the message is the
            report; ``.problems`` has every problem).
    """
    check_on_error(on_error)
    report = inspect(dataset, decode=decode)
    new = [p for p in report.errors if p not in dataset.problems]
    reason = refusal(on_error, new, report.stats["images"], report.stats["boxes"])
    if reason:
        raise DatasetError(f"{reason}:\n{report}", problems=report.problems)
    if report.errors:
        counts = skipped_counts(report.errors)
        warnings.warn(f"{report.source}: {len(report.errors)} bad item(s) left out ({counts['num_images_skipped']} "
                      f"image(s), {counts['num_boxes_skipped']} box(es); on_error={on_error!r}; the files are "
                      f"unchanged):\n{drop_list(report.errors)}", UserWarning, stacklevel=3)
    counts = report.counts()
    if counts["fixed"] or counts["warning"]:
        logger.log(logging.WARNING if counts["warning"] else logging.INFO,
                   "%s: %d problem(s) fixed on load, %d warning(s); detect_automl.inspect() lists them",
                   report.source, counts["fixed"], counts["warning"])
    return report.dataset if report.dataset is not None else dataset


def _describe(path: str | Path | None, format: str | None, split: str | None) -> str:  # noqa: A002
    where = str(path) if path is not None else "records in memory"
    details = [d for d in (format, f"split {split!r}" if split else None) if d]
    return where + (f" ({', '.join(details)})" if details else "")


def _listing(problems: list[Problem], limit: int | None) -> list[str]:
    """Indented lines, grouped by code, at most ``limit`` per code (None: all)."""
    codes = list(dict.fromkeys(p.code for p in problems))
    lines = []
    for code in codes:
        group = [p for p in problems if p.code == code]
        shown = group if limit is None else group[:limit]
        lines.extend(f"  {code}: {p}" for p in shown)
        if len(group) > len(shown):
            lines.append(f"  ... and {len(group) - len(shown)} more {code} (InspectionReport.problems has all)")
    return lines


def _check_records(dataset: Dataset, decode: bool, problems: list[Problem]) -> list[ImageRecord]:
    """Check every record; return them as ``on_error="skip"`` keeps them (problems appended)."""
    kept: list[ImageRecord] = []
    by_id: dict[str, ImageRecord] = {}
    by_path: dict[Path, ImageRecord] = {}
    for rec in dataset.records:
        duplicate = _duplicate(rec, by_id, by_path)
        if duplicate is not None:
            problems.append(duplicate)
            continue
        checked = _check_record(rec, dataset.classes, decode, problems)
        if checked is not None:
            kept.append(checked)
    return kept


def _duplicate(rec: ImageRecord, by_id: dict[str, ImageRecord], by_path: dict[Path, ImageRecord]) -> Problem | None:
    """A duplicate_id / duplicate_file error when an earlier record has the same id or image file."""
    where = rec.source or str(rec.path)
    if rec.image_id and rec.image_id in by_id:
        first = by_id[rec.image_id]
        return Problem("error", "duplicate_id", where, f"image id {rec.image_id!r} is used twice (first in "
                       f"{first.source or first.path})", rec.image_id, "later record dropped", "image")
    if rec.path in by_path:
        first = by_path[rec.path]
        return Problem("error", "duplicate_file", where, f"image file {rec.path} is used by two records "
                       f"({first.name!r} and {rec.name!r})", rec.name, "later record dropped", "image")
    by_id.setdefault(rec.image_id, rec)
    by_path[rec.path] = rec
    return None


def _check_record(rec: ImageRecord, classes: list[str], decode: bool, problems: list[Problem]) -> ImageRecord | None:
    """One record's problems; returns it as kept (None: image dropped; a copy: boxes dropped)."""
    try:
        info = probe_image(rec.path, decode)
    except DatasetError as exc:
        found = exc.problems or [Problem("error", "image_unreadable", str(rec.path), str(exc))]
        problems.extend(replace(p, record=rec.name, action="image dropped", drops="image") for p in found)
        return None
    problems.extend(_image_notes(rec, info))
    keep = _check_boxes(rec, classes, info, problems)
    return rec if keep.all() else rec.with_boxes(keep)


def _image_notes(rec: ImageRecord, info: ImageInfo) -> list[Problem]:
    """Fixed / warning / info problems about the image file and its annotated size."""
    image, name = str(rec.path), rec.name
    notes = []
    if info.pixels:
        alpha = " (its alpha channel is dropped)" if "alpha" in info.pixels or "RGBA" in info.pixels else ""
        notes.append(Problem("fixed", "mode_converted", image, f"{info.pixels} image{alpha}", name,
                             "converted to 8-bit RGB on load"))
    expected = IMAGE_FORMATS.get(rec.path.suffix.lower())
    if expected and expected != info.format:
        notes.append(Problem("info", "format_mismatch", image, f"{info.format} data in a {rec.path.suffix} file",
                             name, "decoded by content"))
    odd = _odd_name(rec.path.name)
    if odd:
        notes.append(Problem("info", "file_name", image, f"file name has {odd}", name, "loads as is"))
    return notes + _size_notes(rec, info)


def _odd_name(name: str) -> str:
    """What in a file name may trip other tools (non-ASCII, spaces, upper-case extension), or ""."""
    odd = []
    if not name.isascii():
        odd.append("non-ASCII characters")
    if any(c.isspace() for c in name):
        odd.append("spaces")
    suffix = Path(name).suffix
    if suffix != suffix.lower():
        odd.append("an upper-case extension")
    return ", ".join(odd)


def _size_notes(rec: ImageRecord, info: ImageInfo) -> list[Problem]:
    """EXIF orientation and annotated size versus the size the image decodes to."""
    where, name = rec.source or str(rec.path), rec.name
    actual, declared = (info.width, info.height), (rec.width, rec.height)
    size = f"{info.width}x{info.height}"
    notes = []
    if info.orientation != 1:
        stored = (info.height, info.width) if info.orientation in (5, 6, 7, 8) else actual
        hint = (f"; but the annotated size {rec.width}x{rec.height} is the stored, un-rotated one: check the "
                "boxes were drawn on the displayed image" if declared == stored != actual else "")
        notes.append(Problem("warning", "exif_rotated", str(rec.path), f"EXIF orientation {info.orientation}: the "
                             f"image is rotated or flipped on load, to {size}; its boxes are taken to be in that "
                             f"displayed frame{hint}", name, "rotated on load"))
        if hint:
            return notes
    if rec.width <= 0 or rec.height <= 0:
        notes.append(Problem("info", "size_unknown", where, f"no annotated image size ({rec.width}x{rec.height})",
                             name, f"the image's {size} is used"))
    elif declared != actual:
        notes.append(Problem("fixed", "size_mismatch", where, f"annotated size {rec.width}x{rec.height} differs "
                             f"from the image's {size}", name, "the image's size is used"))
    return notes


def _check_boxes(rec: ImageRecord, classes: list[str], info: ImageInfo, problems: list[Problem]) -> np.ndarray:
    """Check each box against the real image size; return the mask of boxes kept."""
    boxes, width, height = rec.boxes, info.width, info.height
    usable = sanitize_boxes(boxes, rec.labels, width, height)[2]
    with np.errstate(invalid="ignore"):
        over = np.max([-boxes[:, 0], -boxes[:, 1], boxes[:, 2] - width, boxes[:, 3] - height], axis=0)
    keep = np.ones(len(boxes), dtype=bool)
    for k, box in enumerate(boxes):
        found = _box_problem(box, bool(usable[k]), float(over[k]), width, height)
        if found is None:
            continue
        severity, code, text, action = found
        label = int(rec.labels[k])
        name = classes[label] if 0 <= label < len(classes) else f"label {label}"
        coords = "[" + ", ".join(f"{v:g}" for v in box.tolist()) + "]"
        problems.append(Problem(severity, code, rec.source or str(rec.path), f"image {rec.name}: box #{k} ({name}) "
                                f"{coords} {text}", rec.name, action, "box" if severity == "error" else ""))
        keep[k] = severity != "error"
    return keep


def _box_problem(box: np.ndarray, usable: bool, over: float, width: int, height: int) -> tuple[str, ...] | None:
    """``(severity, code, text, action)`` for one xyxy box in a ``width`` x ``height`` image, or None."""
    x1, y1, x2, y2 = box.tolist()
    size = f"{width}x{height}"
    if not np.isfinite(box).all():
        return "error", "box_nan", "has a non-finite coordinate", "box dropped"
    if x2 < x1 or y2 < y1:
        return "error", "box_inverted", "has negative width or height (swapped corners?)", "box dropped"
    if x2 == x1 or y2 == y1:  # a point or a line, e.g. BCCD's two: no object to learn, not a data bug
        return "fixed", "box_empty", "has zero area", "left out of training and evaluation"
    if x1 >= width or y1 >= height or x2 <= 0 or y2 <= 0:
        return "error", "box_outside", f"lies outside the {size} image", "box dropped"
    if over > CLIP_TOLERANCE:
        text = f"reaches {over:g} px past the edge of the {size} image (more than the {CLIP_TOLERANCE:g} px clipped)"
        return "error", "box_outside", text, "box dropped"
    if not usable:
        return "fixed", "box_empty", f"is under {MIN_BOX_SIDE:g} px wide or high in the {size} image", \
            "left out of training and evaluation"
    if over > 0:
        return "fixed", "box_clipped", f"reaches {over:g} px past the edge of the {size} image", "clipped to the image"
    return None


def _stats(dataset: Dataset | None) -> dict[str, Any]:
    """Counts and box-size percentiles (pixels) of a dataset (zeros for None)."""
    if dataset is None:
        return {"images": 0, "boxes": 0, "images_without_boxes": 0, "boxes_per_class": {}, "unused_classes": [],
                "box_width_px": {}, "box_height_px": {}}
    counts = dataset.stats()
    boxes = np.concatenate([r.boxes for r in dataset.records]) if len(dataset) else np.zeros((0, 4), np.float32)
    return {
        "images": counts["num_images"],
        "boxes": counts["num_boxes"],
        "images_without_boxes": counts["images_without_boxes"],
        "boxes_per_class": counts["boxes_per_class"],
        "unused_classes": [name for name, n in counts["boxes_per_class"].items() if n == 0],
        "box_width_px": _percentiles(boxes[:, 2] - boxes[:, 0]),
        "box_height_px": _percentiles(boxes[:, 3] - boxes[:, 1]),
    }


def _percentiles(values: np.ndarray) -> dict[str, float]:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return {}
    points = np.percentile(values, [0, 5, 50, 95, 100])
    return {k: round(float(v), 1) for k, v in zip(("min", "p5", "p50", "p95", "max"), points)}
