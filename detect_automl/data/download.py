"""Download and prepare public datasets: Pascal VOC 2007/2012, COCO 2017 (or some of its categories), fruit.

Each dataset is prepared once under ``root``: archives go to ``root/downloads/`` (resumed when
interrupted, checksummed), are extracted into a hidden work folder, laid out as our readers take
them and only then renamed to ``root/<name>``. A marker file in that folder (for fruit: every file
matching the shipped manifest) says the preparation finished, so a later call returns at once,
without the network.

Why not torchvision's ``download_url`` / ``check_integrity`` or ``pooch`` (checked against
torchvision 0.29.1 and pooch 1.8.2): neither resumes an interrupted download (torchvision writes
into the final file name, so a cut transfer of an archive without a checksum looks finished;
pooch downloads to a temporary file it deletes on failure), and COCO train2017 is 18 GB. torchvision
also checks md5 only (the fruit manifest is sha256), retries a failed ``https`` URL over plain
``http``, has no timeout and raises a bare RuntimeError; pooch would be a new dependency (with
``requests``). So :mod:`detect_automl.data._fetch` keeps its ~150 lines: HTTP Range resume into a
``.part`` file, md5/sha256 checks, and a DatasetError that says how to fetch a file by hand.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import shutil
from collections.abc import Callable, Sequence
from functools import partial
from importlib import resources
from pathlib import Path

import numpy as np

from ..errors import DatasetError, InputError
from ._fetch import Archive, extract, fetch, file_digest
from .coco import read_coco, write_coco
from .dataset import Dataset
from .records import ImageRecord

__all__ = ["ARCHIVES", "Archive", "download_dataset"]

logger = logging.getLogger(__name__)

_MARKER = ".detect_automl_prepared.json"
_VOC_URL = "https://thor.robots.ox.ac.uk/pascal/VOC"  # the host torchvision 0.29 downloads from
_COCO_URL = "http://images.cocodataset.org"
_COCO_SPLITS = ("train2017", "val2017")
_FRUIT_COMMIT = "142200ebe97be62981248aa0ffeb7c82f4def95d"
_FRUIT_VAL_SIZE, _FRUIT_SEED = 24, 20261124  # the val rule of the reference copy (its SOURCE.md)

# Checksums: VOC md5s as in torchvision 0.29.1 torchvision/datasets/voc.py (DATASET_YEAR_DICT);
# PaddleDetection ppdet/utils/download.py (DATASETS["voc"]) lists the same three. COCO md5s as in
# PaddleDetection ppdet/utils/download.py (DATASETS["coco"], commit 005e0ff8), the same values as in
# several other public download scripts. GitHub builds the fruit zip on request, so no stable
# checksum exists: the prepared files are checked against manifests/fruit.json instead.
ARCHIVES: dict[str, tuple[Archive, ...]] = {
    "voc2007": (
        Archive(f"{_VOC_URL}/voc2007/VOCtrainval_06-Nov-2007.tar", "VOCtrainval_06-Nov-2007.tar",
                "md5:c52e279531787c972589f7e41ab4ae64"),
        Archive(f"{_VOC_URL}/voc2007/VOCtest_06-Nov-2007.tar", "VOCtest_06-Nov-2007.tar",
                "md5:b6e924de25625d8de591ea690078ad9f"),
    ),
    "voc2012": (
        Archive(f"{_VOC_URL}/voc2012/VOCtrainval_11-May-2012.tar", "VOCtrainval_11-May-2012.tar",
                "md5:6cd6e144f989b92b3379bac3b3de84fd"),
    ),
    "coco2017": (
        Archive(f"{_COCO_URL}/annotations/annotations_trainval2017.zip", "annotations_trainval2017.zip",
                "md5:f4bbac642086de4f52a3fdda2de5fa2c"),
        Archive(f"{_COCO_URL}/zips/val2017.zip", "val2017.zip", "md5:442b8da7639aecaf257c1dceb8ba8c80"),
        Archive(f"{_COCO_URL}/zips/train2017.zip", "train2017.zip", "md5:cced6f7f71b7629ddf16f17bbcfab6b2"),
    ),
    "fruit": (
        Archive(f"https://codeload.github.com/duhee01/fruit_object_detection/zip/{_FRUIT_COMMIT}",
                f"fruit_object_detection-{_FRUIT_COMMIT}.zip", None),
    ),
}
"""Dataset name -> the archives it is prepared from (replace an entry to use a mirror)."""


def download_dataset(
    name: str,
    root: str | Path = ".",
    *,
    categories: Sequence[str] | None = None,
    keep_archives: bool = False,
) -> Path:
    """Download and prepare a public dataset; return the folder to read it from.

    ``voc2007`` (trainval + test), ``voc2012`` (trainval) and ``fruit`` become VOC folders
    (``Annotations/``, ``JPEGImages/``, ``ImageSets/Main/``); ``coco2017`` becomes a COCO folder
    (``annotations/instances_{train,val}2017.json``, ``images/``). A dataset already prepared under
    ``root`` is returned without the network.

    Args:
        name: ``"voc2007"``, ``"voc2012"``, ``"coco2017"`` or ``"fruit"``.
        root: where ``downloads/`` and the prepared ``<name>/`` folder go.
        categories: ``coco2017`` only: also write ``root/coco2017-<names>/``, holding only these
            categories (ids 1..K in COCO order, boxes only) and the images containing them.
        keep_archives: keep the archives in ``root/downloads/`` after preparation.

    Returns:
        The prepared folder, e.g. ``root/voc2007`` (``root/coco2017-<names>`` with ``categories``).

    Raises:
        InputError: an unknown name or category.
        DatasetError: a download fails (offline, HTTP error: the message says how to fetch the file
            by hand and where to put it), a checksum differs, or ``root/<name>`` exists but is not a
            finished preparation.

    >>> root = download_dataset("fruit", "data")                       # doctest: +SKIP
    >>> train = Dataset(root, format="voc", split="train")             # doctest: +SKIP
    >>> dogs = download_dataset("coco2017", "data", categories=["dog"])  # doctest: +SKIP
    """
    key = str(name).lower()
    if key not in ARCHIVES:
        raise InputError(f"unknown dataset {name!r}; available: {sorted(ARCHIVES)}")
    if categories is not None and key != "coco2017":
        raise InputError(f"categories= applies to coco2017 only, not {key!r}")
    root = Path(root)
    target = _build(root / key, {"dataset": key}, partial(_fetch_and_lay_out, key, root / "downloads"))
    if not keep_archives:
        for archive in ARCHIVES[key]:
            (root / "downloads" / archive.filename).unlink(missing_ok=True)
    if categories is None:
        return target
    names = _category_list(categories)
    identity = {"dataset": key, "categories": names}
    return _build(root / _subset_name(names), identity, partial(_write_subset, target, names))


def _build(target: Path, identity: dict, build: Callable[[Path], Path]) -> Path:
    """``target`` if already prepared as ``identity``, else ``build`` it in a work folder and move it there."""
    if target.exists():
        problem = _problem(target, identity)
        if problem:
            raise DatasetError(f"{target} exists but {problem}: delete it (or choose another root) and call again")
        logger.info("%s: already prepared", target)
        return target
    work = target.with_name(f".{target.name}.partial")
    shutil.rmtree(work, ignore_errors=True)  # left by an interrupted run
    try:
        prepared = build(work)
        if identity["dataset"] != "fruit":
            (prepared / _MARKER).write_text(json.dumps(identity, indent=1) + "\n", encoding="utf-8")
        problem = _problem(prepared, identity)
        if problem:
            raise DatasetError(f"{target.name}: the prepared files do not check out: {problem} (an archive in "
                               f"{target.parent / 'downloads'} may be damaged or changed upstream: delete it to "
                               "download it again)")
        prepared.rename(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    logger.info("%s: prepared", target)
    return target


def _problem(folder: Path, identity: dict) -> str | None:
    """Why ``folder`` is not the finished preparation ``identity`` (None when it is)."""
    if identity["dataset"] == "fruit":
        return _fruit_problem(folder)
    marker = folder / _MARKER
    try:
        found = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return f"has no readable {_MARKER} (not prepared by download_dataset, or the preparation did not finish)"
    if not isinstance(found, dict) or {k: found.get(k) for k in identity} != identity:
        return f"was prepared as {found}, not {identity}"
    return None


def _fetch_and_lay_out(key: str, downloads: Path, work: Path) -> Path:
    """Fetch and extract the archives of ``key`` into ``work``; return the dataset folder inside it."""
    for archive in ARCHIVES[key]:
        extract(fetch(archive, downloads), work)
    return _LAYOUTS[key](work)


def _voc_layout(year: str, work: Path) -> Path:
    return _require(work / "VOCdevkit" / f"VOC{year}" / "Annotations").parent


def _coco_layout(work: Path) -> Path:
    """Move the images of every split into ``work/images`` (COCO file names are unique across splits)."""
    images = work / "images"
    images.mkdir()
    for split in _COCO_SPLITS:
        _require(work / "annotations" / f"instances_{split}.json")
        folder = _require(work / split)
        for path in folder.iterdir():
            path.rename(images / path.name)
        folder.rmdir()
    return work


def _fruit_layout(work: Path) -> Path:
    """The source's train and test pairs as a VOC folder; val is drawn from train as in the reference copy."""
    out = work / "prepared"
    trainval = _move_pairs(_require_one(work, "train_zip/train"), out)
    test = _move_pairs(_require_one(work, "test_zip/test"), out)
    shuffled = list(trainval)
    random.Random(_FRUIT_SEED).shuffle(shuffled)
    val = sorted(shuffled[:_FRUIT_VAL_SIZE])
    train = sorted(set(trainval) - set(val))
    split_dir = out / "ImageSets" / "Main"
    split_dir.mkdir(parents=True)
    for split, ids in (("train", train), ("val", val), ("trainval", trainval), ("test", test)):
        (split_dir / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")
    return out


_LAYOUTS: dict[str, Callable[[Path], Path]] = {
    "voc2007": partial(_voc_layout, "2007"),
    "voc2012": partial(_voc_layout, "2012"),
    "coco2017": _coco_layout,
    "fruit": _fruit_layout,
}


def _move_pairs(source: Path, out: Path) -> list[str]:
    """Move ``<id>.xml`` files to ``out/Annotations`` and images to ``out/JPEGImages`` (names kept); sorted ids."""
    for sub in ("Annotations", "JPEGImages"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    ids = []
    for path in sorted(source.iterdir()):
        is_xml = path.suffix.lower() == ".xml"
        if is_xml:
            ids.append(path.stem)
        path.rename(out / ("Annotations" if is_xml else "JPEGImages") / path.name)
    return sorted(ids)


def _require(path: Path) -> Path:
    if not path.exists():
        raise DatasetError(f"{path.name} not found in the extracted archives ({path}): they are not the expected ones")
    return path


def _require_one(work: Path, folder: str) -> Path:
    found = sorted(work.glob(f"*/{folder}"))
    if len(found) != 1:
        raise DatasetError(f"expected one {folder}/ folder in the extracted fruit archive, found {len(found)}")
    return found[0]


def _fruit_manifest() -> dict[str, str]:
    """Relative path -> sha256 of every file of the prepared fruit set."""
    text = resources.files(__package__).joinpath("manifests", "fruit.json").read_text(encoding="utf-8")
    return json.loads(text)["files"]


def _fruit_problem(folder: Path) -> str | None:
    bad = []
    for rel, sha256 in _fruit_manifest().items():
        path = folder / rel
        if not path.is_file():
            bad.append(f"{rel} (missing)")
        elif file_digest(path) != sha256:
            bad.append(f"{rel} (different content)")
    if not bad:
        return None
    return f"{len(bad)} file(s) do not match the fruit manifest: {', '.join(bad[:5])}{', ...' if len(bad) > 5 else ''}"


def _category_list(categories: Sequence[str]) -> list[str]:
    if isinstance(categories, str):
        categories = [categories]
    names = sorted({str(c) for c in categories})
    if not names:
        raise InputError("categories= must name at least one category")
    return names


def _subset_name(names: list[str]) -> str:
    """``coco2017-dog-fire_hydrant``; a short digest instead when the names make a too long folder name."""
    slug = "-".join(n.replace(" ", "_").replace("/", "_") for n in names)
    if len(slug) > 100:
        slug = f"{len(names)}_categories-{hashlib.sha1(slug.encode()).hexdigest()[:10]}"
    return f"coco2017-{slug}"


def _write_subset(full: Path, names: list[str], work: Path) -> Path:
    """COCO files of ``full`` keeping only the ``names`` categories and the images holding them."""
    for split in _COCO_SPLITS:
        classes, records, _ = read_coco(full / "annotations" / f"instances_{split}.json")
        kept_classes, kept = _keep_classes(classes, records, names)
        write_coco(kept_classes, kept, work / "annotations" / f"instances_{split}.json")
        logger.info("%s: %d of %d images hold %s", split, len(kept), len(records), kept_classes)
    return work


def _keep_classes(classes: list[str], records: list[ImageRecord],
                  names: list[str]) -> tuple[list[str], list[ImageRecord]]:
    """Only the boxes of ``names`` (re-indexed, in ``classes`` order) and the records that keep a box.

    The other categories' boxes are selected away here, not dropped by ``with_classes``: they are
    the point of the subset, not errors to list one by one (COCO train holds 860k of them).
    """
    unknown = sorted(set(names) - set(classes))
    if unknown:
        raise InputError(f"categories {unknown} are not in the dataset; its categories: {classes}")
    wanted = np.isin(classes, names)
    chosen = [r.with_boxes(keep) for r in records if (keep := wanted[r.labels]).any()]
    subset = Dataset.from_records(chosen, classes).with_classes([c for c in classes if c in names])
    return subset.classes, subset.records
