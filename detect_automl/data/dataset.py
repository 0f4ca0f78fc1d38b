"""Dataset: class names plus a list of ImageRecord, read from Pascal VOC or COCO."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..errors import DatasetError, InputError
from ._files import check_classes, check_labels
from .coco import read_coco, write_coco
from .policy import DEFAULT_ON_ERROR, check_on_error, refusal
from .problems import Problem, drop_list, report_error
from .records import ImageRecord, pack_records, unpack_records
from .voc import read_voc, write_voc

__all__ = ["Dataset"]

logger = logging.getLogger(__name__)

_FORMATS = ("voc", "coco")
_ON_UNKNOWN = ("raise", "drop")


class Dataset:
    """Class names and image records of one detection dataset (or one split of it).

    Args:
        path: a VOC root, a COCO instances ``.json`` file, or a COCO root holding
            ``annotations/instances_<split>.json`` and ``images/``.
        format: ``"voc"``, ``"coco"`` or None to detect it from the layout (logged).
        split: VOC ``ImageSets/Main/<split>.txt`` or COCO ``instances_<split>.json``.
        classes: class names in id order. VOC: default is the sorted union over every annotation
            file under the root; a name outside the list is an error. COCO: default is every
            declared category in id order; given, the labels are re-indexed into it by name and
            a used category outside it is an error.
        images: COCO only: the folder ``file_name`` is relative to.
        on_error: what a bad annotation file, entry, object or missing image does:
            ``"auto"`` (default): it is left out (a malformed file or missing image drops that
            image, a bad object drops that box), listed in ``problems`` and in a logged warning,
            unless the problem looks systematic (over 10 % of the images or boxes bad, or all:
            see :mod:`detect_automl.data.policy`), which raises a DatasetError listing them all;
            ``"raise"``: any of them raises that DatasetError; ``"skip"``: left out whatever the
            share. Folders or files that cannot be read at all (a COCO JSON) raise under all three.

    Attributes:
        classes: class names; ``records[i].labels`` index into it.
        records: one ImageRecord per image (images without boxes included).
        root: the path the dataset was read from (None for ``from_records``).
        format: ``"voc"``, ``"coco"`` or None.
        problems: the errors whose items were left out of ``records`` (while reading, or by
            :func:`~detect_automl.data.checks.check_dataset`), in the order found; every
            inspection report of this dataset lists them too.

    >>> ds = Dataset("datasets/raccoon", split="train")  # doctest: +SKIP
    >>> train, val = ds.split(val_fraction=0.2, seed=0)  # doctest: +SKIP
    """

    def __init__(
        self,
        path: str | Path,
        format: str | None = None,  # noqa: A002 - the public argument name
        split: str | None = None,
        classes: Sequence[str] | None = None,
        images: str | Path | None = None,
        on_error: str = DEFAULT_ON_ERROR,
    ) -> None:
        path = Path(path)
        check_on_error(on_error)
        if not path.exists():
            raise DatasetError(f"{path}: dataset path not found")
        format = _detect_format(path, split) if format is None else str(format).lower()
        problems: list[Problem] = []
        if format == "voc":
            if images is not None:
                raise InputError("images= applies to COCO datasets only (VOC images live in JPEGImages/)")
            names, records = read_voc(path, split=split, classes=classes, problems=problems)
        elif format == "coco":
            names, records, _ = read_coco(_coco_json(path, split), images=images, problems=problems)
            if classes is not None:  # boxes of other classes count as errors under the on_error policy below
                relabelled = Dataset.from_records(records, names).with_classes(classes, on_unknown="drop")
                names, records = relabelled.classes, relabelled.records
                problems.extend(relabelled.problems)
        else:
            raise InputError(f"format must be one of {_FORMATS} or None, got {format!r}")
        reason = refusal(on_error, problems, len(records), sum(len(r.boxes) for r in records))
        if reason:
            raise DatasetError(_read_errors(path, problems, reason), problems=problems)
        if problems:
            logger.warning("%s: %d bad item(s) left out while reading (on_error=%r; the files are unchanged, "
                           "Dataset.problems lists them):\n%s", path, len(problems), on_error, drop_list(problems))
        self.classes: list[str] = names
        self.records: list[ImageRecord] = records
        self.root: Path | None = path
        self.format: str | None = format
        self.problems: list[Problem] = problems

    @classmethod
    def from_records(
        cls,
        records: Sequence[ImageRecord],
        classes: Sequence[str],
        root: str | Path | None = None,
        format: str | None = None,  # noqa: A002
        problems: Sequence[Problem] = (),
    ) -> Dataset:
        """Build a Dataset from records already in memory (labels must index into ``classes``).

        ``problems``: the errors whose items were left out of ``records``, if any (the attribute).
        """
        classes = check_classes(classes)
        records = list(records)
        check_labels(records, len(classes))
        ds = cls.__new__(cls)
        ds.classes, ds.records = classes, records
        ds.root = Path(root) if root is not None else None
        ds.format = format
        ds.problems = list(problems)
        return ds

    def __getstate__(self) -> dict:
        """Pickled with its records packed into flat arrays (:func:`pack_records`): compact and
        quick to unpickle in every Ray trial."""
        return {**self.__dict__, "records": pack_records(self.records)}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update({**state, "records": unpack_records(state["records"])})

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> ImageRecord:
        return self.records[index]

    def __iter__(self) -> Iterator[ImageRecord]:
        return iter(self.records)

    def __repr__(self) -> str:
        num_boxes = sum(len(r.boxes) for r in self.records)
        return (
            f"Dataset(format={self.format!r}, images={len(self)}, boxes={num_boxes}, "
            f"classes={self.classes}, root={str(self.root) if self.root else None!r})"
        )

    def split(self, val_fraction: float = 0.1, seed: int = 0) -> tuple[Dataset, Dataset]:
        """Split into ``(train, val)`` at random, deterministically for a given ``seed``.

        The same seed gives the same split whatever was called before; each part keeps the
        original record order, and with 2 or more images each part gets at least one.

        Raises:
            InputError: ``val_fraction`` is not in (0, 1).
        """
        if not 0.0 < val_fraction < 1.0:
            raise InputError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
        n = len(self)
        num_val = min(max(int(round(n * val_fraction)), 1), n - 1) if n >= 2 else 0
        order = np.random.default_rng(seed).permutation(n)
        val_idx = np.sort(order[:num_val])
        train_idx = np.sort(order[num_val:])
        return self.subset(train_idx.tolist()), self.subset(val_idx.tolist())

    def subset(self, indices_or_n: int | Sequence[int]) -> Dataset:
        """A Dataset of the first ``n`` records (int) or of the records at the given indices."""
        if isinstance(indices_or_n, (int, np.integer)):
            if indices_or_n < 0:
                raise InputError(f"subset size must be >= 0, got {indices_or_n}")
            chosen = self.records[: int(indices_or_n)]
        else:
            try:
                chosen = [self.records[int(i)] for i in indices_or_n]
            except (IndexError, TypeError, ValueError) as exc:
                raise InputError(f"subset indices must be integers below {len(self)} ({exc})") from None
        return Dataset.from_records(chosen, self.classes, root=self.root, format=self.format)

    def with_classes(self, names: Sequence[str], on_unknown: str = "raise") -> Dataset:
        """A new Dataset whose labels index ``names``, matched by class name (records are not changed).

        Args:
            names: the new class list, e.g. a model's classes; it may hold classes this dataset
                lacks, and order them differently.
            on_unknown: what a box whose class is not in ``names`` does: ``"raise"`` (a
                DatasetError naming its file, image and class: ``evaluate`` matching a dataset
                to a model) or ``"drop"`` (the box is left out, listed as an ``unknown_class``
                error in the new Dataset's ``problems``, and one warning is logged: reading a
                COCO file with ``classes=``, whose ``on_error`` policy then weighs them).

        Returns:
            A Dataset with the same images, root, format and ``problems`` (plus the dropped boxes).

        Raises:
            DatasetError: ``on_unknown="raise"`` and a box's class is not in ``names``, or
                ``names`` repeats a name.
            InputError: ``on_unknown`` is neither ``"raise"`` nor ``"drop"``.

        >>> ds = Dataset("datasets/fruits_nuts", split="val")  # doctest: +SKIP
        >>> ds.with_classes(["hazelnut", "date", "fig", "walnut"]).classes  # doctest: +SKIP
        ['hazelnut', 'date', 'fig', 'walnut']
        """
        if on_unknown not in _ON_UNKNOWN:
            raise InputError(f"on_unknown must be one of {_ON_UNKNOWN}, got {on_unknown!r}")
        names = check_classes(names)
        position = {name: k for k, name in enumerate(names)}
        mapping = np.array([position.get(name, -1) for name in self.classes], dtype=np.int64)
        dropped: list[Problem] | None = [] if on_unknown == "drop" else None
        records = []
        for rec in self.records:
            known = mapping[rec.labels] >= 0
            for k in np.flatnonzero(~known):
                report_error(dropped, "unknown_class", rec.source or rec.path, f"image {rec.name}: box #{k}: class "
                             f"{self.classes[int(rec.labels[k])]!r} is not in classes {names}", rec.name,
                             "box skipped", "box")
            kept = rec if known.all() else rec.with_boxes(known)
            records.append(replace(kept, labels=mapping[kept.labels]))
        if dropped:
            logger.warning("%d box(es) of classes not in %s left out, e.g. %s (Dataset.problems lists them)",
                           len(dropped), names, dropped[0])
        return Dataset.from_records(records, names, root=self.root, format=self.format,
                                    problems=[*self.problems, *(dropped or ())])

    def stats(self) -> dict:
        """Counts: ``num_images``, ``num_boxes``, ``boxes_per_class`` {name: n}, ``images_without_boxes``."""
        labels = np.concatenate([r.labels for r in self.records]) if self.records else np.zeros(0, np.int64)
        counts = np.bincount(labels, minlength=len(self.classes))
        return {
            "num_images": len(self),
            "num_boxes": int(labels.size),
            "boxes_per_class": {name: int(c) for name, c in zip(self.classes, counts)},
            "images_without_boxes": sum(1 for r in self.records if len(r.boxes) == 0),
        }

    def to_voc(self, root: str | Path, split: str | None = None) -> None:
        """Write as Pascal VOC under ``root`` (see :func:`detect_automl.data.voc.write_voc`)."""
        write_voc(self.classes, self.records, root, split=split)

    def to_coco(self, json_path: str | Path, images_dir: str | Path | None = None) -> None:
        """Write as a COCO instances file (see :func:`detect_automl.data.coco.write_coco`)."""
        write_coco(self.classes, self.records, json_path, images_dir=images_dir)


def _detect_format(path: Path, split: str | None) -> str:
    """Guess the layout of ``path`` and log what was found."""
    if path.is_file() and path.suffix.lower() == ".json":
        found = "coco"
    elif path.is_dir() and (path / "Annotations").is_dir():
        found = "voc"
    elif path.is_dir() and (path / "annotations").is_dir():
        found = "coco"
    else:
        raise DatasetError(
            f"{path}: cannot detect the dataset format: looked for a COCO .json file, a VOC folder "
            "with Annotations/, or a COCO folder with annotations/instances_<split>.json; "
            "pass format='voc' or format='coco'"
        )
    logger.info("%s: detected %s dataset%s", path, found.upper(), f" (split {split!r})" if split else "")
    return found


def _coco_json(path: Path, split: str | None) -> Path:
    """The instances file for ``path``: itself, or ``path/annotations/instances_<split>.json``."""
    if path.is_file():
        return path
    available = sorted(p.stem.removeprefix("instances_") for p in (path / "annotations").glob("instances_*.json"))
    if split is None:
        raise DatasetError(f"{path}: a COCO folder needs split= (instances_<split>.json found for: {available})")
    json_path = path / "annotations" / f"instances_{split}.json"
    if not json_path.is_file():
        raise DatasetError(f"{json_path}: not found (splits present: {available or 'none'})")
    return json_path


def _read_errors(path: Path, problems: list[Problem], reason: str) -> str:
    """The message of a DatasetError for problems found while reading ``path`` (``reason``: the policy's)."""
    if len(problems) == 1:
        return f"{problems[0].text}\n({reason})"
    lines = "\n".join(f"  {p.text}" for p in problems)
    return f"{path}: {len(problems)} problems in the annotations ({reason}; detect_automl.inspect lists all):\n{lines}"
