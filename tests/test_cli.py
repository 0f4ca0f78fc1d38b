"""The detect-automl command line: fit -> predict -> evaluate on real data."""

from __future__ import annotations

import json

from detect_automl.cli import main


def test_fit_predict_evaluate(datasets_dir, tmp_path, capsys):
    data = datasets_dir / "fruits_nuts"  # COCO root with annotations/instances_<split>.json
    out = tmp_path / "run"
    code = main(["fit", str(data), "--split", "train", "--val-split", "val", "--test-split", "test",
                 "--time-limit", "40", "--pretrained", "none", "--epochs", "3", "--batch-size", "2",
                 "--output", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "trial_id" in printed and "test (test): mAP" in printed and f"saved model: {out / 'model'}" in printed
    for name in ("date", "fig", "hazelnut"):
        assert f"  {name}" in printed  # per-class AP lines
    saved = json.loads((out / "model" / "config.json").read_text())["hyperparameters"]
    assert (saved["epochs"], saved["batch_size"]) == (3, 2)  # fixed from the command line

    image = str(next((data / "images").glob("*.jpg")))
    assert main(["predict", str(out / "model"), image, "--score-threshold", "0", "--out", str(tmp_path / "p")]) == 0
    predictions = json.loads((tmp_path / "p" / "predictions.json").read_text())
    assert list(predictions) == [image] and predictions[image]
    first = predictions[image][0]
    assert set(first) == {"class_id", "class_name", "score", "box"} and first["class_name"] in ("date", "fig", "hazelnut")
    capsys.readouterr()

    assert main(["evaluate", str(out / "model"), str(data), "--split", "val"]) == 0
    assert "mAP@50" in capsys.readouterr().out


def test_errors_exit_2_with_a_message(tmp_path, capsys):
    assert main(["predict", str(tmp_path / "no_model"), "x.jpg"]) == 2
    assert "error:" in capsys.readouterr().err
