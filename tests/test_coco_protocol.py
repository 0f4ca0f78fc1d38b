"""Targets and metrics as COCO defines them, on fruits_nuts: crowd boxes and annotation areas.

Crowd boxes are never training targets (torchvision's detection references drop them) but stay
"ignore" regions in evaluation; the size buckets of map_small/medium/large use the annotation's
``area`` (fruits_nuts: polygon areas), so our numbers equal pycocotools run on the file itself.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from detect_automl.data import Dataset
from detect_automl.data.loader import make_loader
from detect_automl.engine.evaluate import predict_loader
from detect_automl.metrics import coco_metrics

TOL = 1e-9  # pycocotools' perfect AP is 1 - 2e-16
_STATS = {"map": 0, "map_50": 1, "map_75": 2, "map_small": 3, "map_medium": 4, "map_large": 5, "mar_100": 8}


@pytest.fixture()
def fruits(datasets_dir: Path) -> Path:
    return datasets_dir / "fruits_nuts"


class _Replay(nn.Module):
    """A detector stand-in returning prepared detections (torchvision's eval output), image after image."""

    def __init__(self, outputs: list[dict[str, np.ndarray]]) -> None:
        super().__init__()
        self.outputs = [{k: torch.as_tensor(v) for k, v in out.items()} for out in outputs]

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        return [self.outputs.pop(0) for _ in images]


def _evaluate(ds: Dataset, outputs: list[dict[str, np.ndarray]]) -> tuple[dict, list[dict]]:
    """Our metrics of ``outputs`` (one per record) through the eval loader, and the ground truth used."""
    loader = make_loader(ds, batch_size=2, train=False)
    ground_truth, predictions = predict_loader(_Replay(outputs), loader, torch.device("cpu"))
    return coco_metrics(ground_truth, predictions, ds.classes), ground_truth


def _detections(boxes: np.ndarray, labels: np.ndarray, scores) -> dict[str, np.ndarray]:
    return {"boxes": np.asarray(boxes, np.float32).reshape(-1, 4), "labels": np.asarray(labels, np.int64),
            "scores": np.asarray(scores, np.float32)}


def _instances(fruits: Path) -> dict:
    return json.loads((fruits / "annotations" / "instances_train.json").read_text())


def _with_crowd(fruits: Path, tmp_path: Path, crowd: Callable[[dict], bool]) -> tuple[Dataset, dict]:
    """fruits_nuts train with the annotations ``crowd(ann)`` picks flagged iscrowd=1, images left in place."""
    data = _instances(fruits)
    for ann in data["annotations"]:
        ann["iscrowd"] = int(crowd(ann))
    path = tmp_path / "crowd.json"
    path.write_text(json.dumps(data))
    return Dataset(path, images=fruits / "images"), data


def _train_targets(ds: Dataset) -> list[dict]:
    """Every training target, in record order (no augmentation, no shuffling)."""
    loader = make_loader(ds, batch_size=1, train=True, augment=0.0, shuffle=False)
    return [targets[0] for _, targets in loader]


def test_crowd_box_is_no_training_target_but_an_ignore_region(fruits, tmp_path):
    ann = _instances(fruits)["annotations"][0]
    ds, _ = _with_crowd(fruits, tmp_path, lambda a: a["id"] == ann["id"])
    k = next(i for i, r in enumerate(ds) if r.image_id == str(ann["image_id"]))
    rec = ds[k]
    assert rec.iscrowd.sum() == 1 and len(rec.boxes) > 2
    x, y, w, h = ann["bbox"]
    crowd_box = [x, y, x + w, y + h]
    assert rec.boxes[rec.iscrowd].tolist() == [crowd_box]

    targets = _train_targets(ds)
    assert len(targets) == len(ds) == 14
    np.testing.assert_array_equal(targets[k]["boxes"].numpy(), rec.boxes[~rec.iscrowd])
    np.testing.assert_array_equal(targets[k]["labels"].numpy(), rec.labels[~rec.iscrowd])
    assert crowd_box not in targets[k]["boxes"].tolist()
    others = [i for i in range(len(ds)) if i != k]
    assert [len(targets[i]["boxes"]) for i in others] == [len(ds[i].boxes) for i in others]

    # Evaluation still sees the crowd box, as an ignore region: the top-scored detection lying on
    # it is no false positive, and leaving it undetected costs no recall.
    image = ds.subset([k])
    on_crowd = _detections(rec.boxes, rec.labels, np.where(rec.iscrowd, 0.99, 0.5))
    result, ground_truth = _evaluate(image, [on_crowd])
    np.testing.assert_array_equal(ground_truth[0]["ignore"], rec.iscrowd)
    assert result["map"] == pytest.approx(1.0, abs=TOL) and result["num_ground_truth"] == len(rec.boxes) - 1
    missed = _detections(rec.boxes[~rec.iscrowd], rec.labels[~rec.iscrowd], np.full(len(rec.boxes) - 1, 0.5))
    assert _evaluate(image, [missed])[0]["map"] == pytest.approx(1.0, abs=TOL)


def test_image_whose_boxes_are_all_crowd_is_a_negative_example(fruits, tmp_path):
    ds, _ = _with_crowd(fruits, tmp_path, lambda ann: ann["image_id"] == 3)
    k = next(i for i, r in enumerate(ds) if r.image_id == "3")
    assert len(ds) == 14 and ds[k].iscrowd.all() and len(ds[k].boxes) > 0
    target = _train_targets(ds)[k]
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)
    assert target["boxes"].dtype == torch.float32 and target["labels"].dtype == torch.int64


def _jittered(ds: Dataset, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Detections near the ground truth (some missed, some of the wrong class), one dict per record."""
    rng = np.random.default_rng(seed)
    outputs = []
    for rec in ds:
        n = len(rec.boxes)
        wh = np.tile(rec.boxes[:, 2:] - rec.boxes[:, :2], 2)
        boxes = rec.boxes + rng.normal(0, 0.1, (n, 4)) * wh
        labels = np.where(rng.random(n) < 0.9, rec.labels, rng.integers(0, len(ds.classes), n))
        keep = rng.random(n) < 0.85
        outputs.append(_detections(boxes[keep], labels[keep], rng.random(n)[keep]))
    return outputs


def _pycocotools(json_path: Path, ds: Dataset, outputs: list[dict[str, np.ndarray]]) -> np.ndarray:
    """COCOeval's stats for ``outputs`` against the original file (its own ids and areas)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    results = [
        {"image_id": int(rec.image_id), "category_id": int(label) + 1, "score": float(score),
         "bbox": [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])]}
        for rec, out in zip(ds, outputs)
        for box, label, score in zip(out["boxes"], out["labels"], out["scores"])
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(json_path))
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(results), iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return np.asarray(evaluator.stats)


def test_size_buckets_equal_pycocotools_on_the_original_file(fruits):
    # 21 of the 128 objects have a box over 96x96 px but a polygon under it: large by box, medium for COCO.
    json_path = fruits / "annotations" / "instances_train.json"
    ds = Dataset(json_path)
    outputs = _jittered(ds)
    stats = _pycocotools(json_path, ds, outputs)
    ours, ground_truth = _evaluate(ds, outputs)
    assert 0.2 < stats[0] < 0.9 and stats[4] > 0 and stats[5] > 0  # a non-trivial case
    for key, i in _STATS.items():
        assert ours[key] == pytest.approx(max(stats[i], 0.0), abs=1e-6), key
    # Control: by box area, medium and large are other numbers than COCO's.
    by_box = coco_metrics([{k: v for k, v in g.items() if k != "area"} for g in ground_truth], outputs, ds.classes)
    assert abs(by_box["map_medium"] - stats[4]) > 0.01 and abs(by_box["map_large"] - stats[5]) > 0.01
