"""Pascal VOC reading and writing on the embedded raccoon and BCCD sets (and broken copies of them)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from detect_automl.data.records import ImageRecord
from detect_automl.data.voc import read_voc, write_voc
from detect_automl.errors import DatasetError

RACCOON_IDS = ["raccoon-1", "raccoon-10", "raccoon-150"]  # raccoon-150 is a grayscale JPEG


def _mini_voc(src: Path, dst: Path, ids: list[str], split: str | None = "train") -> Path:
    """Copy a few annotation/image pairs of a real VOC set into ``dst``."""
    (dst / "Annotations").mkdir(parents=True)
    (dst / "JPEGImages").mkdir()
    for i in ids:
        shutil.copy(src / "Annotations" / f"{i}.xml", dst / "Annotations")
        shutil.copy(src / "JPEGImages" / f"{i}.jpg", dst / "JPEGImages")
    if split:
        (dst / "ImageSets" / "Main").mkdir(parents=True)
        (dst / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return dst


@pytest.fixture()
def mini_raccoon(datasets_dir: Path, tmp_path: Path) -> Path:
    return _mini_voc(datasets_dir / "raccoon", tmp_path / "voc", RACCOON_IDS)


@pytest.mark.parametrize(
    ("name", "split", "images", "boxes"),
    [
        ("raccoon", "train", 144, 156),
        ("raccoon", "val", 16, 17),
        ("raccoon", "test", 40, 44),
        ("bccd", "train", 205, 2805),
        ("bccd", "val", 87, 1138),
        ("bccd", "test", 72, 945),
    ],
)
def test_counts_per_split_match_source_tables(datasets_dir, name, split, images, boxes):
    classes, records = read_voc(datasets_dir / name, split=split)
    assert len(records) == images
    assert sum(len(r.boxes) for r in records) == boxes
    assert all(r.path.is_file() and r.source.endswith(f"{r.image_id}.xml") for r in records)


def test_bccd_train_boxes_per_class(datasets_dir):
    classes, records = read_voc(datasets_dir / "bccd", split="train")
    assert classes == ["Platelets", "RBC", "WBC"]
    counts = np.bincount(np.concatenate([r.labels for r in records]), minlength=3)
    assert counts.tolist() == [209, 2382, 214]


def test_without_split_reads_every_annotation_sorted(datasets_dir):
    _, records = read_voc(datasets_dir / "raccoon")
    ids = [r.image_id for r in records]
    assert len(ids) == 200 and ids == sorted(ids)


def test_classes_come_from_every_file_so_splits_agree(datasets_dir, tmp_path):
    root = _mini_voc(datasets_dir / "bccd", tmp_path / "b", ["BloodImage_00000", "BloodImage_00001"], split=None)
    xml = root / "Annotations" / "BloodImage_00001.xml"
    xml.write_text(xml.read_text().replace("<name>WBC</name>", "<name>Zebra</name>"))
    main = root / "ImageSets" / "Main"
    main.mkdir(parents=True)
    (main / "train.txt").write_text("BloodImage_00000\n")
    (main / "test.txt").write_text("BloodImage_00001\n")
    train_classes, train = read_voc(root, split="train")
    test_classes, test = read_voc(root, split="test")
    assert train_classes == test_classes
    assert "Zebra" in train_classes and [r.image_id for r in train] == ["BloodImage_00000"]
    assert train_classes.index("Zebra") in test[0].labels


def test_real_values_parsed(datasets_dir):
    _, records = read_voc(datasets_dir / "raccoon", split="train")
    first = next(r for r in records if r.image_id == "raccoon-1")
    np.testing.assert_array_equal(first.boxes, [[81, 88, 522, 408]])  # as written, no 1-based shift
    assert (first.width, first.height) == (650, 417)
    assert not first.difficult.any()


def test_round_trip_is_exact(datasets_dir, tmp_path, assert_same_records):
    classes, records = read_voc(datasets_dir / "bccd", split="val")
    records = records[:4]
    tweaked = records[0]
    boxes = tweaked.boxes.copy()
    boxes[0] = [0.1, 10.25, 33.3333, 479.9]  # fractional values must survive the text form
    difficult = tweaked.difficult.copy()
    difficult[1] = True
    records[0] = ImageRecord(tweaked.path, tweaked.width, tweaked.height, boxes, tweaked.labels, difficult,
                             image_id=tweaked.image_id)
    records.append(ImageRecord(records[1].path.with_name("BloodImage_00339.jpg"), 640, 480,
                               image_id="negative"))  # no boxes
    write_voc(classes, records, tmp_path / "out", split="val")
    classes2, records2 = read_voc(tmp_path / "out", split="val")
    assert classes2 == classes
    assert_same_records(records2, records)


def test_malformed_xml_names_file_and_line(mini_raccoon):
    xml = mini_raccoon / "Annotations" / "raccoon-10.xml"
    lines = xml.read_text().splitlines()
    lines[3] = "\t<path>a & b</path>"  # a bare ampersand on line 4
    xml.write_text("\n".join(lines))
    with pytest.raises(DatasetError, match=r"raccoon-10\.xml: malformed XML at line 4, column \d+"):
        read_voc(mini_raccoon, split="train")


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("<xmin>81</xmin>", "", r"raccoon-1\.xml: object #0 \(raccoon\).*<xmin>"),
        ("<ymax>408</ymax>", "<ymax>4o8</ymax>", r"raccoon-1\.xml: object #0.*<ymax>.*'4o8'"),
        ("<name>raccoon</name>", "<name></name>", r"raccoon-1\.xml: object #0 has no <name>"),
    ],
)
def test_bad_object_fields_name_file_object_and_field(mini_raccoon, old, new, message):
    xml = mini_raccoon / "Annotations" / "raccoon-1.xml"
    xml.write_text(xml.read_text().replace(old, new))
    with pytest.raises(DatasetError, match=message):
        read_voc(mini_raccoon, split="train")


def test_unknown_class_with_given_list(mini_raccoon):
    with pytest.raises(DatasetError, match=r"raccoon-1\.xml: object #0 has class 'raccoon'"):
        read_voc(mini_raccoon, split="train", classes=["dog"])
    classes, records = read_voc(mini_raccoon, split="train", classes=["dog", "raccoon"])
    assert classes == ["dog", "raccoon"] and all((r.labels == 1).all() for r in records)


def test_missing_image_names_xml_and_image(mini_raccoon):
    (mini_raccoon / "JPEGImages" / "raccoon-10.jpg").unlink()
    with pytest.raises(DatasetError, match=r"raccoon-10\.xml: image 'raccoon-10\.jpg' not found"):
        read_voc(mini_raccoon, split="train")


def test_split_id_without_xml_names_split_file_and_line(mini_raccoon):
    split = mini_raccoon / "ImageSets" / "Main" / "train.txt"
    split.write_text("raccoon-1\n\nraccoon-999\n")
    with pytest.raises(DatasetError, match=r"train\.txt, line 3: id 'raccoon-999'"):
        read_voc(mini_raccoon, split="train")
    with pytest.raises(DatasetError, match=r"nope\.txt: split file not found.*train"):
        read_voc(mini_raccoon, split="nope")


def test_image_found_by_stem_when_filename_is_wrong(mini_raccoon):
    xml = mini_raccoon / "Annotations" / "raccoon-10.xml"
    xml.write_text(xml.read_text().replace("<filename>raccoon-10.jpg", "<filename>renamed.png"))
    (mini_raccoon / "JPEGImages" / "raccoon-1.jpg").rename(mini_raccoon / "JPEGImages" / "raccoon-1.JPG")
    _, records = read_voc(mini_raccoon, split="train")
    assert [r.path.name for r in records[:2]] == ["raccoon-1.JPG", "raccoon-10.jpg"]


def test_fruit_zero_size_is_kept_as_unknown(shared_data):
    _, records = read_voc(shared_data / "fruit", split="train")
    assert len(records) == 216 and sum(len(r.boxes) for r in records) == 413
    apple = next(r for r in records if r.image_id == "apple_1")
    assert (apple.width, apple.height) == (0, 0)
