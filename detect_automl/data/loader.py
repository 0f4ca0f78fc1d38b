"""Torch dataset wrapper, collate and DataLoader construction (box rules: :mod:`.boxes`)."""

from __future__ import annotations

import random
import warnings
from typing import Any, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, get_worker_info

from ..errors import InputError
from .boxes import MIN_BOX_SIDE, sanitize_boxes
from .dataset import Dataset
from .image import read_image
from .records import ImageRecord
from .transforms import Transform, build_transforms, identity

__all__ = ["DetectionDataset", "collate", "make_loader"]


class DetectionDataset(torch.utils.data.Dataset):
    """Torch view of a :class:`Dataset`: decoded images and torchvision-style targets.

    Each item is ``(image, target)``: ``image`` float32 (3, H, W) in [0, 1]; ``target`` holds
    ``boxes`` float32 (N, 4) xyxy pixels, ``labels`` int64 (N,) 0-based class ids,
    ``image_id`` (the int index in this dataset) and ``ground_truth``, what evaluation scores
    against: the record's boxes in the original image's pixels (before any shrinking or
    augmentation), as :func:`~detect_automl.metrics.coco_metrics` takes them (numpy ``boxes``,
    ``labels``, ``ignore`` = difficult or crowd, ``area``: NaN where unknown). Boxes are clipped to
    the decoded image and those under 1 px wide or high are dropped, in both (see
    :func:`~detect_automl.data.boxes.sanitize_boxes`); one warning per dataset summarises the
    drops. COCO crowd boxes are never training targets (as in torchvision's detection
    references), only ``ground_truth`` regions to ignore. Images without boxes, or with crowd
    boxes only, give ``boxes`` of shape (0, 4).

    Args:
        dataset: the records to serve.
        transforms: ``(image, boxes, labels) -> (image, boxes, labels)``; None is the identity.
        max_side: shrink (never enlarge) images whose longest side exceeds this before the
            transforms, boxes with them. For training only: decoding and augmenting a 2500 px
            photo for a model that looks at 320 px wastes most of a CPU step. Evaluation and
            prediction keep full images, so boxes stay in original pixels.
        cache_bytes: keep up to this many bytes of decoded (and shrunk) images in memory, so
            later epochs skip decoding them (about 14 ms an image on the fruit set, 2 CPU cores:
            a seventh of a CPU training step's time); 0 decodes every time. Each loader worker
            would hold its own copy: meant for loading in the training process.
    """

    def __init__(self, dataset: Dataset, transforms: Transform | None = None, max_side: int | None = None,
                 cache_bytes: int = 0) -> None:
        self.dataset = dataset
        self.transforms = transforms or identity
        self.max_side = max_side
        self.cache_bytes = int(cache_bytes)
        self._cache: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]] = {}
        self._cached_bytes = 0
        self._expected_drops = np.array([_count_drops(r) for r in dataset.records], dtype=np.int64)
        self._warned = False
        if self._expected_drops.any():
            record = dataset[int(np.flatnonzero(self._expected_drops)[0])]
            example = record.boxes[~_keep_guess(record)][0]
            self._warn(int(self._expected_drops.sum()), int((self._expected_drops > 0).sum()), record, example)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        image, boxes, labels, truth = self._cache[index] if index in self._cache else self._decode(index)
        image, boxes, labels = self.transforms(image.copy(), boxes.copy(), labels.copy())
        boxes, labels, _ = sanitize_boxes(boxes, labels, image.shape[1], image.shape[0])
        tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)
        target = {"boxes": torch.from_numpy(boxes), "labels": torch.from_numpy(labels), "image_id": int(index),
                  "ground_truth": dict(truth)}
        return tensor, target

    def _decode(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """The image (shrunk to ``max_side``) with its sanitised, non-crowd boxes, and the ground
        truth in original pixels; kept in the cache while it has room."""
        record = self.dataset[index]
        image = read_image(record.path)
        height, width = image.shape[:2]
        boxes, labels, keep = sanitize_boxes(record.boxes, record.labels, width, height)
        dropped = int((~keep).sum())
        if dropped > self._expected_drops[index] and not self._warned:  # decoded size != annotated
            self._warn(dropped, 1, record, record.boxes[~keep][0])
        truth = {"boxes": boxes, "labels": labels, "ignore": record.ignore[keep], "area": record.area[keep]}
        not_crowd = ~record.iscrowd[keep]
        boxes, labels = boxes[not_crowd], labels[not_crowd]
        if self.max_side is not None and max(height, width) > self.max_side:
            image, boxes = _shrink(image, boxes, self.max_side / max(height, width))
        if self._cached_bytes + image.nbytes <= self.cache_bytes:
            self._cache[index] = (image, boxes, labels, truth)
            self._cached_bytes += image.nbytes
        return image, boxes, labels, truth

    def __repr__(self) -> str:
        return f"DetectionDataset({self.dataset!r}, transforms={self.transforms!r})"

    def _warn(self, num_boxes: int, num_images: int, record: ImageRecord, box: np.ndarray) -> None:
        self._warned = True
        warnings.warn(
            f"{num_boxes} box(es) in {num_images} image(s) are degenerate or outside the image "
            f"(under {MIN_BOX_SIDE:g} px wide or high after clipping) and are dropped; e.g. "
            f"{record.name} box {box.tolist()} ({record.source or record.path})",
            UserWarning,
            stacklevel=3,
        )


def _shrink(image: np.ndarray, boxes: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    height, width = image.shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return image, (boxes * np.float32(scale)).astype(np.float32)


def _keep_guess(record: ImageRecord) -> np.ndarray:
    """The sanitiser's keep mask using the annotated size (infinite when unknown)."""
    width = record.width if record.width > 0 else np.inf
    height = record.height if record.height > 0 else np.inf
    return sanitize_boxes(record.boxes, record.labels, width, height)[2]


def _count_drops(record: ImageRecord) -> int:
    return int((~_keep_guess(record)).sum())


def collate(batch: list[tuple[torch.Tensor, dict[str, Any]]]) -> tuple[list[torch.Tensor], list[dict[str, Any]]]:
    """Keep images of different sizes apart: ``(list of images, list of targets)``."""
    return [item[0] for item in batch], [item[1] for item in batch]


def make_loader(
    dataset: Dataset | DetectionDataset,
    batch_size: int,
    train: bool,
    augment: float = 0.5,
    num_workers: int = 0,
    seed: int = 0,
    shuffle: bool | None = None,
    max_side: int | None = None,
    order: Sequence[int] | None = None,
    pin_memory: bool = False,
    cache_bytes: int = 0,
    shard: tuple[int, int] | None = None,
) -> DataLoader:
    """Build a seeded DataLoader over a Dataset (wrapped with :func:`build_transforms`).

    Args:
        dataset: a Dataset, or a DetectionDataset whose own transforms are kept.
        batch_size: images per batch.
        train: augment (with strength ``augment``), shuffle by default, and drop an incomplete
            last batch when the dataset holds more than one batch.
        augment: augmentation strength in [0, 1] (ignored when ``train`` is False).
        num_workers: loader processes (0 loads in the calling process); workers persist.
        seed: seeds the shuffling and the augmentations (each worker gets its own stream).
        shuffle: None means ``train``.
        max_side: see :class:`DetectionDataset` (ignored when ``dataset`` is already wrapped).
        order: a fixed order of dataset indexes to serve every pass (replaces shuffling), e.g.
            a seeded permutation, so that any prefix of a validation is a random subset.
        pin_memory: page-locked batches for faster copies to a CUDA device.
        cache_bytes: see :class:`DetectionDataset` (ignored when ``dataset`` is already wrapped).
        shard: ``(rank, replicas)`` for data-parallel training: this replica's share of each
            epoch (torch's DistributedSampler, reshuffled every epoch from ``seed``; every
            replica gets as many batches), augmented with its own random stream.

    Returns:
        A DataLoader yielding ``(list of images, list of targets)``.

    Raises:
        InputError: ``batch_size`` < 1 or ``num_workers`` < 0.
    """
    if int(batch_size) < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    if int(num_workers) < 0:
        raise InputError(f"num_workers must be >= 0, got {num_workers}")
    rank, replicas = shard or (0, 1)
    if not isinstance(dataset, DetectionDataset):
        dataset = DetectionDataset(dataset, build_transforms(train, augment, seed=seed + rank), max_side=max_side,
                                   cache_bytes=cache_bytes)
    shuffle = train if shuffle is None else bool(shuffle)
    sampler = None if order is None else [int(i) for i in order]
    if shard is not None:
        if order is not None:
            raise InputError("a sharded loader takes no fixed order")
        sampler = _EpochShards(dataset, num_replicas=replicas, rank=rank, shuffle=shuffle, seed=seed)
    generator = torch.Generator()
    generator.manual_seed(int(seed) + rank)
    return DataLoader(
        dataset,
        batch_size=int(batch_size),
        shuffle=shuffle if sampler is None else None,
        sampler=sampler,
        num_workers=int(num_workers),
        collate_fn=collate,
        generator=generator,
        worker_init_fn=_seed_worker if num_workers > 0 else None,
        persistent_workers=num_workers > 0,
        pin_memory=bool(pin_memory),
        drop_last=bool(train) and len(dataset if shard is None else sampler) > batch_size,
    )


class _EpochShards(DistributedSampler):
    """DistributedSampler that moves on to the next epoch's shuffle by itself at each pass."""

    def __iter__(self):
        indices = super().__iter__()
        self.set_epoch(self.epoch + 1)
        return indices


def _seed_worker(worker_id: int) -> None:
    """Seed numpy, random and the worker's copy of the transforms from torch's per-worker seed."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
    info = get_worker_info()
    reseed = getattr(getattr(info.dataset, "transforms", None), "reseed", None) if info else None
    if reseed is not None:
        reseed(seed)
