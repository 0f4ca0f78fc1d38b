"""The Dataset container: format detection, splits, subsets, stats and conversions, on real data."""

from __future__ import annotations

import logging
import shutil
from dataclasses import replace

import numpy as np
import pytest

from detect_automl.data import Dataset, ImageRecord
from detect_automl.errors import DatasetError, InputError


@pytest.fixture(scope="module")
def raccoon_val(datasets_dir) -> Dataset:
    return Dataset(datasets_dir / "raccoon", split="val")


@pytest.mark.parametrize(
    ("path", "split", "fmt", "images", "boxes"),
    [
        ("raccoon", "train", "voc", 144, 156),
        ("fruits_nuts", "train", "coco", 14, 128),
        ("fruits_nuts/annotations/instances_test.json", None, "coco", 2, 20),
        ("fruits_nuts/annotations/trainval.json", None, "coco", 18, 165),
    ],
)
def test_format_detection_and_counts(datasets_dir, caplog, path, split, fmt, images, boxes):
    with caplog.at_level(logging.INFO, logger="detect_automl"):
        ds = Dataset(datasets_dir / path, split=split)
    assert ds.format == fmt
    assert f"detected {fmt.upper()}" in caplog.text
    assert len(ds) == images and ds.stats()["num_boxes"] == boxes
    assert ds.root == datasets_dir / path
    assert f"images={images}" in repr(ds) and f"boxes={boxes}" in repr(ds)


def test_explicit_format_matches_detection(datasets_dir):
    detected = Dataset(datasets_dir / "fruits_nuts", split="val")
    explicit = Dataset(datasets_dir / "fruits_nuts", format="coco", split="val")
    assert explicit.classes == detected.classes == ["date", "fig", "hazelnut"]
    assert [r.image_id for r in explicit] == [r.image_id for r in detected]


def test_undetectable_layout_says_what_it_looked_for(tmp_path):
    with pytest.raises(DatasetError, match=r"Annotations/.*annotations/instances_<split>\.json"):
        Dataset(tmp_path)
    with pytest.raises(DatasetError, match="not found"):
        Dataset(tmp_path / "absent")
    with pytest.raises(InputError, match="format must be"):
        Dataset(tmp_path, format="yolo")


def test_coco_root_needs_a_split(datasets_dir):
    with pytest.raises(DatasetError, match=r"needs split=.*'test', 'train', 'val'"):
        Dataset(datasets_dir / "fruits_nuts")
    with pytest.raises(DatasetError, match=r"instances_nope\.json: not found"):
        Dataset(datasets_dir / "fruits_nuts", split="nope")


def test_classes_identical_across_splits(datasets_dir):
    for name in ("bccd", "fruits_nuts"):
        splits = [Dataset(datasets_dir / name, split=s) for s in ("train", "val", "test")]
        assert splits[0].classes == splits[1].classes == splits[2].classes


def test_sequence_protocol(raccoon_val):
    assert len(raccoon_val) == 16
    assert isinstance(raccoon_val[0], ImageRecord)
    assert raccoon_val[-1] is raccoon_val.records[-1]
    assert [r.image_id for r in raccoon_val] == [r.image_id for r in raccoon_val.records]


def test_stats_match_source_table(datasets_dir):
    stats = Dataset(datasets_dir / "bccd", split="train").stats()
    assert stats == {
        "num_images": 205,
        "num_boxes": 2805,
        "boxes_per_class": {"Platelets": 209, "RBC": 2382, "WBC": 214},
        "images_without_boxes": 0,
    }


def test_stats_count_negatives_and_unused_classes(raccoon_val):
    ds = Dataset.from_records(raccoon_val.records[:3] + [ImageRecord(raccoon_val[3].path)], ["raccoon", "cat"])
    stats = ds.stats()
    assert stats["images_without_boxes"] == 1 and stats["boxes_per_class"]["cat"] == 0
    assert stats["num_images"] == 4


def test_split_is_deterministic_and_disjoint(datasets_dir):
    ds = Dataset(datasets_dir / "bccd", split="val")
    train, val = ds.split(val_fraction=0.2, seed=3)
    ds.split(val_fraction=0.5, seed=11)  # other calls in between change nothing
    np.random.seed(123)
    train2, val2 = ds.split(val_fraction=0.2, seed=3)
    ids = lambda d: [r.image_id for r in d]  # noqa: E731
    assert ids(train) == ids(train2) and ids(val) == ids(val2)
    assert len(val) == round(87 * 0.2) and len(train) + len(val) == 87
    assert not set(ids(train)) & set(ids(val))
    assert set(ids(train)) | set(ids(val)) == set(ids(ds))
    assert ids(ds.split(0.2, seed=4)[1]) != ids(val)
    assert train.classes == val.classes == ds.classes


def test_split_keeps_one_image_each_side(raccoon_val):
    for fraction in (0.01, 0.99):
        train, val = raccoon_val.subset(2).split(val_fraction=fraction)
        assert len(train) == len(val) == 1
    with pytest.raises(InputError):
        raccoon_val.split(val_fraction=1.0)


def test_subset_by_count_and_indices(raccoon_val):
    assert [r.image_id for r in raccoon_val.subset(3)] == [r.image_id for r in raccoon_val.records[:3]]
    picked = raccoon_val.subset([5, 0])
    assert [r.image_id for r in picked] == [raccoon_val[5].image_id, raccoon_val[0].image_id]
    assert picked.classes == raccoon_val.classes and picked.format == "voc"
    with pytest.raises(InputError):
        raccoon_val.subset([100])


def test_from_records_rejects_out_of_range_labels(raccoon_val):
    with pytest.raises(DatasetError, match="outside the 1 classes"):
        Dataset.from_records([ImageRecord(raccoon_val[0].path, boxes=[[0, 0, 5, 5]], labels=[1])], ["raccoon"])


def test_coco_with_given_classes_reindexes_by_name(datasets_dir):
    ds = Dataset(datasets_dir / "fruits_nuts", split="val", classes=["hazelnut", "date", "fig", "walnut"])
    original = Dataset(datasets_dir / "fruits_nuts", split="val")
    mapping = np.array([1, 2, 0])  # date->1, fig->2, hazelnut->0
    for a, b in zip(ds, original):
        np.testing.assert_array_equal(a.labels, mapping[b.labels])
    with pytest.raises(DatasetError, match="'fig' is not in classes"):
        Dataset(datasets_dir / "fruits_nuts", split="val", classes=["date", "hazelnut"])


def test_reindexing_keeps_each_box_with_its_area(datasets_dir):
    original = Dataset(datasets_dir / "fruits_nuts", split="val")
    ds = Dataset(datasets_dir / "fruits_nuts", split="val", classes=["hazelnut", "date"], on_error="skip")
    for a, b in zip(ds, original):
        kept = b.labels != 1  # fig is not in the list: its boxes are skipped
        np.testing.assert_array_equal(a.boxes, b.boxes[kept])
        np.testing.assert_array_equal(a.area, b.area[kept])
    assert sum(len(r.boxes) for r in ds) == 15 and np.isfinite(np.concatenate([r.area for r in ds])).all()


def test_with_classes_reindexes_by_name_into_a_new_dataset(datasets_dir, caplog):
    original = Dataset(datasets_dir / "fruits_nuts", split="val")  # classes date, fig, hazelnut
    labels_before = [r.labels.copy() for r in original]
    wider = original.with_classes(["hazelnut", "walnut", "date", "fig"])
    assert wider.classes == ["hazelnut", "walnut", "date", "fig"] and wider.root == original.root
    for new, old, before in zip(wider, original, labels_before):
        assert new is not old
        np.testing.assert_array_equal(new.labels, np.array([2, 3, 0])[before])
        np.testing.assert_array_equal(old.labels, before)  # the source records are unchanged
        np.testing.assert_array_equal(new.boxes, old.boxes)
    with pytest.raises(DatasetError, match=r"instances_val\.json: image \d+: box #\d+: class 'fig' is not in classes"):
        original.with_classes(["date", "hazelnut"])
    with caplog.at_level(logging.WARNING):
        fewer = original.with_classes(["date", "hazelnut"], on_unknown="drop")
    fig = sum(int((r.labels == 1).sum()) for r in original)
    assert fewer.stats()["boxes_per_class"] == {"date": sum(int((r.labels == 0).sum()) for r in original),
                                                "hazelnut": sum(int((r.labels == 2).sum()) for r in original)}
    assert len(fewer) == len(original) and len(fewer.problems) == fig > 0
    assert {(p.code, p.drops) for p in fewer.problems} == {("unknown_class", "box")}
    assert f"{fig} box(es) of classes not in ['date', 'hazelnut'] left out" in caplog.text
    with pytest.raises(InputError, match="on_unknown"):
        original.with_classes(["date"], on_unknown="ignore")


def test_voc_with_unknown_class_in_given_list(datasets_dir):
    with pytest.raises(DatasetError, match=r"BloodImage_\d+\.xml: object #\d+ has class"):
        Dataset(datasets_dir / "bccd", split="test", classes=["RBC", "WBC"], on_error="raise")
    # By default the boxes of a class outside the list are left out (69 of 945: under 10 %), each on record.
    ds = Dataset(datasets_dir / "bccd", split="test", classes=["RBC", "WBC"])
    assert ds.stats()["boxes_per_class"] == {"RBC": 805, "WBC": 71} and len(ds) == 72
    assert len(ds.problems) == 69 and {(p.code, p.drops) for p in ds.problems} == {("unknown_class", "box")}


def test_coco_to_voc_and_back(datasets_dir, tmp_path, assert_same_records):
    ds = Dataset(datasets_dir / "fruits_nuts", split="val")
    ds.to_voc(tmp_path / "voc", split="val")
    back = Dataset(tmp_path / "voc", split="val")
    assert back.format == "voc" and back.classes == ds.classes
    # VOC has no area: the polygon areas are lost, the box area stands for them.
    assert_same_records(back.records, [replace(r, area=np.full(len(r.boxes), np.nan)) for r in ds])


def test_voc_to_coco_and_back(datasets_dir, tmp_path, assert_same_records):
    ds = Dataset(datasets_dir / "raccoon", split="val").subset(4)
    ds.to_coco(tmp_path / "annotations" / "instances_val.json")
    back = Dataset(tmp_path, split="val")
    assert back.format == "coco" and back.classes == ds.classes
    assert [r.image_id for r in back] == ["1", "2", "3", "4"]  # VOC ids are not integers
    for k, r in enumerate(ds, start=1):
        r.image_id = str(k)
    assert_same_records(back.records, ds.records)


def test_writing_into_own_folder_does_not_copy(datasets_dir, tmp_path):
    shutil.copytree(datasets_dir / "raccoon" / "JPEGImages", tmp_path / "JPEGImages",
                    ignore=lambda d, names: [n for n in names if n not in ("raccoon-1.jpg", "raccoon-10.jpg")])
    (tmp_path / "Annotations").mkdir()
    for i in ("raccoon-1", "raccoon-10"):
        shutil.copy(datasets_dir / "raccoon" / "Annotations" / f"{i}.xml", tmp_path / "Annotations")
    ds = Dataset(tmp_path)
    ds.to_voc(tmp_path, split="all")
    assert sorted(p.name for p in (tmp_path / "JPEGImages").iterdir()) == ["raccoon-1.jpg", "raccoon-10.jpg"]
    assert len(Dataset(tmp_path, split="all")) == 2


@pytest.mark.parametrize(("path", "split"), [("raccoon", "train"), ("fruits_nuts", "train"), ("bccd", "test")])
def test_a_dataset_pickles_to_packed_records_and_back_unchanged(datasets_dir, assert_same_records, path, split):
    """What every Ray trial receives: the same records, classes and problems, in a compact payload."""
    import pickle

    dataset = Dataset(datasets_dir / path, split=split)
    payload = pickle.dumps(dataset)
    back = pickle.loads(payload)
    assert type(back) is Dataset and (back.classes, back.root, back.format) == (dataset.classes, dataset.root,
                                                                                 dataset.format)
    assert_same_records(back.records, dataset.records)
    assert [(r.path, r.source, r.image_id) for r in back] == [(r.path, r.source, r.image_id) for r in dataset]
    assert back.subset(1).records[0].boxes.dtype == np.float32 and back[0].labels.dtype == np.int64
    # Packed: a third smaller than record by record here (COCO train2017-sized: 44 -> 24 MB).
    assert len(payload) < 0.75 * len(pickle.dumps(dataset.records))
    empty = pickle.loads(pickle.dumps(dataset.subset([])))
    assert len(empty) == 0 and empty.classes == dataset.classes
