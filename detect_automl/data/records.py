"""The one internal record type every dataset adapter produces."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

__all__ = ["ImageRecord", "pack_records", "unpack_records", "gc_paused"]


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
        iscrowd: bool (N,), COCO ``iscrowd`` flag (ignored by evaluation, never a training target).
        image_id: the id in the source (VOC file stem, COCO image id as a string).
        source: the annotation file this record came from, for error messages.
        area: float32 (N,), the object's area from the file (COCO ``area``: the segmentation area),
            which decides COCO's small/medium/large buckets; NaN where unknown (VOC, no ``area``),
            meaning the box area (see :attr:`object_area`).
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
    area: np.ndarray = field(default_factory=lambda: _empty((0,), np.float32))

    def __post_init__(self) -> None:
        if not (isinstance(self.path, Path) and self.path.is_absolute()):
            self.path = Path(self.path).absolute()  # trials run in other working directories
        if not _is(self.boxes, np.float32, 2) or self.boxes.shape[1] != 4:
            self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        n = len(self.boxes)
        if not _is(self.labels, np.int64, 1) or len(self.labels) != n:
            self.labels = np.asarray(self.labels, dtype=np.int64).reshape(n)
        self.difficult = _per_box(self.difficult, n, bool, False)
        self.iscrowd = _per_box(self.iscrowd, n, bool, False)
        self.area = _per_box(self.area, n, np.float32, np.nan)

    @property
    def ignore(self) -> np.ndarray:
        """bool (N,): boxes that evaluation treats as "don't care" (difficult or crowd)."""
        return self.difficult | self.iscrowd

    @property
    def object_area(self) -> np.ndarray:
        """float32 (N,): the area COCO evaluates each box by: ``area`` where known, else width x height."""
        boxes = self.boxes.astype(np.float64)
        box_area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        return np.where(np.isnan(self.area), box_area, self.area).astype(np.float32)

    @property
    def name(self) -> str:
        """A short name for messages: the image id, or the file name."""
        return self.image_id or self.path.name

    def with_boxes(self, keep: np.ndarray) -> ImageRecord:
        """A copy keeping only the boxes (and their labels, flags and areas) where ``keep`` is True."""
        keep = np.asarray(keep, dtype=bool)
        return replace(self, boxes=self.boxes[keep], labels=self.labels[keep], difficult=self.difficult[keep],
                       iscrowd=self.iscrowd[keep], area=self.area[keep])


def _is(values, dtype, ndim: int) -> bool:
    """Already an array of this dtype and rank (no conversion: a COCO-sized dataset builds 100k+ records)."""
    return type(values) is np.ndarray and values.dtype == dtype and values.ndim == ndim


def _per_box(values, n: int, dtype, missing) -> np.ndarray:
    """``values`` as a (n,) array of ``dtype``; empty means ``missing`` for every box."""
    if _is(values, dtype, 1) and len(values) == n:
        return values
    arr = np.asarray(values, dtype=dtype).reshape(-1)
    return np.full(n, missing, dtype=dtype) if arr.size == 0 and n else arr.reshape(n)


def pack_records(records: list[ImageRecord]) -> dict:
    """Records as a few flat arrays: what a Dataset pickles to (each Ray trial unpickles it).

    A COCO-sized list of records pickles record by record to ~44 MB and unpickles in seconds;
    packed, its boxes, labels, flags and areas are five concatenated arrays with offsets, and
    its folders and annotation files are stored once each.
    """
    folders, sources = {}, {}
    places = [(folders.setdefault(str(r.path.parent), len(folders)), sources.setdefault(r.source, len(sources)))
              for r in records]
    counts = np.array([len(r.boxes) for r in records], dtype=np.int64)
    joined = {name: (np.concatenate([getattr(r, name) for r in records]) if records else empty)
              for name, empty in (("boxes", np.zeros((0, 4), np.float32)), ("labels", np.zeros(0, np.int64)),
                                  ("difficult", np.zeros(0, bool)), ("iscrowd", np.zeros(0, bool)),
                                  ("area", np.zeros(0, np.float32)))}
    return {"names": [r.path.name for r in records], "folders": list(folders), "sources": list(sources),
            "places": np.array(places, dtype=np.int32).reshape(-1, 2), "counts": counts,
            "sizes": np.array([(r.width, r.height) for r in records], dtype=np.int64).reshape(-1, 2),
            "image_ids": [r.image_id for r in records], **joined,
            "labels": joined["labels"].astype(np.int32)}  # class indexes: 4 bytes are plenty


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a dataset's records are built (a ``with``
    block, or ``@gc_paused()`` on a function that builds them).

    Parsing a COCO-sized file and building its records allocate millions of dicts, lists and
    arrays, none of them in a reference cycle, and every 700 allocations start a collection that
    walks the young objects; the oldest generation's passes walk every object the process holds,
    and torch's import alone holds ~370k. Paused, ``json.loads`` of a train2017-sized file takes
    1.7 s instead of 3.8 s beside torch (benchmarks/RESULTS.md, "COCO 2017 scale"). Nothing
    built here is cyclic, so nothing is left for the collector when it resumes.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@gc_paused()
def unpack_records(packed: dict) -> list[ImageRecord]:
    """The records :func:`pack_records` packed, equal to the originals."""
    folders = [Path(f) for f in packed["folders"]]
    ends = np.cumsum(packed["counts"]).tolist()
    starts = [0, *ends[:-1]]
    columns = [packed["boxes"], packed["labels"].astype(np.int64), packed["difficult"], packed["iscrowd"],
               packed["area"]]
    records = []
    for k, (name, (folder, source), (width, height), image_id) in enumerate(
            zip(packed["names"], packed["places"].tolist(), packed["sizes"].tolist(), packed["image_ids"])):
        boxes, labels, difficult, iscrowd, area = (c[starts[k]:ends[k]] for c in columns)
        records.append(ImageRecord(folders[folder] / name, width, height, boxes, labels, difficult, iscrowd,
                                   image_id, packed["sources"][source], area))
    return records
