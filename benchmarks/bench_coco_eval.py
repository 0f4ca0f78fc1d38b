"""COCO evaluation with pycocotools vs faster-coco-eval: the same numbers? how much faster?

Runs ``metrics.coco_metrics`` with both evaluators (``faster=False`` / ``faster=True``) on the same
ground truth and detections, checks that every figure it returns (headline metrics, per-class AP,
the precision-recall curves) agrees to ``--tolerance`` (1e-6), and times both (median of
``--repeats`` calls, our conversion to COCO dicts included: what a validation pays).

Ground truth is either a synthetic set (``--images`` images, 0-15 boxes each of ``--classes``
classes, sizes spanning COCO's small/medium/large, ~3 % crowd/difficult, some with a COCO
``area``) or a real dataset (``--data``: a VOC root or COCO folder/json, every image of its
``--split``). Detections need no model: each ground-truth box is found with probability 0.8,
jittered by up to 15 % of its size, with the wrong class 10 % of the time, plus a few random false
positives; every detection gets a random score.

    pip install faster-coco-eval   # or: pip install -e .[fast]
    python benchmarks/bench_coco_eval.py                                   # 3000 synthetic images
    python benchmarks/bench_coco_eval.py --data ../shared/data/bccd --split trainval

Exits 1 when a figure differs beyond the tolerance, 2 when faster-coco-eval is not installed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import numpy as np

from detect_automl import Dataset
from detect_automl.metrics import coco_metrics


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=3000, help="synthetic images (default: %(default)s)")
    p.add_argument("--classes", type=int, default=10, help="synthetic classes (default: %(default)s)")
    p.add_argument("--data", type=Path, default=None, help="a real dataset instead (VOC root, COCO folder or json)")
    p.add_argument("--split", default=None, help="its split (default: every image)")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per evaluator (default: %(default)s)")
    p.add_argument("--tolerance", type=float, default=1e-6, help="largest difference allowed (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    return p.parse_args(argv)


def synthetic_ground_truth(rng: np.random.Generator, images: int, classes: int) -> list[dict]:
    """Per image: 0-15 boxes in a 640x480 frame, sides 4-400 px, ~3 % ignored, ~30 % with an area."""
    out = []
    for _ in range(images):
        n = int(rng.integers(0, 16))
        wh = np.exp(rng.uniform(np.log(4), np.log(400), size=(n, 2)))
        xy = rng.uniform(0, 1, size=(n, 2)) * (np.array([640, 480]) - wh).clip(1)
        boxes = np.concatenate([xy, xy + wh], axis=1)
        area = np.where(rng.random(n) < 0.3, wh.prod(axis=1) * rng.uniform(0.4, 0.9, n), np.nan)
        out.append({"boxes": boxes, "labels": rng.integers(0, classes, n), "ignore": rng.random(n) < 0.03,
                    "area": area, "width": 640, "height": 480})
    return out


def dataset_ground_truth(path: Path, split: str | None) -> tuple[list[dict], list[str]]:
    """The records of a real dataset as ``coco_metrics`` ground truth."""
    data = Dataset(path, split=split)
    gt = [{"boxes": r.boxes, "labels": r.labels, "ignore": r.ignore, "area": r.area} for r in data]
    return gt, data.classes


def detections(rng: np.random.Generator, ground_truth: list[dict], classes: int) -> list[dict]:
    """Jittered copies of 80 % of the boxes (10 % with a wrong class), 0-3 false positives, random scores."""
    out = []
    for gt in ground_truth:
        boxes = np.asarray(gt["boxes"], dtype=np.float64).reshape(-1, 4)
        found = rng.random(len(boxes)) < 0.8
        boxes, labels = boxes[found], np.asarray(gt["labels"])[found].copy()
        size = np.tile(boxes[:, 2:] - boxes[:, :2], 2)
        boxes = boxes + rng.uniform(-0.15, 0.15, boxes.shape) * size
        wrong = rng.random(len(labels)) < 0.1
        labels[wrong] = rng.integers(0, classes, int(wrong.sum()))
        k = int(rng.integers(0, 4))
        corner = rng.uniform(0, 500, (k, 2))
        false = np.concatenate([corner, corner + rng.uniform(5, 150, (k, 2))], axis=1)
        boxes = np.concatenate([boxes, false])
        x1y1 = np.minimum(boxes[:, :2], boxes[:, 2:] - 1)
        out.append({"boxes": np.concatenate([x1y1, boxes[:, 2:]], axis=1),
                    "labels": np.concatenate([labels, rng.integers(0, classes, k)]),
                    "scores": rng.random(len(boxes))})
    return out


def figures(result: dict) -> dict[str, float | None]:
    """Every number in a ``coco_metrics`` result, flattened to ``key/sub/...`` names."""
    flat: dict[str, float | None] = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for key, sub in value.items():
                walk(f"{prefix}/{key}" if prefix else str(key), sub)
        elif isinstance(value, list):
            for i, sub in enumerate(value):
                walk(f"{prefix}[{i}]", sub)
        else:
            flat[prefix] = value

    walk("", result)
    return flat


def largest_difference(a: dict, b: dict) -> tuple[float, str]:
    """The largest absolute difference between two results, and where (inf: a None or key mismatch)."""
    fa, fb = figures(a), figures(b)
    if fa.keys() != fb.keys():
        return float("inf"), f"keys differ: {sorted(set(fa) ^ set(fb))[:5]}"
    worst, where = 0.0, ""
    for key, va in fa.items():
        vb = fb[key]
        gap = (0.0 if va == vb else float("inf")) if va is None or vb is None else abs(float(va) - float(vb))
        if gap > worst:
            worst, where = gap, key
    return worst, where


def timed(fn: Callable[[], dict], repeats: int) -> tuple[float, dict]:
    """Median seconds of ``repeats`` calls, and the last result."""
    seconds, result = [], {}
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), result


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        import faster_coco_eval
    except ImportError:
        print("faster-coco-eval is not installed: pip install faster-coco-eval", file=sys.stderr)
        return 2

    rng = np.random.default_rng(args.seed)
    if args.data is None:
        gt = synthetic_ground_truth(rng, args.images, args.classes)
        names, source = [f"c{k}" for k in range(args.classes)], f"synthetic, {args.images} images, seed {args.seed}"
    else:
        gt, names = dataset_ground_truth(args.data, args.split)
        source = f"{args.data} (split {args.split or 'all'})"
    preds = detections(rng, gt, len(names))
    slow_s, slow = timed(lambda: coco_metrics(gt, preds, names, faster=False), args.repeats)
    fast_s, fast = timed(lambda: coco_metrics(gt, preds, names, faster=True), args.repeats)
    gap, where = largest_difference(slow, fast)
    print(f"{source}: {slow['num_images']} images, {slow['num_ground_truth']} ground-truth boxes, "
          f"{slow['num_detections']} detections, {len(names)} classes")
    print(f"pycocotools {version('pycocotools')}: {slow_s:.3f} s   faster-coco-eval "
          f"{faster_coco_eval.__version__}: {fast_s:.3f} s   ({slow_s / fast_s:.1f}x; median of {args.repeats})")
    print(f"mAP {slow['map']:.6f} / {fast['map']:.6f}, mAP@50 {slow['map_50']:.6f} / {fast['map_50']:.6f}; "
          f"largest difference over {len(figures(slow))} figures: {gap:.3g}" + (f" ({where})" if gap else ""))
    if gap > args.tolerance:
        print(f"DIFFERENT: beyond the tolerance {args.tolerance:g}", file=sys.stderr)
        return 1
    print(f"identical to {args.tolerance:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
