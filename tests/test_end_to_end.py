"""fit -> save -> load -> predict on real data, and the saved-model contract."""

from __future__ import annotations

import json
import pickle
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import detect_automl as da
from detect_automl.data.image import read_image

HYPER = {"pretrained": None, "batch_size": 2, "epochs": 2, "warmup_steps": 2}


@pytest.fixture(scope="module")
def fitted(datasets_dir, tmp_path_factory):
    train = da.Dataset(datasets_dir / "raccoon", split="train").subset(8)
    val = da.Dataset(datasets_dir / "raccoon", split="val").subset(3)
    out = tmp_path_factory.mktemp("fit")
    detector = da.fit(train, val, time_limit=120, hyperparameters=HYPER, output_dir=out, progress=False)
    return detector, val, out


def test_fit_saves_the_model_with_leaderboard_and_history(fitted):
    detector, val, out = fitted
    assert detector.path == out / "model"
    assert sorted(p.name for p in detector.path.iterdir()) == ["config.json", "data_report.json", "history.json",
                                                               "leaderboard.csv", "model.pt"]
    report = json.loads((detector.path / "data_report.json").read_text())
    assert report["train"]["skipped"] == report["val"]["skipped"] == [] and report["val"]["num_images"] == 3
    config = json.loads((detector.path / "config.json").read_text())
    assert config["model"] == "ssdlite320_mobilenet_v3_large" and config["class_names"] == ["raccoon"]
    assert config["format_version"] == 2 and config["torch_version"] == torch.__version__
    # Validation metrics are saved without timing and curves; the in-memory ones keep the curves.
    assert "per_class" in config["metrics"] and not {"pr_curves", "seconds"} & set(config["metrics"])
    assert set(detector.metrics["pr_curves"]["precision_50"]) == {"raccoon"}
    board = detector.leaderboard()
    assert list(board.columns[:7]) == ["trial_id", "model", "val_map", "val_map_50", "epochs", "seconds", "status"]
    assert len(board) == 1 and board.loc[0, "status"] == "completed" and board.loc[0, "epochs"] == 2
    history = json.loads((detector.path / "history.json").read_text())
    assert [r["epoch"] for r in history["0"]] == [1, 2]
    # The detector holds the best epoch: re-evaluating gives the leaderboard's val mAP. (About one
    # run in six on a loaded machine the two differed by 6e-5; the cause is not found yet, and the
    # tolerance allows that.)
    assert detector.evaluate(val)["map"] == pytest.approx(board.loc[0, "val_map"], abs=5e-4)


def test_load_predicts_exactly_what_the_fitted_detector_predicts(fitted):
    detector, val, _ = fitted
    loaded = da.ObjectDetector.load(detector.path)
    # it trained channels-last on this CPU, and comes back in the layout a loaded model has
    assert all(p.is_contiguous() for p in detector.model.parameters())
    paths = [str(r.path) for r in val]
    for a, b in zip(detector.predict(paths, score_threshold=0.0), loaded.predict(paths, score_threshold=0.0)):
        assert len(a) > 0
        np.testing.assert_array_equal(a.class_ids, b.class_ids)
        np.testing.assert_array_equal(a.scores, b.scores)
        np.testing.assert_array_equal(a.boxes, b.boxes)
    assert loaded.leaderboard().to_csv() == detector.leaderboard().to_csv()


def test_a_saved_ssdlite_loads_at_the_side_it_records_and_a_format_1_one_at_its_own(fitted, tmp_path):
    """Format 2 records SSDlite's square side; format 1 ignored image_size for SSD models (a
    best_quality config could record 800 for one trained at 320), so such a file loads at 320."""
    detector, _, _ = fitted
    config = json.loads((detector.path / "config.json").read_text())
    for name, version, side, expected in (("v2", 2, 256, 256), ("v1", 1, 800, 320)):
        copy = shutil.copytree(detector.path, tmp_path / name)
        (copy / "config.json").write_text(json.dumps({**config, "format_version": version, "image_size": side}))
        assert da.ObjectDetector.load(copy).model.input_side == expected


def test_predict_accepts_path_array_pil_and_lists(fitted):
    detector, val, _ = fitted
    path = val[0].path
    array = read_image(path)
    by_path = detector.predict(str(path), score_threshold=0.0)
    class_ids, scores, boxes = by_path  # unpacks
    assert class_ids.dtype == np.int64 and scores.dtype == np.float32 and boxes.dtype == np.float32
    assert boxes.shape == (len(scores), 4) and np.all(np.diff(scores) <= 0)  # sorted by score
    assert set(class_ids.tolist()) <= {0} and by_path.labels[:1] == ["raccoon"]
    for other in (detector.predict(array, score_threshold=0.0),
                  detector.predict(Image.fromarray(array), score_threshold=0.0)):
        np.testing.assert_array_equal(other.boxes, boxes)  # one image per forward: the same numbers
    # In a batch of two, convolutions may sum in another order: boxes near the model's own
    # score floor can come and go, the confident ones stay.
    batched = detector.predict([path, array], score_threshold=0.0)[1]
    np.testing.assert_allclose(batched.boxes[:3], boxes[:3], atol=1e-3)
    np.testing.assert_allclose(batched.scores[:3], scores[:3], atol=1e-4)
    # Boxes are in original-image pixels: inside the image, and they scale with it.
    h, w = array.shape[:2]
    assert boxes[:, [0, 2]].max() <= w + 1e-3 and boxes[:, [1, 3]].max() <= h + 1e-3
    big = np.ascontiguousarray(np.repeat(np.repeat(array, 2, axis=0), 2, axis=1))
    top = detector.predict(big, score_threshold=0.0).boxes[0]
    np.testing.assert_allclose(top, boxes[0] * 2, rtol=0.05, atol=4)
    high = detector.predict(str(path), score_threshold=float(scores[0]) + 1e-6)
    assert len(high) == 0 and high.boxes.shape == (0, 4)


def test_evaluate_matches_classes_by_name(fitted, datasets_dir):
    detector, _, _ = fitted
    with pytest.raises(da.DatasetError, match=r"\['date', 'fig', 'hazelnut'\] are not among the model's classes"):
        detector.evaluate(da.Dataset(datasets_dir / "fruits_nuts", format="coco", split="val"))


class _Evil:
    def __reduce__(self):
        return (print, ("pickle code ran",))


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "model.pt").unlink(), "missing model.pt"),
    (lambda d: (d / "model.pt").write_bytes((d / "model.pt").read_bytes()[:1000]), "truncated, corrupted"),
    (lambda d: (d / "model.pt").write_bytes(pickle.dumps({"w": _Evil()})), "truncated, corrupted"),
    (lambda d: (d / "config.json").write_text("{not json"), "unreadable config"),
    (lambda d: (d / "config.json").write_text(json.dumps({"format_version": 99})), "newer than this detect_automl"),
    (lambda d: (d / "config.json").write_text(json.dumps({"hello": 1})), "no format_version"),
    (lambda d: (d / "leaderboard.csv").write_text("\n"), "not a leaderboard CSV"),
])
def test_load_fails_clearly_on_damaged_directories(fitted, tmp_path, damage, message, capsys):
    detector, _, _ = fitted
    copy = tmp_path / "copy"
    shutil.copytree(detector.path, copy)
    damage(copy)
    with pytest.raises(da.ModelError, match=message):
        da.ObjectDetector.load(copy)
    assert "pickle code ran" not in capsys.readouterr().out


def test_a_detector_made_by_hand_saves_and_loads(fitted, tmp_path):
    detector, _, _ = fitted
    bare = da.ObjectDetector(detector.model, detector.class_names, detector.config)  # no search behind it
    loaded = da.ObjectDetector.load(bare.save(tmp_path / "bare"))
    assert loaded.leaderboard().empty and list(loaded.leaderboard().columns[:3]) == ["trial_id", "model", "val_map"]
    assert loaded.history == {}


def test_load_of_a_missing_directory(tmp_path):
    with pytest.raises(da.ModelError, match="no saved model here"):
        da.ObjectDetector.load(tmp_path / "nothing")


def test_foreign_weights_for_another_class_count_fail_clearly(fitted, tmp_path):
    detector, _, _ = fitted
    copy = tmp_path / "copy"
    shutil.copytree(detector.path, copy)
    config = json.loads((copy / "config.json").read_text())
    config["class_names"] = ["a", "b", "c"]
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(da.ModelError, match="weights do not fit ssdlite320_mobilenet_v3_large with 3 classes"):
        da.ObjectDetector.load(copy)


def test_fit_on_coco_data_with_default_validation_split(datasets_dir, tmp_path):
    train = da.Dataset(datasets_dir / "fruits_nuts", format="coco", split="train").subset(6)
    detector = da.fit(train, time_limit=60, hyperparameters={**HYPER, "epochs": 1}, output_dir=tmp_path,
                      progress=False)
    assert detector.class_names == ["date", "fig", "hazelnut"]
    assert len(json.loads((detector.path / "history.json").read_text())["0"]) == 1
    metrics = detector.evaluate(da.Dataset(datasets_dir / "fruits_nuts", format="coco", split="val"))
    assert set(metrics["per_class"]) == {"date", "fig", "hazelnut"} and 0.0 <= metrics["map"] <= 1.0


def test_plot_history_draws_one_line_per_trial(fitted, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    detector, _, _ = fitted
    ax = detector.plot_history()
    assert len(ax.lines) == len(detector.history) == 1
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [r["val_map"] for r in detector.history["0"]])
    ax.figure.savefig(tmp_path / "history.png")
    assert (tmp_path / "history.png").stat().st_size > 1000


def test_an_interrupted_or_disk_full_save_leaves_the_previous_model_intact(fitted, tmp_path, monkeypatch):
    import errno

    detector, val, _ = fitted
    target = tmp_path / "saved"
    detector.save(target)
    before = {p.name: p.read_bytes() for p in target.iterdir()}

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(da.ModelError, match=r"cannot save the model to .*saved.*No space left on device"):
        detector.save(target)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["saved"]  # no half-written leftovers
    da.ObjectDetector.load(target)  # still loads


def test_predict_on_a_video_file_says_so(fitted, tmp_path):
    detector, _, _ = fitted
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    with pytest.raises(da.InputError, match=r"image #0: .*clip.mp4.*not .*image"):
        detector.predict(str(video))
