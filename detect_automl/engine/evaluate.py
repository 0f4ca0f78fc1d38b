"""Evaluation: run a detector over a loader and score it with COCO metrics (pycocotools)."""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..data.loader import make_loader
from ..metrics import coco_metrics

__all__ = ["predict_loader", "evaluate", "validation_seconds_per_image"]


@torch.no_grad()
def predict_loader(
    model: nn.Module,
    loader,
    device: torch.device,
    *,
    deadline: float | None = None,
    seconds_per_image: float | None = None,
    progress: bool = False,
) -> tuple[list[dict], list[dict]]:
    """Predict the images of ``loader`` (an eval loader from ``make_loader``), in fp32.

    With a ``deadline`` (``time.monotonic()``), a batch that would end after it is not started:
    the images before it are returned (a prefix of the loader's order). Its time is estimated
    from the batches done so far, or ``seconds_per_image`` before the first.

    Returns:
        ``(ground_truth, predictions)``, one numpy dict each per image in loader order, in the
        form :func:`detect_automl.metrics.coco_metrics` takes. Ground truth is each target's
        ``ground_truth`` (see :class:`~detect_automl.data.loader.DetectionDataset`): the record's
        boxes in original pixels under the same clipping rule as training, its difficult/crowd
        flags as ``ignore`` and its object areas as ``area`` (NaN: the box area).
    """
    was_training = model.training
    model.eval()
    ground_truth, predictions = [], []
    start = time.monotonic()
    try:
        for images, targets in tqdm(loader, desc="evaluate", leave=False, disable=None if progress else True):
            per_image = (time.monotonic() - start) / len(predictions) if predictions else seconds_per_image
            if deadline is not None and time.monotonic() + (per_image or 0.0) * len(images) > deadline:
                break
            images = [img.to(device, non_blocking=True) for img in images]
            outputs = model(images)
            for target, out in zip(targets, outputs):
                ground_truth.append(target["ground_truth"])
                predictions.append({k: out[k].float().numpy() for k in ("boxes", "scores", "labels")})
    finally:
        model.train(was_training)
    return ground_truth, predictions


@torch.no_grad()
def validation_seconds_per_image(model: nn.Module, loader, device: torch.device) -> float:
    """Seconds per image of ``model`` in eval mode, timed on the loader's first batch (loading included)."""
    was_training = model.training
    model.eval()
    try:
        start = time.monotonic()
        images, _ = next(iter(loader))
        model([img.to(device) for img in images])
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return (time.monotonic() - start) / max(1, len(images))
    finally:
        model.train(was_training)


def evaluate(
    model: nn.Module,
    loader,
    class_names: list[str],
    device: torch.device,
    *,
    deadline: float | None = None,
    seconds_per_image: float | None = None,
    progress: bool = False,
) -> dict | None:
    """COCO metrics of ``model`` on ``loader``: map, map_50, map_75, per_class, counts, seconds.

    With a ``deadline`` (``time.monotonic()``) and ``seconds_per_image``, a validation that cannot
    finish in time scores a fixed, seeded random subset of the images instead, as many as fit
    (``num_images`` says how many, ``num_images_total`` of how many; the subsets for two sizes
    are nested); None when not even one image fits. A whole validation scores the images in
    the loader's order, so its figures are the ones ``ObjectDetector.evaluate`` gives.
    """
    start = time.monotonic()
    total = len(loader.dataset)
    if deadline is not None and seconds_per_image:
        fits = int((deadline - start) / seconds_per_image)
        if fits < 1 and total:
            return None
        if fits < total:
            chosen = np.sort(np.random.default_rng(0).permutation(total)[:fits])
            loader = make_loader(loader.dataset, loader.batch_size, train=False, num_workers=loader.num_workers,
                                 order=chosen, pin_memory=loader.pin_memory)
    ground_truth, predictions = predict_loader(model, loader, device, deadline=deadline,
                                               seconds_per_image=seconds_per_image, progress=progress)
    if not predictions and total:
        return None
    metrics = coco_metrics(ground_truth, predictions, class_names)
    metrics["num_images_total"] = total
    metrics["seconds"] = time.monotonic() - start
    return metrics
