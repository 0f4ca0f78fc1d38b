"""Tests of detect_automl.metrics: hand-computed COCO cases and equality with raw pycocotools."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest

from detect_automl.errors import InputError
from detect_automl.metrics import coco_metrics

# pycocotools computes precision as tp / (tp + fp + eps), so a perfect AP is 1 - 2e-16.
TOL = 1e-9


def _gt(boxes, labels, ignore=None):
    item = {"boxes": np.asarray(boxes, np.float32).reshape(-1, 4), "labels": np.asarray(labels)}
    if ignore is not None:
        item["ignore"] = np.asarray(ignore, bool)
    return item


def _pred(boxes, labels, scores):
    return {
        "boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
        "labels": np.asarray(labels, np.int64),
        "scores": np.asarray(scores, np.float32),
    }


def _no_pred():
    return _pred(np.zeros((0, 4)), [], [])


def _multi_class_gt():
    return [
        _gt([[10, 10, 60, 80], [100, 120, 180, 200], [5, 150, 40, 190]], [0, 1, 2]),
        _gt([[0, 0, 30, 30], [200, 50, 320, 240]], [1, 1]),
        _gt([[50, 60, 150, 170], [160, 10, 190, 40], [20, 200, 120, 300]], [2, 0, 0]),
    ]


def test_perfect_predictions_score_one_everywhere():
    gt = _multi_class_gt()
    preds = [_pred(g["boxes"], g["labels"], np.ones(len(g["labels"]))) for g in gt]
    result = coco_metrics(gt, preds, ["cat", "dog", "bird"])
    for key in ("map", "map_50", "map_75", "mar_100"):
        assert result[key] == pytest.approx(1.0, abs=TOL), key
    for table in ("per_class", "per_class_50"):
        assert set(result[table]) == {"cat", "dog", "bird"}
        for name, ap in result[table].items():
            assert ap == pytest.approx(1.0, abs=TOL), (table, name)
    assert (result["num_images"], result["num_ground_truth"], result["num_detections"]) == (3, 8, 8)


def test_no_predictions_give_zero():
    gt = _multi_class_gt()
    result = coco_metrics(gt, [_no_pred() for _ in gt], ["cat", "dog", "bird", "fish"])
    assert result["map"] == result["map_50"] == result["map_75"] == result["mar_100"] == 0.0
    assert result["per_class"] == {"cat": 0.0, "dog": 0.0, "bird": 0.0, "fish": None}
    assert result["per_class_50"] == result["per_class"]
    assert result["num_detections"] == 0


def test_predictions_of_the_wrong_class_give_zero():
    gt = _multi_class_gt()
    preds = [_pred(g["boxes"], (g["labels"] + 1) % 3, np.ones(len(g["labels"]))) for g in gt]
    result = coco_metrics(gt, preds, ["cat", "dog", "bird"])
    assert result["map"] == 0.0 and result["map_50"] == 0.0
    assert all(ap == 0.0 for ap in result["per_class_50"].values())


def test_hand_computed_false_positive_and_miss():
    # Ranked: TP (P=1, R=.5), FP (P=.5, R=.5); GT 2 never found. Interpolated precision is 1 at the
    # 51 recall thresholds 0, .01, ..., .50 and 0 at the other 50, at every IoU threshold.
    gt = [_gt([[0, 0, 50, 50], [100, 100, 150, 150]], [0, 0])]
    preds = [_pred([[0, 0, 50, 50], [200, 200, 240, 240]], [0, 0], [0.9, 0.8])]
    result = coco_metrics(gt, preds, ["thing"])
    assert result["map_50"] == pytest.approx(51 / 101, abs=1e-6)
    assert result["map"] == pytest.approx(51 / 101, abs=1e-6)
    assert result["per_class_50"]["thing"] == pytest.approx(51 / 101, abs=1e-6)
    assert result["mar_100"] == pytest.approx(0.5, abs=1e-6)


def test_iou_thresholds_count_only_those_below_the_overlap():
    # Class "a": IoU = (100 * 62) / (100 * 100) = 0.62: a hit at .50, .55, .60, a miss from .65 on.
    # Class "b": IoU = 0.52, a hit at .50 only.
    gt = [_gt([[0, 0, 100, 100], [200, 0, 300, 100]], [0, 1])]
    preds = [_pred([[0, 0, 100, 62], [200, 0, 300, 52]], [0, 1], [0.7, 0.6])]
    result = coco_metrics(gt, preds, ["a", "b"])
    assert result["per_class"]["a"] == pytest.approx(3 / 10, abs=1e-6)
    assert result["per_class"]["b"] == pytest.approx(1 / 10, abs=1e-6)
    assert result["per_class_50"] == pytest.approx({"a": 1.0, "b": 1.0}, abs=1e-6)
    assert result["map"] == pytest.approx((3 / 10 + 1 / 10) / 2, abs=1e-6)
    assert result["map_50"] == pytest.approx(1.0, abs=1e-6)
    assert result["map_75"] == 0.0


def test_ignored_ground_truth_is_neither_hit_nor_miss():
    boxes = [[0, 0, 50, 50], [100, 100, 160, 160]]
    gt = [_gt(boxes, [0, 0], ignore=[False, True])]
    # The higher-scored detection lands on the ignored box: were it a false positive, AP would drop.
    both = coco_metrics(gt, [_pred(boxes, [0, 0], [0.8, 0.95])], ["thing"])
    assert both["map"] == pytest.approx(1.0, abs=TOL)
    # Missing the ignored box does not cost recall either.
    only_first = coco_metrics(gt, [_pred(boxes[:1], [0], [0.8])], ["thing"])
    assert only_first["map"] == pytest.approx(1.0, abs=TOL)
    assert only_first["num_ground_truth"] == 1
    # Control: without the flag the same detections lose half the recall.
    plain = coco_metrics([_gt(boxes, [0, 0])], [_pred(boxes[:1], [0], [0.8])], ["thing"])
    assert plain["map"] == pytest.approx(51 / 101, abs=1e-6)


def test_ground_truth_area_decides_the_size_bucket():
    # A 100x100 box (10000 px: large) whose object covers 5000 px (medium), as COCO's polygon areas do.
    box = [[0, 0, 100, 100]]
    pred = [_pred(box, [0], [0.9])]
    by_area = coco_metrics([{**_gt(box, [0]), "area": [5000.0]}], pred, ["thing"])
    assert by_area["map_medium"] == pytest.approx(1.0, abs=TOL) and by_area["map_large"] == 0.0
    for unknown in ([np.nan], None):  # NaN or no area: the box area
        by_box = coco_metrics([{**_gt(box, [0]), "area": unknown}], pred, ["thing"])
        assert by_box["map_large"] == pytest.approx(1.0, abs=TOL) and by_box["map_medium"] == 0.0
    for bad, message in (([1.0, 2.0], "1 boxes but 2 values in 'area'"), ([-1.0], "areas must be positive"),
                         ([np.inf], "areas must be positive")):
        with pytest.raises(InputError, match=message):
            coco_metrics([{**_gt(box, [0]), "area": bad}], pred, ["thing"])


def test_class_without_ground_truth_is_none_and_result_is_json():
    gt = [_gt([[0, 0, 50, 50]], [0]), _gt([[10, 10, 90, 90]], [1])]
    preds = [
        _pred([[0, 0, 50, 50], [60, 60, 90, 90]], [0, 2], [0.9, 0.99]),  # class 2: no ground truth
        _pred([[10, 10, 90, 90]], [1], [0.5]),
    ]
    result = coco_metrics(gt, preds, ["a", "b", "c"])
    assert result["per_class"]["c"] is None and result["per_class_50"]["c"] is None
    assert result["per_class"]["a"] == pytest.approx(1.0, abs=TOL)
    assert result["map"] == pytest.approx(1.0, abs=TOL)  # the averaging skips class "c"
    assert json.loads(json.dumps(result)) == result
    curves = result.pop("pr_curves")
    assert all(type(r) is float for r in curves["recall"])
    for key in ("precision_50", "precision_75"):
        assert curves[key]["c"] is None
        assert all(type(p) is float for name in "ab" for p in curves[key][name])
    for key, value in result.items():
        if isinstance(value, dict):
            assert all(v is None or type(v) is float for v in value.values()), key
        elif key.startswith("num_"):
            assert type(value) is int, key
        else:
            assert type(value) is float, key


def test_no_ground_truth_at_all():
    gt = [_gt(np.zeros((0, 4)), []), _gt(np.zeros((0, 4)), [])]
    preds = [_pred([[0, 0, 10, 10]], [0], [0.9]), _no_pred()]
    result = coco_metrics(gt, preds, ["a", "b"])
    assert result["map"] == 0.0 and result["map_50"] == 0.0
    assert result["per_class"] == {"a": None, "b": None}
    assert result["num_ground_truth"] == 0 and result["num_detections"] == 1


class _FakeTensor:
    """Stands in for a torch tensor: only .detach().cpu() gives a numpy-convertible object."""

    def __init__(self, array):
        self._array = np.asarray(array)

    def detach(self):
        return self

    def cpu(self):
        return self._array

    def __array__(self, *args, **kwargs):
        raise AssertionError("convert via .cpu() first")


def test_tensor_like_inputs_and_bad_inputs():
    gt = [{"boxes": _FakeTensor([[0.0, 0, 20, 20]]), "labels": _FakeTensor([0])}]
    preds = [{"boxes": _FakeTensor([[0.0, 0, 20, 20]]), "labels": _FakeTensor([0]),
              "scores": _FakeTensor([0.5])}]
    assert coco_metrics(gt, preds, ["a"])["map"] == pytest.approx(1.0, abs=TOL)
    with pytest.raises(InputError, match="prediction"):
        coco_metrics(gt, [], ["a"])
    with pytest.raises(InputError, match="labels"):
        coco_metrics(gt, [_pred([[0, 0, 20, 20]], [3], [0.5])], ["a"])
    with pytest.raises(InputError, match="scores"):
        coco_metrics(gt, [_pred([[0, 0, 20, 20]], [0], [])], ["a"])
    with pytest.raises(InputError, match="1 boxes but 2 values in 'ignore'"):
        coco_metrics([{**gt[0], "ignore": [True, False]}], preds, ["a"])


def _random_case(seed=0, num_images=6, num_classes=3):
    rng = np.random.default_rng(seed)
    gt, preds = [], []
    for _ in range(num_images):
        n = int(rng.integers(0, 7))
        xy = rng.uniform(0, 400, (n, 2))
        wh = rng.uniform(4, 200, (n, 2))  # spans COCO's small / medium / large areas
        boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
        labels = rng.integers(0, num_classes, n)
        ignore = rng.random(n) < 0.1
        gt.append(_gt(boxes, labels, ignore))
        keep = rng.random(n) < 0.8  # some objects are missed
        jitter = rng.normal(0, 0.12, (n, 4)) * np.concatenate([wh, wh], axis=1)
        found = (boxes + jitter)[keep]
        found_labels = np.where(rng.random(n) < 0.9, labels, rng.integers(0, num_classes, n))[keep]
        m = int(rng.integers(0, 4))  # spurious detections
        fxy = rng.uniform(0, 400, (m, 2))
        spurious = np.concatenate([fxy, fxy + rng.uniform(4, 120, (m, 2))], axis=1)
        det_boxes = np.concatenate([found, spurious]).astype(np.float32)
        det_labels = np.concatenate([found_labels, rng.integers(0, num_classes, m)])
        preds.append(_pred(det_boxes, det_labels, rng.random(len(det_boxes))))
    return gt, preds


def _raw_pycocotools(gt, preds, num_classes, tmp_path):
    """The reference: standard COCO JSON files on disk, evaluated by pycocotools as documented."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, annotations, results = [], [], []
    for image_id, (g, p) in enumerate(zip(gt, preds), start=1):
        images.append({"id": image_id, "file_name": f"{image_id}.jpg", "width": 640, "height": 640})
        for (x1, y1, x2, y2), label, crowd in zip(g["boxes"].tolist(), g["labels"].tolist(),
                                                  g["ignore"].tolist()):
            w, h = x2 - x1, y2 - y1
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": label + 1, "bbox": [x1, y1, w, h], "area": w * h,
                                "iscrowd": int(crowd)})
        for (x1, y1, x2, y2), label, score in zip(p["boxes"].tolist(), p["labels"].tolist(),
                                                  p["scores"].tolist()):
            results.append({"image_id": image_id, "category_id": label + 1,
                            "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score})
    categories = [{"id": k + 1, "name": f"c{k}"} for k in range(num_classes)]
    gt_file, dt_file = tmp_path / "gt.json", tmp_path / "dt.json"
    gt_file.write_text(json.dumps({"images": images, "annotations": annotations,
                                   "categories": categories}))
    dt_file.write_text(json.dumps(results))
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(gt_file))
        coco_eval = COCOeval(coco_gt, coco_gt.loadRes(str(dt_file)), iouType="bbox")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval


@pytest.mark.parametrize("seed", [0, 1])
def test_equals_raw_pycocotools_on_json_files(seed, tmp_path):
    gt, preds = _random_case(seed)
    assert sum(len(g["labels"]) for g in gt) > 5
    stats = _raw_pycocotools(gt, preds, 3, tmp_path).stats
    result = coco_metrics(gt, preds, ["c0", "c1", "c2"])
    assert 0.05 < stats[0] < 0.95  # a non-trivial case
    assert result["map"] == pytest.approx(stats[0], abs=1e-12)
    assert result["map_50"] == pytest.approx(stats[1], abs=1e-12)
    keys = {"map_75": 2, "map_small": 3, "map_medium": 4, "map_large": 5, "mar_100": 8}
    for key, index in keys.items():  # pycocotools' -1 ("no such boxes") is reported as 0.0
        assert result[key] == pytest.approx(max(stats[index], 0.0), abs=1e-12), key
    faster = coco_metrics(gt, preds, ["c0", "c1", "c2"], faster=True)  # falls back if absent
    assert faster["map"] == pytest.approx(stats[0], abs=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_faster_coco_eval_gives_the_same_figures(seed):
    """The optional evaluator matches pycocotools in every figure (benchmarks/bench_coco_eval.py times it)."""
    pytest.importorskip("faster_coco_eval")
    gt, preds = _random_case(seed, num_images=40)
    for g in gt[::3]:  # some objects with a COCO area (e.g. a segmentation's) other than the box's
        g["area"] = np.full(len(g["labels"]), 900.0)
    reference = coco_metrics(gt, preds, ["c0", "c1", "c2"], faster=False)
    faster = coco_metrics(gt, preds, ["c0", "c1", "c2"], faster=True)
    assert faster.keys() == reference.keys()
    for key in ("map", "map_50", "map_75", "map_small", "map_medium", "map_large", "mar_100"):
        assert faster[key] == pytest.approx(reference[key], abs=1e-6), key
    for key in ("per_class", "per_class_50"):
        assert faster[key] == pytest.approx(reference[key], abs=1e-6), key
    for key in ("precision_50", "precision_75"):
        for name, curve in reference["pr_curves"][key].items():
            assert faster["pr_curves"][key][name] == (None if curve is None else pytest.approx(curve, abs=1e-6))


def test_the_environment_variable_chooses_the_evaluator(monkeypatch):
    from detect_automl import metrics

    asked = []
    real = metrics._evaluator
    monkeypatch.setattr(metrics, "_evaluator", lambda faster: asked.append(faster) or real(False))
    gt, preds = _random_case(0)
    monkeypatch.delenv(metrics.FASTER_ENV, raising=False)
    coco_metrics(gt, preds, ["c0", "c1", "c2"])
    monkeypatch.setenv(metrics.FASTER_ENV, "1")
    coco_metrics(gt, preds, ["c0", "c1", "c2"])
    coco_metrics(gt, preds, ["c0", "c1", "c2"], faster=False)  # the argument wins
    assert asked == [False, True, False]


def test_pr_curves_of_perfect_predictions_are_one_everywhere():
    gt = _multi_class_gt()
    preds = [_pred(g["boxes"], g["labels"], np.ones(len(g["labels"]))) for g in gt]
    curves = coco_metrics(gt, preds, ["cat", "dog", "bird"])["pr_curves"]
    assert curves["recall"] == [k / 100 for k in range(101)]
    for key in ("precision_50", "precision_75"):
        assert list(curves[key]) == ["cat", "dog", "bird"]
        for precision in curves[key].values():
            np.testing.assert_allclose(precision, np.ones(101), atol=TOL)


def test_pr_curve_of_a_hit_a_false_positive_and_a_miss():
    # As in test_hand_computed_false_positive_and_miss: precision 1 up to recall .50, then 0.
    gt = [_gt([[0, 0, 50, 50], [100, 100, 150, 150]], [0, 0])]
    preds = [_pred([[0, 0, 50, 50], [200, 200, 240, 240]], [0, 0], [0.9, 0.8])]
    result = coco_metrics(gt, preds, ["thing"])
    precision = np.asarray(result["pr_curves"]["precision_50"]["thing"])
    np.testing.assert_allclose(precision, [1.0] * 51 + [0.0] * 50, atol=1e-6)
    assert precision.mean() == pytest.approx(result["per_class_50"]["thing"], abs=1e-12)


def test_pr_curves_without_detections_are_zero_and_none_without_ground_truth():
    gt = _multi_class_gt()
    curves = coco_metrics(gt, [_no_pred() for _ in gt], ["cat", "dog", "bird", "fish"])["pr_curves"]
    for key in ("precision_50", "precision_75"):
        assert curves[key]["fish"] is None
        assert all(curves[key][name] == [0.0] * 101 for name in ("cat", "dog", "bird"))


@pytest.mark.parametrize("seed", [0, 1])
def test_pr_curves_are_pycocotools_precision_and_average_to_the_ap(seed, tmp_path):
    gt, preds = _random_case(seed)
    reference = _raw_pycocotools(gt, preds, 3, tmp_path).eval["precision"]  # [T, R, K, A, M]
    result = coco_metrics(gt, preds, ["c0", "c1", "c2"])
    for key, t in (("precision_50", 0), ("precision_75", 5)):
        for k, name in enumerate(["c0", "c1", "c2"]):
            np.testing.assert_allclose(result["pr_curves"][key][name], reference[t, :, k, 0, -1], atol=1e-12)
    for name, ap in result["per_class_50"].items():
        assert np.mean(result["pr_curves"]["precision_50"][name]) == pytest.approx(ap, abs=1e-12)
    assert 0.05 < result["map_50"] < 0.99  # curves that are neither all 0 nor all 1
