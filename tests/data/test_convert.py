"""VOC <-> COCO conversion keeps every record exactly: boxes, labels, flags, areas, images without boxes."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from detect_automl import Dataset, InputError
from detect_automl.cli import main
from detect_automl.data.convert import convert


def test_voc_coco_voc_round_trip_via_the_cli(datasets_dir, tmp_path, assert_same_records, capsys):
    raccoon = datasets_dir / "raccoon"
    splits = ["--split", "train", "--split", "test"]
    assert main(["convert", str(raccoon), "--to", "coco", "--output", str(tmp_path / "coco"), *splits]) == 0
    assert main(["convert", str(tmp_path / "coco"), "--to", "voc", "--output", str(tmp_path / "voc"), *splits]) == 0
    assert f"wrote VOC dataset: {tmp_path / 'voc'}" in capsys.readouterr().out

    for split in ("train", "test"):
        source = Dataset(raccoon, split=split)
        assert len(Dataset(tmp_path / "coco", format="coco", split=split)) == len(source)
        back = Dataset(tmp_path / "voc", split=split)
        assert back.classes == source.classes
        assert_same_records(back.records, source.records)


def test_flags_and_images_without_boxes_survive_both_ways(datasets_dir, tmp_path, assert_same_records):
    source = Dataset(datasets_dir / "raccoon", split="test").subset(3)
    first, second, third = source.records
    first.difficult[0] = True
    second.iscrowd[0] = True
    records = [first, second, third.with_boxes(third.labels < 0)]  # the third one has no box left
    Dataset.from_records(records, source.classes).to_voc(tmp_path / "voc", split="s")
    voc = Dataset(tmp_path / "voc", split="s")

    convert(tmp_path / "voc", "coco", tmp_path / "coco", splits=["s"])
    convert(tmp_path / "coco", "voc", tmp_path / "voc2", splits=["s"])
    assert_same_records(Dataset(tmp_path / "voc2", split="s").records, voc.records)

    coco = Dataset(tmp_path / "coco", format="coco", split="s")
    assert coco.records[2].boxes.shape == (0, 4) and coco.records[1].iscrowd[0] and coco.records[0].difficult[0]
    convert(tmp_path / "voc2", "coco", tmp_path / "coco2", splits=["s"])  # COCO -> VOC -> COCO
    assert_same_records(Dataset(tmp_path / "coco2", format="coco", split="s").records, coco.records)


def test_every_image_without_a_split_and_a_coco_json_as_source(datasets_dir, tmp_path, assert_same_records):
    instances = datasets_dir / "fruits_nuts" / "annotations" / "instances_val.json"  # ids 1, 10: 1.jpg, 2.jpg
    convert(instances, "voc", tmp_path / "voc")
    convert(tmp_path / "voc", "coco", tmp_path / "coco")

    source = Dataset(instances)
    back = Dataset(tmp_path / "coco" / "annotations" / "instances_all.json")
    assert back.classes == source.classes
    # A VOC id is the image file's stem, and an integer VOC id is kept as the COCO id. VOC has no
    # area: the polygon areas of the source are lost on the way, and the box area stands for them.
    expected = [replace(r, image_id=r.path.stem, area=np.full(len(r.boxes), np.nan)) for r in source]
    assert_same_records(back.records, expected)
    assert all(np.isfinite(r.area).all() for r in source)


def test_coco_to_coco_keeps_the_polygon_areas(datasets_dir, tmp_path, assert_same_records):
    fruits = datasets_dir / "fruits_nuts"
    convert(fruits, "coco", tmp_path / "coco", splits=["val"])
    source = Dataset(fruits, format="coco", split="val")
    assert_same_records(Dataset(tmp_path / "coco", format="coco", split="val").records, source.records)
    assert any((r.object_area != (r.boxes[:, 2] - r.boxes[:, 0]) * (r.boxes[:, 3] - r.boxes[:, 1])).all()
               for r in source)  # what is kept really is not the box area


def test_bad_target_or_the_source_folder_as_output(datasets_dir):
    raccoon = datasets_dir / "raccoon"
    with pytest.raises(InputError, match="to must be one of"):
        convert(raccoon, "yolo", "out")
    with pytest.raises(InputError, match="is the folder of the source dataset"):
        convert(raccoon, "voc", raccoon)
    with pytest.raises(InputError, match="is the folder of the source dataset"):
        convert(datasets_dir / "fruits_nuts" / "annotations" / "instances_val.json", "coco",
                datasets_dir / "fruits_nuts")
