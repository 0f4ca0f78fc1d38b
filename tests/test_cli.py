"""The detect-automl command line: fit -> predict -> evaluate on real data."""

from __future__ import annotations

import json
import re
import shutil
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

import detect_automl as da
from detect_automl import cli
from detect_automl.cli import main
from detect_automl.config import TrainConfig
from detect_automl.models import build

LINE = re.compile(r"image (\d+)/(\d+) (.+): (.+), (\d+\.\d)ms")
"""What ``predict`` prints for each image: index/total, path, counts by class name, milliseconds."""


def _untrained_model(path: Path, classes: list[str]) -> Path:
    """Save an untrained detector: at a low score threshold it still finds boxes of every class."""
    board = pd.DataFrame([{"trial_id": "0", "model": "ssdlite320_mobilenet_v3_large"}])
    da.ObjectDetector(build("ssdlite320_mobilenet_v3_large", len(classes)), classes, TrainConfig(pretrained=None),
                      leaderboard=board).save(path)
    return path


def test_fit_predict_evaluate(datasets_dir, tmp_path, capsys):
    data = datasets_dir / "fruits_nuts"  # COCO root with annotations/instances_<split>.json
    out = tmp_path / "run"
    code = main(["fit", str(data), "--split", "train", "--val-split", "val", "--test-split", "test",
                 "--time-limit", "40", "--pretrained", "none", "--epochs", "3", "--batch-size", "2",
                 "--output", str(out), "--logger", "csv"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "trial_id" in printed and "test (test): mAP" in printed and f"saved model: {out / 'model'}" in printed
    for name in ("date", "fig", "hazelnut"):
        assert f"  {name}" in printed  # per-class AP lines
    saved = json.loads((out / "model" / "config.json").read_text())["hyperparameters"]
    assert (saved["epochs"], saved["batch_size"]) == (3, 2)  # fixed from the command line
    epochs = [r["epoch"] for r in json.loads((out / "model" / "history.json").read_text())["0"]]
    assert list(pd.read_csv(out / "logs" / "csv" / "0" / "progress.csv")["epoch"]) == epochs  # --logger csv

    image = str(next((data / "images").glob("*.jpg")))
    assert main(["predict", str(out / "model"), image, "--score-threshold", "0", "--out", str(tmp_path / "p")]) == 0
    predictions = json.loads((tmp_path / "p" / "predictions.json").read_text())
    assert list(predictions) == [image] and predictions[image]
    first = predictions[image][0]
    assert set(first) == {"class_id", "class_name", "score", "box"}
    assert first["class_name"] in ("date", "fig", "hazelnut")
    capsys.readouterr()

    assert main(["evaluate", str(out / "model"), str(data), "--split", "val"]) == 0
    assert "mAP@50" in capsys.readouterr().out


def test_warnings_print_as_one_line_each_on_stderr(datasets_dir, tmp_path, capsys, monkeypatch):
    import detect_automl.api

    def warn_then_fail(*args, **kwargs):
        warnings.warn("1 of the 2 trials asked run in time_limit=40 s", stacklevel=2)
        raise da.SearchError("no trial produced a model")

    monkeypatch.setattr(detect_automl.api, "fit", warn_then_fail)
    code = main(["fit", str(datasets_dir / "raccoon"), "--split", "train", "--time-limit", "40",
                 "--output", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "warning: 1 of the 2 trials asked run in time_limit=40 s\n" in err
    assert "UserWarning" not in err and "cli.py" not in err and "error: no trial produced a model" in err
    assert warnings.showwarning is not cli._show_warning  # given back


def test_errors_exit_2_with_a_message(datasets_dir, tmp_path, capsys):
    assert main(["predict", str(tmp_path / "no_model"), "x.jpg"]) == 2
    assert "error:" in capsys.readouterr().err
    # export loads the directory first: a missing model is the loader's clear error, nothing written
    assert main(["export", str(tmp_path / "no_model"), "--output", str(tmp_path / "out.torchscript")]) == 2
    assert "no_model: no saved model here" in capsys.readouterr().err
    assert not (tmp_path / "out.torchscript").exists()
    # fit's flags reach fit: two NCCL workers cannot share one GPU, said before anything trains
    assert main(["fit", str(datasets_dir / "raccoon"), "--split", "train", "--workers-per-trial", "2",
                 "--gpus-per-trial", "1", "--output", str(tmp_path / "run")]) == 2
    assert "workers_per_trial=2 with gpus_per_trial=1: each worker needs a whole GPU" in capsys.readouterr().err


def test_predict_out_writes_json_and_one_drawn_image_per_input(datasets_dir, tmp_path, capsys):
    model = _untrained_model(tmp_path / "model", ["raccoon"])  # at score threshold 0 it finds boxes to draw
    source = sorted((datasets_dir / "raccoon" / "JPEGImages").glob("*.jpg"))[:2]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    images = [shutil.copy(source[0], tmp_path / "a" / "x.jpg"), shutil.copy(source[1], tmp_path / "b" / "x.jpg"),
              str(source[0])]  # two inputs named x.jpg
    out = tmp_path / "drawn"
    assert main(["predict", str(model), *map(str, images), "--score-threshold", "0", "--out", str(out)]) == 0
    assert f"wrote {out / 'predictions.json'} and 3 drawn images" in capsys.readouterr().out
    predictions = json.loads((out / "predictions.json").read_text())
    assert list(predictions) == list(map(str, images)) and all(predictions.values())
    assert sorted(p.name for p in out.iterdir()) == sorted(["predictions.json", "x.jpg", "x_1.jpg",
                                                            f"{source[0].stem}.jpg"])
    for name, original in (("x.jpg", source[0]), ("x_1.jpg", source[1]), (f"{source[0].stem}.jpg", source[0])):
        with Image.open(out / name) as drawn, Image.open(original) as image:
            assert drawn.format == "JPEG" and drawn.size == image.size
            # JPEG-compressed, but visibly changed where boxes were drawn
            assert np.abs(np.asarray(drawn.convert("RGB"), int) - np.asarray(image.convert("RGB"), int)).max() > 100

    assert main(["predict", str(model), str(source[0]), "--score-threshold", "0.99"]) == 0  # no --out: stdout
    assert json.loads(capsys.readouterr().out) == {str(source[0]): []}

    # A folder stands for the images in it; one without images is an error that names it.
    assert main(["predict", str(model), str(tmp_path / "a"), "--score-threshold", "0.99"]) == 0
    assert list(json.loads(capsys.readouterr().out)) == [str(tmp_path / "a" / "x.jpg")]
    assert main(["predict", str(model), str(out / "missing"), str(tmp_path)]) == 2
    assert f"{tmp_path}: a folder without image files" in capsys.readouterr().err


def _image_lines(printed: str) -> list[re.Match]:
    """The per-image lines among what was printed, each checked against LINE."""
    lines = [line for line in printed.splitlines() if line.startswith("image ")]
    assert all(LINE.fullmatch(line) for line in lines), lines
    return [LINE.fullmatch(line) for line in lines]


def _counts(text: str) -> dict[str, int]:
    """``"2 RBC, 1 WBC"`` -> {"RBC": 2, "WBC": 1}; ``"no detections"`` -> {}."""
    if text == "no detections":
        return {}
    return {name: int(n) for n, name in (part.split(" ", 1) for part in text.split(", "))}


def test_predict_prints_one_line_per_image_unless_quiet(datasets_dir, tmp_path, capsys):
    classes = ["Platelets", "RBC", "WBC"]
    model = _untrained_model(tmp_path / "model", classes)
    images = sorted(str(p) for p in (datasets_dir / "bccd" / "JPEGImages").glob("*.jpg"))[:3]
    out = tmp_path / "out"
    assert main(["predict", str(model), *images, "--score-threshold", "0", "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert f"wrote {out / 'predictions.json'}" in printed.out
    predictions = json.loads((out / "predictions.json").read_text())
    lines = _image_lines(printed.err)  # stderr: stdout stays the result (JSON without --out)
    assert [(int(m[1]), int(m[2]), m[3]) for m in lines] == [(i, 3, path) for i, path in enumerate(images, 1)]
    for m, path in zip(lines, images):
        counts = _counts(m[4])
        assert counts == Counter(d["class_name"] for d in predictions[path])
        assert list(counts) == [c for c in classes if c in counts]  # in class order
        assert 0 < float(m[5]) < 60_000
    assert sum(len(_counts(m[4])) > 1 for m in lines) > 0  # "n A, m B" was exercised

    # Without --out the JSON alone is on stdout; an image without detections says so.
    assert main(["predict", str(model), images[0], "--score-threshold", "1.01"]) == 0
    printed = capsys.readouterr()
    assert json.loads(printed.out) == {images[0]: []}
    assert [m[4] for m in _image_lines(printed.err)] == ["no detections"]

    # --quiet prints none of them, and still writes the same files.
    quiet = tmp_path / "quiet"
    assert main(["predict", str(model), *images, "--score-threshold", "0", "--out", str(quiet), "--quiet"]) == 0
    printed = capsys.readouterr()
    assert not _image_lines(printed.out + printed.err)
    assert json.loads((quiet / "predictions.json").read_text()) == predictions
