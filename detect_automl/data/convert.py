"""Convert a dataset between Pascal VOC and COCO without losing anything the records hold.

Boxes, labels, ``difficult`` and ``iscrowd`` flags and images without boxes all survive; images are
copied with their names. Ids: a VOC id is the annotation file name, a COCO id an integer, so COCO
-> VOC names each annotation after its image file (``JPEGImages/x.jpg`` <-> ``Annotations/x.xml``,
the VOC convention) and VOC -> COCO keeps integer ids, else numbers the images from 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from ..errors import InputError
from .dataset import Dataset
from .voc import write_voc

__all__ = ["convert"]

_FORMATS = ("voc", "coco")


def convert(
    data: str | Path,
    to: str,
    output: str | Path,
    *,
    format: str | None = None,
    splits: Sequence[str] | None = None,
) -> Path:
    """Write the dataset at ``data`` in format ``to`` under ``output``.

    Args:
        data: a VOC root, a COCO instances ``.json`` or a COCO root (see :class:`Dataset`).
        to: ``"voc"`` (``Annotations/``, ``JPEGImages/``, ``ImageSets/Main/<split>.txt``) or
            ``"coco"`` (``annotations/instances_<split>.json`` and ``images/``).
        output: the output folder; not the source's own folder (its files would be overwritten).
        format: the source format, None to detect it.
        splits: the splits to convert, each to its own split file; None converts every image
            (COCO output: ``instances_all.json``; VOC output: no split file).

    Returns:
        ``output``.

    Raises:
        InputError: an unknown format, or ``output`` is the source's folder.
        DatasetError: the source cannot be read or written, or has a bad item (a conversion
            leaves nothing out; :func:`detect_automl.inspect` lists them).

    >>> convert("datasets/raccoon", "coco", "raccoon_coco", splits=["train", "test"])  # doctest: +SKIP
    """
    to = str(to).lower()
    if to not in _FORMATS:
        raise InputError(f"to must be one of {_FORMATS}, got {to!r}")
    output = Path(output)
    source = Path(data).resolve()
    if output.resolve() in ((source,) if source.is_dir() else source.parents[:2]):  # a json: its folder or root
        raise InputError(f"output {output} is the folder of the source dataset {data}: choose another one")
    for split in splits or [None]:
        ds = Dataset(data, format=format, split=split, on_error="raise")  # a conversion loses nothing, or stops
        if to == "coco":
            ds.to_coco(output / "annotations" / f"instances_{split or 'all'}.json")
        else:
            records = ds.records if ds.format == "voc" else [replace(r, image_id=r.path.stem) for r in ds.records]
            write_voc(ds.classes, records, output, split=split)
    return output
