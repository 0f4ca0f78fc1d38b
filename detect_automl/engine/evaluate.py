"""Evaluation: run a detector over a loader and score it with COCO metrics (pycocotools)."""

from __future__ import annotations

import time

import torch
from torch import nn
from tqdm.auto import tqdm

from ..data.loader import sanitize_boxes
from ..metrics import coco_metrics

__all__ = ["predict_loader", "evaluate"]


@torch.no_grad()
def predict_loader(
    model: nn.Module,
    loader,
    device: torch.device,
    *,
    amp_dtype: torch.dtype | None = None,
    progress: bool = False,
) -> tuple[list[dict], list[dict]]:
    """Predict every image of ``loader`` (an eval loader from ``make_loader``).

    Returns:
        ``(ground_truth, predictions)``, one numpy dict each per image in loader order, in the
        form :func:`detect_automl.metrics.coco_metrics` takes. Ground truth follows the same
        clipping rule as training, and carries the records' difficult/crowd flags as ``ignore`` and
        their object areas as ``area`` (NaN: the box area).
    """
    was_training = model.training
    model.eval()
    records = loader.dataset.dataset.records
    ground_truth, predictions = [], []
    try:
        for images, targets in tqdm(loader, desc="evaluate", leave=False, disable=None if progress else True):
            images = [img.to(device, non_blocking=True) for img in images]
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                outputs = model(images)
            for image, target, out in zip(images, targets, outputs):
                record = records[int(target["image_id"])]
                boxes, labels, keep = sanitize_boxes(record.boxes, record.labels, image.shape[2], image.shape[1])
                ground_truth.append({"boxes": boxes, "labels": labels, "ignore": record.ignore[keep],
                                     "area": record.area[keep]})
                predictions.append({k: out[k].float().numpy() for k in ("boxes", "scores", "labels")})
    finally:
        model.train(was_training)
    return ground_truth, predictions


def evaluate(
    model: nn.Module,
    loader,
    class_names: list[str],
    device: torch.device,
    *,
    amp_dtype: torch.dtype | None = None,
    progress: bool = False,
) -> dict:
    """COCO metrics of ``model`` on ``loader``: map, map_50, map_75, per_class, counts, seconds."""
    start = time.monotonic()
    ground_truth, predictions = predict_loader(model, loader, device, amp_dtype=amp_dtype, progress=progress)
    metrics = coco_metrics(ground_truth, predictions, class_names)
    metrics["seconds"] = time.monotonic() - start
    return metrics
