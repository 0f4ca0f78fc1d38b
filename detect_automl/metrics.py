"""COCO detection metrics (mAP, mAP@50, mAP@75, per-class AP) computed with pycocotools.

The numbers follow the COCO protocol exactly (101-point interpolated precision, IoU thresholds
0.50:0.05:0.95, at most 100 detections per image) so they compare with published ones. Boxes
flagged ``ignore`` (VOC ``difficult``, COCO ``iscrowd``) are evaluated as COCO crowd regions: a
detection matched to one is neither a true nor a false positive.

pycocotools is the evaluator of record. ``faster-coco-eval`` (``pip install
detect-automl[fast]``) is an optional drop-in with the same numbers (benchmarks/bench_coco_eval.py
checks them to 1e-6 and times both): choose it per call with ``faster=True``, or for every
evaluation, ``fit``'s validations included, with the environment variable
``DETECT_AUTOML_FASTER_COCO_EVAL=1``.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
from typing import Any, Mapping, Sequence

import numpy as np

from .data.boxes import xyxy_to_xywh
from .errors import InputError

__all__ = ["coco_metrics", "FASTER_ENV"]

logger = logging.getLogger(__name__)

FASTER_ENV = "DETECT_AUTOML_FASTER_COCO_EVAL"
"""Set to 1 (or true, yes) to evaluate with faster-coco-eval wherever ``faster`` is not given."""

_RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)  # COCOeval.params.recThrs
_IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)  # COCOeval.params.iouThrs
_CURVE_IOUS = {0.5: "precision_50", 0.75: "precision_75"}  # pr_curves key per IoU threshold

_HEADLINE = {  # result key -> index into COCOeval.stats
    "map": 0,
    "map_50": 1,
    "map_75": 2,
    "map_small": 3,
    "map_medium": 4,
    "map_large": 5,
    "mar_100": 8,
}


def _to_numpy(value: Any, dtype: Any, name: str) -> np.ndarray:
    """Converts a numpy array, torch tensor or sequence to a numpy array of ``dtype``."""
    if value is None:
        return np.zeros((0,), dtype=dtype)
    if hasattr(value, "detach"):
        value = value.detach()
    if hasattr(value, "cpu"):
        value = value.cpu()
    try:
        return np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} cannot be converted to a {np.dtype(dtype)} array: {exc}") from exc


def _read(item: Mapping, index: int, kind: str, num_classes: int, with_scores: bool) -> dict:
    """Validates one image's boxes/labels(/scores/ignore) and returns them as numpy arrays."""
    where = f"{kind}[{index}]"
    boxes = _to_numpy(item.get("boxes"), np.float64, f"{where}['boxes']")
    boxes = boxes.reshape(0, 4) if boxes.size == 0 else boxes
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise InputError(f"{where}['boxes'] must have shape (N, 4), got {boxes.shape}")
    if not np.isfinite(boxes).all():
        raise InputError(f"{where}['boxes'] contains NaN or infinite values")
    labels = _to_numpy(item.get("labels"), np.int64, f"{where}['labels']").reshape(-1)
    if len(labels) != len(boxes):
        raise InputError(f"{where} has {len(boxes)} boxes but {len(labels)} labels")
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if bad.size:
        raise InputError(f"{where}['labels'] must lie in [0, {num_classes}), got {bad[:5]}")
    out = {"boxes": boxes, "labels": labels}
    if with_scores:
        scores = _to_numpy(item.get("scores"), np.float64, f"{where}['scores']").reshape(-1)
        if len(scores) != len(boxes) or not np.isfinite(scores).all():
            raise InputError(f"{where} needs {len(boxes)} finite scores, got {scores.tolist()[:5]}")
        out["scores"] = scores
    else:
        out["ignore"] = _optional(item, "ignore", bool, False, where, len(boxes))
        out["area"] = _optional(item, "area", np.float64, np.nan, where, len(boxes))
        if not (np.isnan(out["area"]) | (np.isfinite(out["area"]) & (out["area"] > 0))).all():
            raise InputError(f"{where}['area']: areas must be positive (NaN: the box area), got {out['area'][:5]}")
    return out


def _optional(item: Mapping, key: str, dtype: Any, missing: Any, where: str, n: int) -> np.ndarray:
    """The per-box array ``item[key]`` (``missing`` for every box when absent or None)."""
    if item.get(key) is None:
        return np.full(n, missing, dtype=dtype)
    values = _to_numpy(item[key], dtype, f"{where}[{key!r}]").reshape(-1)
    if len(values) != n:
        raise InputError(f"{where} has {n} boxes but {len(values)} values in {key!r}")
    return values


def _build(
    gts: list[dict], preds: list[dict], class_names: Sequence[str], ground_truth: Sequence[Mapping]
) -> tuple[dict, list[dict]]:
    """Builds the COCO ground-truth dataset dict and the detection result list (ids from 1)."""
    images, annotations, results = [], [], []
    for i, (gt, pred) in enumerate(zip(gts, preds)):
        image = {"id": i + 1}
        for key in ("width", "height"):
            if ground_truth[i].get(key) is not None:
                image[key] = int(ground_truth[i][key])
        images.append(image)
        for bbox, label, ignore, area in zip(xyxy_to_xywh(gt["boxes"]).tolist(), gt["labels"], gt["ignore"],
                                             gt["area"]):
            annotations.append({
                "id": len(annotations) + 1,  # pycocotools treats id 0 as "unmatched"
                "image_id": i + 1,
                "category_id": int(label) + 1,
                "bbox": bbox,
                "area": bbox[2] * bbox[3] if np.isnan(area) else float(area),  # COCO's: the object's area
                "iscrowd": int(bool(ignore)),
            })
        for bbox, label, score in zip(xyxy_to_xywh(pred["boxes"]).tolist(), pred["labels"], pred["scores"]):
            results.append({"image_id": i + 1, "category_id": int(label) + 1, "bbox": bbox, "score": float(score)})
    categories = [{"id": k + 1, "name": str(name)} for k, name in enumerate(class_names)]
    return {"images": images, "annotations": annotations, "categories": categories}, results


def _wants_faster(faster: bool | None) -> bool:
    """``faster``, or when None, what :data:`FASTER_ENV` says (default: pycocotools)."""
    if faster is not None:
        return bool(faster)
    return os.environ.get(FASTER_ENV, "").strip().lower() in ("1", "true", "yes")


@functools.lru_cache(maxsize=2)
def _evaluator(faster: bool) -> tuple[type, type]:
    """Returns the ``(COCO, COCOeval)`` classes: faster_coco_eval if asked and installed."""
    if faster:
        try:
            from faster_coco_eval import COCO, COCOeval_faster

            return COCO, COCOeval_faster
        except ImportError:
            logger.warning("faster-coco-eval is not installed (pip install detect-automl[fast]): "
                           "evaluating with pycocotools")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    return COCO, COCOeval


def _per_class(precision: np.ndarray, class_names: Sequence[str], iou_index: int | None) -> dict:
    """Per-class AP from ``COCOeval.eval['precision']`` [T, R, K, A, M] (area all, 100 dets)."""
    out: dict[str, float | None] = {}
    for k, name in enumerate(class_names):
        p = precision[:, :, k, 0, -1] if iou_index is None else precision[iou_index, :, k, 0, -1]
        valid = p[p > -1]
        out[str(name)] = float(np.mean(valid)) if valid.size else None
    return out


def _curves(precision: np.ndarray | None, class_names: Sequence[str], has_gt: np.ndarray) -> dict:
    """The ``pr_curves`` entry: precision at the 101 recall thresholds per class, at IoU .50 and .75.

    ``precision`` is ``COCOeval.eval['precision']`` (area all, 100 dets), or None when nothing was
    evaluated (no detections): a class with ground truth then has precision 0 everywhere.
    pycocotools' -1 ("undefined") becomes None: a whole curve for a class without ground truth.
    """
    out: dict[str, Any] = {"recall": [round(float(r), 2) for r in _RECALL_THRESHOLDS]}
    for iou, key in _CURVE_IOUS.items():
        table: dict[str, list | None] = {}
        for k, name in enumerate(class_names):
            if precision is None:
                table[str(name)] = [0.0] * len(_RECALL_THRESHOLDS) if has_gt[k] else None
                continue
            p = precision[_iou_index(iou), :, k, 0, -1]
            table[str(name)] = [float(v) if v > -1 else None for v in p] if (p > -1).any() else None
        out[key] = table
    return out


def _iou_index(iou: float) -> int:
    """Index of ``iou`` in COCO's IoU thresholds 0.50:0.05:0.95."""
    return int(np.argmin(np.abs(_IOU_THRESHOLDS - iou)))


def coco_metrics(
    ground_truth: Sequence[Mapping],
    predictions: Sequence[Mapping],
    class_names: Sequence[str],
    faster: bool | None = None,
) -> dict:
    """Computes COCO box metrics for predictions against ground truth, image by image.

    Args:
        ground_truth: One mapping per image: ``boxes`` (N, 4) xyxy pixels, ``labels`` (N,) 0-based
            class ids, optional ``ignore`` (N,) bool (difficult/crowd), optional ``area`` (N,) of
            each object (COCO's annotation ``area``, e.g. its segmentation area: it decides
            ``map_small/medium/large``; NaN or absent: the box area), optional ``width`` and
            ``height``. Numpy arrays, torch tensors or lists.
        predictions: One mapping per image, same order: ``boxes`` (M, 4) xyxy, ``scores`` (M,),
            ``labels`` (M,) 0-based. Only the 100 best-scoring boxes per image count (COCO rule).
        class_names: The class names; label ``k`` is ``class_names[k]``.
        faster: Use faster-coco-eval when installed (the same numbers, faster; without it
            pycocotools, with one warning); False: pycocotools; None: as the environment
            variable :data:`FASTER_ENV` says (pycocotools unless it is 1).

    Returns:
        A JSON-serialisable dict: ``map`` (AP@[.5:.95]), ``map_50``, ``map_75``, ``map_small``,
        ``map_medium``, ``map_large``, ``mar_100`` (undefined values are 0.0); ``per_class`` and
        ``per_class_50`` ({name: AP, or None for a class without ground truth}); ``pr_curves``
        (precision-recall curves: ``recall``, COCO's 101 recall thresholds 0, .01, ..., 1, and
        ``precision_50`` / ``precision_75``, {name: the interpolated precision at each of them
        at IoU .50 / .75, or None for a class without ground truth}; the mean of a class's
        ``precision_50`` is its ``per_class_50`` AP); ``num_images``, ``num_ground_truth``
        (boxes not ignored) and ``num_detections``.

    Raises:
        InputError: The two sequences differ in length, or a box/label/score/area array is malformed.

    >>> gt = [{"boxes": [[0, 0, 10, 10]], "labels": [0]}]
    >>> pred = [{"boxes": [[0, 0, 10, 10]], "scores": [0.9], "labels": [0]}]
    >>> round(coco_metrics(gt, pred, ["cat"])["map"], 6)  # pycocotools: 1 - 2e-16
    1.0
    """
    if len(ground_truth) != len(predictions):
        raise InputError(
            f"{len(ground_truth)} ground-truth images but {len(predictions)} prediction entries"
        )
    num_classes = len(class_names)
    gts = [_read(g, i, "ground_truth", num_classes, False) for i, g in enumerate(ground_truth)]
    preds = [_read(p, i, "predictions", num_classes, True) for i, p in enumerate(predictions)]
    dataset, results = _build(gts, preds, class_names, ground_truth)

    result: dict[str, Any] = {key: 0.0 for key in _HEADLINE}
    has_gt = np.zeros(num_classes, dtype=bool)
    for gt in gts:
        has_gt[gt["labels"][~gt["ignore"]]] = True
    zeros = {str(n): (0.0 if has_gt[k] else None) for k, n in enumerate(class_names)}
    result["per_class"], result["per_class_50"] = dict(zeros), dict(zeros)
    precision = None

    if results and has_gt.any():
        coco_cls, eval_cls = _evaluator(_wants_faster(faster))
        with contextlib.redirect_stdout(io.StringIO()):
            coco_gt = coco_cls()
            coco_gt.dataset = dataset
            coco_gt.createIndex()
            coco_dt = coco_gt.loadRes(results)
            evaluator = eval_cls(coco_gt, coco_dt, iouType="bbox")
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        stats = np.asarray(evaluator.stats, dtype=np.float64)
        result.update({key: max(float(stats[i]), 0.0) for key, i in _HEADLINE.items()})
        precision = np.asarray(evaluator.eval["precision"])
        result["per_class"] = _per_class(precision, class_names, None)
        result["per_class_50"] = _per_class(precision, class_names, _iou_index(0.5))
    result["pr_curves"] = _curves(precision, class_names, has_gt)

    result["num_images"] = len(gts)
    result["num_ground_truth"] = int(sum(int((~g["ignore"]).sum()) for g in gts))
    result["num_detections"] = int(sum(len(p["scores"]) for p in preds))
    return result
