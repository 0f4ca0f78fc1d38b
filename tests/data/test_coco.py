"""COCO instances JSON reading and writing on the embedded fruits_nuts set (and edited copies)."""

from __future__ import annotations

import gc
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from detect_automl.data.coco import read_coco, write_coco
from detect_automl.data.records import ImageRecord
from detect_automl.errors import DatasetError


@pytest.fixture()
def fruits(datasets_dir: Path) -> Path:
    return datasets_dir / "fruits_nuts"


def _instances(fruits: Path, split: str = "train") -> dict:
    return json.loads((fruits / "annotations" / f"instances_{split}.json").read_text())


def _write(tmp_path: Path, data: dict, name: str = "edited.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data, indent=1))
    return path


@pytest.mark.parametrize(("split", "images", "boxes", "per_class"),
                         [("train", 14, 128, [53, 34, 41]), ("val", 2, 17, [10, 2, 5]), ("test", 2, 20, [8, 5, 7])])
def test_counts_per_split_match_source_table(fruits, split, images, boxes, per_class):
    classes, records, cat_ids = read_coco(fruits / "annotations" / f"instances_{split}.json")
    assert classes == ["date", "fig", "hazelnut"] and cat_ids == [1, 2, 3]
    assert len(records) == images and sum(len(r.boxes) for r in records) == boxes
    labels = np.concatenate([r.labels for r in records])
    assert np.bincount(labels, minlength=3).tolist() == per_class
    assert all(r.path.parent == fruits / "images" and r.path.is_file() for r in records)


def test_bbox_xywh_becomes_xyxy(fruits):
    data = _instances(fruits)
    ann = data["annotations"][0]
    _, records, _ = read_coco(fruits / "annotations" / "instances_train.json")
    rec = next(r for r in records if r.image_id == str(ann["image_id"]))
    x, y, w, h = ann["bbox"]
    assert [x, y, x + w, y + h] in rec.boxes.tolist()


def test_categories_in_id_order_and_unused_ones_kept(fruits, tmp_path):
    data = _instances(fruits)
    data["categories"] = [{"id": 9, "name": "walnut"}] + data["categories"][::-1]
    classes, records, cat_ids = read_coco(_write(tmp_path, data), images=fruits / "images")
    assert classes == ["date", "fig", "hazelnut", "walnut"] and cat_ids == [1, 2, 3, 9]
    assert not any((r.labels == 3).any() for r in records)


def test_negative_image_is_kept(fruits, tmp_path):
    data = _instances(fruits)
    data["images"].append({"id": 1000, "file_name": "1.jpg", "width": 800, "height": 600})
    _, records, _ = read_coco(_write(tmp_path, data), images=fruits / "images")
    assert len(records) == 15
    negative = records[-1]
    assert negative.image_id == "1000" and negative.boxes.shape == (0, 4) and negative.labels.shape == (0,)


def test_image_folder_lookup_order(fruits, tmp_path):
    # <json dir>/../images is found without images=
    root = tmp_path / "coco"
    shutil.copytree(fruits / "annotations", root / "annotations")
    (root / "images").mkdir()
    data = _instances(fruits, "val")
    for image in data["images"]:
        shutil.copy(fruits / "images" / image["file_name"], root / "images")
    _, records, _ = read_coco(root / "annotations" / "instances_val.json")
    assert {r.path.parent for r in records} == {root / "images"}
    # <json dir> itself is the last resort; an empty <json dir>/images without the files is skipped
    (root / "annotations" / "images").mkdir()
    shutil.move(root / "images", root / "flat")
    shutil.copy(root / "annotations" / "instances_val.json", root / "flat")
    _, records, _ = read_coco(root / "flat" / "instances_val.json")
    assert {r.path.parent for r in records} == {root / "flat"}
    with pytest.raises(DatasetError, match=r"instances_val\.json: image '1\.jpg' not found \(looked in"):
        read_coco(root / "annotations" / "instances_val.json")


def test_round_trip_is_exact(fruits, tmp_path, assert_same_records):
    classes, records, _ = read_coco(fruits / "annotations" / "instances_val.json")
    r = records[0]
    boxes = r.boxes.copy()
    boxes[0] = [0.1, 10.25, 33.3333, 599.9]
    flags = np.zeros(len(boxes), bool)
    flags[1] = True
    records[0] = ImageRecord(r.path, r.width, r.height, boxes, r.labels, difficult=flags, iscrowd=flags[::-1],
                             image_id=r.image_id)
    out = tmp_path / "annotations" / "instances_val.json"
    write_coco(classes, records, out)
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == sorted(r.path.name for r in records)
    written = json.loads(out.read_text())
    assert [a["id"] for a in written["annotations"]] == list(range(1, 18))
    assert [c["id"] for c in written["categories"]] == [1, 2, 3]
    classes2, records2, cat_ids = read_coco(out)
    assert classes2 == classes and cat_ids == [1, 2, 3]
    assert_same_records(records2, records)


def test_non_integer_ids_are_renumbered(fruits, tmp_path):
    classes, records, _ = read_coco(fruits / "annotations" / "instances_test.json")
    for k, r in enumerate(records):
        r.image_id = f"img-{k}"
    write_coco(classes, records, tmp_path / "x.json", images_dir=tmp_path / "imgs")
    _, back, _ = read_coco(tmp_path / "x.json", images=tmp_path / "imgs")
    assert [r.image_id for r in back] == ["1", "2"]


def test_malformed_json_names_file_line_and_column(fruits, tmp_path):
    text = (fruits / "annotations" / "instances_val.json").read_text()
    path = tmp_path / "broken.json"
    path.write_text("{\n  \"images\": [\n    {\"id\": 1,,}\n" + text[1:])
    with pytest.raises(DatasetError, match=r"broken\.json: malformed JSON at line 3, column 14"):
        read_coco(path)


def test_reading_leaves_the_garbage_collector_as_it_found_it(fruits, tmp_path):
    """The collector is paused while a file is read (COCO-sized files read twice as fast), never longer."""
    broken = _write(tmp_path, {"images": "not a list", "categories": []})
    assert gc.isenabled()
    read_coco(fruits / "annotations" / "instances_val.json")
    assert gc.isenabled()
    with pytest.raises(DatasetError, match="missing or invalid 'images' list"):
        read_coco(broken)
    assert gc.isenabled()
    gc.disable()  # a caller that turned it off keeps it off
    try:
        read_coco(fruits / "annotations" / "instances_val.json")
        assert not gc.isenabled()
    finally:
        gc.enable()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["annotations"][2].update(image_id=424242), r"annotation id \d+: unknown image_id 424242"),
        (lambda d: d["annotations"][3].update(category_id=7), r"annotation id \d+: unknown category_id 7"),
        (lambda d: d["annotations"][1].pop("bbox"), r"annotations\[1\] \(id \d+\) has no 'bbox'"),
        (lambda d: d["annotations"][0].update(bbox=[1, 2, "x", 4]), r"annotation id \d+: bbox must be 4 numbers"),
        (lambda d: d.pop("categories"), r"missing or invalid 'categories' list"),
        (lambda d: d["images"][0].pop("file_name"), r"images\[0\] \(id \d+\) has no 'file_name'"),
    ],
)
def test_bad_entries_name_file_and_annotation(fruits, tmp_path, edit, message):
    data = _instances(fruits, "val")
    edit(data)
    with pytest.raises(DatasetError, match=r"edited\.json: " + message):
        read_coco(_write(tmp_path, data), images=fruits / "images")


def test_missing_image_is_named(fruits, tmp_path):
    data = _instances(fruits, "val")
    data["images"][1]["file_name"] = "missing.jpg"
    with pytest.raises(DatasetError, match=r"edited\.json: image id \d+: file .*missing\.jpg not found"):
        read_coco(_write(tmp_path, data), images=fruits / "images")


def test_area_is_read_and_written_back(fruits, tmp_path):
    # fruits_nuts' areas are polygon areas, not w*h: COCO -> records -> COCO keeps them (float32, like boxes).
    data = _instances(fruits)
    classes, records, _ = read_coco(fruits / "annotations" / "instances_train.json")
    areas = np.concatenate([r.area for r in records])
    assert areas.dtype == np.float32
    by_image = {str(i["id"]): [a["area"] for a in data["annotations"] if a["image_id"] == i["id"]]
                for i in data["images"]}
    expected = np.concatenate([np.asarray(by_image[r.image_id], np.float32) for r in records])
    np.testing.assert_array_equal(areas, expected)
    box_areas = np.concatenate([(r.boxes[:, 2] - r.boxes[:, 0]) * (r.boxes[:, 3] - r.boxes[:, 1]) for r in records])
    assert (np.abs(areas - box_areas) > 1).sum() > 100  # really not the box area

    write_coco(classes, records, tmp_path / "out.json", images_dir=tmp_path / "images")
    written = json.loads((tmp_path / "out.json").read_text())["annotations"]
    np.testing.assert_array_equal(np.asarray([a["area"] for a in written], np.float32), expected)
    _, back, _ = read_coco(tmp_path / "out.json", images=tmp_path / "images")
    np.testing.assert_array_equal(np.concatenate([r.area for r in back]), expected)


@pytest.mark.parametrize("area", ["missing", None, "12", True, 0, -5.0, float("nan"), float("inf"), 10**400])
def test_missing_or_unusable_area_means_the_box_area(fruits, tmp_path, area):
    data = _instances(fruits, "val")
    ann = data["annotations"][0]
    if area == "missing":
        del ann["area"]
    else:
        ann["area"] = area
    _, records, _ = read_coco(_write(tmp_path, data), images=fruits / "images")
    rec = next(r for r in records if r.image_id == str(ann["image_id"]))
    k = rec.boxes.tolist().index([ann["bbox"][0], ann["bbox"][1], ann["bbox"][0] + ann["bbox"][2],
                                  ann["bbox"][1] + ann["bbox"][3]])
    assert np.isnan(rec.area[k]) and np.isfinite(np.delete(rec.area, k)).all()
    assert rec.object_area[k] == ann["bbox"][2] * ann["bbox"][3]
    write_coco(["date", "fig", "hazelnut"], [rec], tmp_path / "out.json", images_dir=tmp_path / "images")
    assert json.loads((tmp_path / "out.json").read_text())["annotations"][k]["area"] == ann["bbox"][2] * ann["bbox"][3]


def test_area_follows_the_boxes_kept(fruits):
    _, records, _ = read_coco(fruits / "annotations" / "instances_val.json")
    rec = records[0]
    keep = np.arange(len(rec.boxes)) % 2 == 0
    sub = rec.with_boxes(keep)
    np.testing.assert_array_equal(sub.area, rec.area[keep])
    assert np.isnan(ImageRecord(rec.path, boxes=rec.boxes, labels=rec.labels).area).sum() == len(rec.boxes)
    with pytest.raises(ValueError):
        ImageRecord(rec.path, boxes=rec.boxes, labels=rec.labels, area=[1.0, 2.0])


@pytest.mark.parametrize("source", ["fruits_nuts train", "fruits_nuts test", "bccd written as COCO"])
def test_column_reader_and_one_by_one_reader_agree(fruits, datasets_dir, tmp_path, monkeypatch, assert_same_records,
                                                   source):
    """A well-formed file is read column by column (fast); one with a bad annotation one by one (to name it).

    Only the file's cleanliness picks the path, so they must give identical records: the private
    column reader is switched off here to compare the two on the same real files.
    """
    from detect_automl.data import coco
    from detect_automl.data.dataset import Dataset

    if source.startswith("bccd"):  # VOC boxes in a COCO file, some flagged difficult or crowd
        bccd = Dataset(datasets_dir / "bccd", split="trainval")
        write_coco(bccd.classes, bccd.records, tmp_path / "bccd.json", images_dir=tmp_path / "images")
        data = json.loads((tmp_path / "bccd.json").read_text())
        for ann in data["annotations"][::7]:
            ann["difficult" if ann["id"] % 2 else "iscrowd"] = 1
        path, images = _write(tmp_path, data, "bccd.json"), tmp_path / "images"
    else:
        path, images = fruits / "annotations" / f"instances_{source.split()[1]}.json", None
    classes, columns, cat_ids = read_coco(path, images=images)
    assert sum(len(r.boxes) for r in columns) > 0
    monkeypatch.setattr(coco, "_annotation_columns", lambda *args: None)
    assert read_coco(path, images=images)[0::2] == (classes, cat_ids)
    assert_same_records(columns, read_coco(path, images=images)[1])
    if source.startswith("bccd"):
        assert any(r.difficult.any() for r in columns) and any(r.iscrowd.any() for r in columns)
