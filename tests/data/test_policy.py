"""The bad-data policy on broken copies of real data: isolated bad items are skipped and kept on
record, systematic ones stop the call, ``on_error`` picks strict or lenient, the files never change."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import warnings
from pathlib import Path

import pytest

import detect_automl as da
from detect_automl.cli import main
from detect_automl.config import TrainConfig
from detect_automl.data.checks import check_dataset
from detect_automl.data.convert import convert
from detect_automl.data.policy import MAX_BAD_FRACTION
from detect_automl.errors import DatasetError
from detect_automl.models import build

N = 20  # real raccoon training pairs per copy: 2 bad is 10 % (isolated), 3 bad is 15 % (systematic)
TINY = {"pretrained": None, "epochs": 1, "batch_size": 4, "warmup_steps": 2}


@pytest.fixture()
def ids(datasets_dir) -> list[str]:
    return (datasets_dir / "raccoon" / "ImageSets" / "Main" / "train.txt").read_text().split()[:N]


@pytest.fixture()
def voc(datasets_dir, tmp_path, copy_voc, ids) -> Path:
    return copy_voc(datasets_dir / "raccoon", tmp_path / "voc", ids)


def _jpeg(voc: Path, image_id: str) -> Path:
    return voc / "JPEGImages" / f"{image_id}.jpg"


def _box_outside(voc: Path, image_id: str) -> None:
    """Move the first box of ``image_id`` far past the right edge of its image (a box_outside error)."""
    xml = voc / "Annotations" / f"{image_id}.xml"
    xml.write_text(re.sub(r"<xmax>[^<]*</xmax>", "<xmax>99999</xmax>", xml.read_text(), count=1))


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _fit(train, tmp_path, **kwargs):
    return da.fit(train, time_limit=60, hyperparameters=TINY, output_dir=tmp_path / "out", progress=False, **kwargs)


def _warnings_naming(caught: list[warnings.WarningMessage], *names: str) -> list[str]:
    return [str(w.message) for w in caught if any(n in str(w.message) for n in names)]


def test_fit_trains_past_one_truncated_jpeg_and_keeps_the_list(voc, ids, tmp_path, truncate):
    bad = _jpeg(voc, ids[3])
    truncate(bad)
    before = _digest(voc)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        detector = _fit(da.Dataset(voc), tmp_path)
    named = _warnings_naming(caught, bad.name)
    assert len(named) == 1 and "image_truncated" in named[0] and "image dropped" in named[0], named
    assert len(detector.history["0"]) == 1  # it trained
    report = json.loads((detector.path / "data_report.json").read_text())
    assert report["on_error"] == "auto" and report["max_bad_fraction"] == MAX_BAD_FRACTION
    assert report["val"] is None  # held out of train, after the check
    train = report["train"]
    assert (train["num_images"], train["num_images_skipped"], train["num_boxes_skipped"]) == (N - 1, 1, 0)
    assert [(p["code"], p["file"], p["record"]) for p in train["skipped"]] == [("image_truncated", str(bad), ids[3])]
    assert da.ObjectDetector.load(detector.path).data_report == report
    assert _digest(voc) == before  # nothing on disk changed


def test_fit_refuses_three_bad_images_in_twenty(voc, ids, tmp_path, truncate):
    for i in ids[:3]:
        truncate(_jpeg(voc, i))
    with pytest.raises(DatasetError, match=r"3 of 20 images \(15 %\)") as caught:
        _fit(da.Dataset(voc), tmp_path)
    for i in ids[:3]:
        assert f"{i}.jpg" in str(caught.value)
    assert {p.record for p in caught.value.problems if p.severity == "error"} == set(ids[:3])
    assert not (tmp_path / "out").exists()


def test_two_bad_images_in_twenty_are_still_isolated(voc, ids, truncate):
    for i in ids[:2]:
        truncate(_jpeg(voc, i))
    with pytest.warns(UserWarning, match="2 bad item"):
        kept = check_dataset(da.Dataset(voc))
    assert [r.image_id for r in kept] == ids[2:]
    assert [p.record for p in kept.problems] == ids[:2]  # the kept data says what it lost


def test_too_many_bad_boxes_is_systematic(voc, ids):
    for i in ids[:3]:
        _box_outside(voc, i)
    data = da.Dataset(voc)
    boxes = sum(len(r.boxes) for r in data)
    with pytest.raises(DatasetError, match=rf"3 of {boxes} boxes") as caught:
        check_dataset(data)
    assert all(f"{i}.xml" in str(caught.value) for i in ids[:3])
    with pytest.warns(UserWarning, match="3 bad item"):
        kept = check_dataset(data, on_error="skip")
    assert sum(len(r.boxes) for r in kept) == boxes - 3 and len(kept) == N  # images kept as negatives


def test_on_error_raise_is_strict_on_one_bad_image(voc, ids, tmp_path, truncate):
    truncate(_jpeg(voc, ids[5]))
    with pytest.raises(DatasetError, match=rf"(?s)on_error='raise'.*{ids[5]}\.jpg"):
        _fit(da.Dataset(voc), tmp_path, on_error="raise")
    assert not (tmp_path / "out").exists()


def test_on_error_skip_trains_past_any_share_and_lists_train_and_val(voc, ids, datasets_dir, tmp_path, truncate,
                                                                     copy_voc):
    for i in ids[:3]:
        truncate(_jpeg(voc, i))
    val_ids = (datasets_dir / "raccoon" / "ImageSets" / "Main" / "val.txt").read_text().split()[:4]
    val_root = copy_voc(datasets_dir / "raccoon", tmp_path / "val", val_ids)
    (_jpeg(val_root, val_ids[1])).write_text("not an image")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        detector = _fit(da.Dataset(voc), tmp_path, val=da.Dataset(val_root), on_error="skip")
    assert len(_warnings_naming(caught, f"{ids[0]}.jpg")) == 1
    report = json.loads((detector.path / "data_report.json").read_text())
    assert report["on_error"] == "skip"
    assert [p["record"] for p in report["train"]["skipped"]] == ids[:3]  # the order of the records
    assert report["train"]["num_images"] == N - 3
    assert [(p["code"], p["record"]) for p in report["val"]["skipped"]] == [("not_an_image", val_ids[1])]


def test_evaluate_counts_scored_and_skipped(voc, ids, truncate):
    truncate(_jpeg(voc, ids[0]))
    _box_outside(voc, ids[1])
    detector = da.ObjectDetector(build("ssdlite320_mobilenet_v3_large", 1), ["raccoon"], TrainConfig())
    data = da.Dataset(voc)
    boxes = sum(len(r.boxes) for r in data)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metrics = detector.evaluate(data)
    assert len(_warnings_naming(caught, f"{ids[0]}.jpg")) == 1
    assert (metrics["num_images"], metrics["num_images_skipped"]) == (N - 1, 1)
    assert metrics["num_boxes_skipped"] == 1
    assert metrics["num_ground_truth"] == boxes - 1 - len(data[0].boxes)
    with pytest.raises(DatasetError, match="on_error='raise'"):
        detector.evaluate(data, on_error="raise")


def test_dataset_reads_past_one_malformed_annotation(voc, ids):
    xml = voc / "Annotations" / f"{ids[4]}.xml"
    xml.write_text(xml.read_text().replace("</annotation>", ""))
    data = da.Dataset(voc)
    assert [r.image_id for r in data] == ids[:4] + ids[5:]
    assert [(p.code, p.file) for p in data.problems] == [("annotation_malformed", str(xml))]
    with pytest.raises(DatasetError, match=rf"{ids[4]}\.xml: malformed XML"):
        da.Dataset(voc, on_error="raise")


def test_dataset_refuses_many_malformed_annotations(voc, ids):
    for i in ids[:3]:
        xml = voc / "Annotations" / f"{i}.xml"
        xml.write_text(xml.read_text().replace("</annotation>", ""))
    with pytest.raises(DatasetError, match=r"3 of 20 images \(15 %\)") as caught:
        da.Dataset(voc)
    assert all(f"{i}.xml" in str(caught.value) for i in ids[:3])
    assert len(da.Dataset(voc, on_error="skip")) == N - 3


@pytest.mark.parametrize("on_error", ["auto", "skip", "raise"])
def test_unreadable_coco_json_raises_whatever_the_policy(datasets_dir, tmp_path, on_error):
    src = datasets_dir / "fruits_nuts" / "annotations" / "instances_train.json"
    path = tmp_path / "annotations" / "instances_train.json"
    path.parent.mkdir()
    path.write_text(src.read_text()[:-40])  # cut short: not JSON any more
    shutil.copytree(datasets_dir / "fruits_nuts" / "images", tmp_path / "images")
    with pytest.raises(DatasetError, match=r"instances_train\.json: malformed JSON"):
        da.Dataset(path, on_error=on_error)


def test_convert_stays_strict(voc, ids, tmp_path):
    xml = voc / "Annotations" / f"{ids[4]}.xml"
    xml.write_text(xml.read_text().replace("</annotation>", ""))
    with pytest.raises(DatasetError, match=rf"{ids[4]}\.xml: malformed XML"):
        convert(voc, "coco", tmp_path / "coco")  # a conversion that left an image out would lose it


def test_cli_documents_the_three_values(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--on-error {auto,raise,skip}" in text and "(default: auto)" in text
