"""Dataset inspection on broken copies of the embedded real datasets: every problem named, nothing lost."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

import detect_automl as da
from detect_automl.cli import main
from detect_automl.data.checks import CLIP_TOLERANCE, InspectionReport, check_dataset
from detect_automl.data.image import probe_image, read_image
from detect_automl.data.loader import make_loader
from detect_automl.errors import DatasetError, InputError

IDS = ["raccoon-1", "raccoon-10", "raccoon-100", "raccoon-117"]  # raccoon-117 has two objects


@pytest.fixture()
def voc(datasets_dir, tmp_path, copy_voc) -> Path:
    return copy_voc(datasets_dir / "raccoon", tmp_path / "voc", IDS)


@pytest.fixture()
def coco(datasets_dir, tmp_path) -> tuple[Path, dict]:
    """An editable copy of fruits_nuts train: (json path, its parsed content)."""
    src = datasets_dir / "fruits_nuts"
    shutil.copytree(src / "images", tmp_path / "coco" / "images")
    data = json.loads((src / "annotations" / "instances_train.json").read_text())
    return tmp_path / "coco" / "annotations" / "instances_train.json", data


def _write_json(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))
    return path


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def _one(report: InspectionReport, code: str, severity: str = "error"):
    found = [p for p in report.problems if p.code == code]
    assert len(found) == 1, report
    assert found[0].severity == severity
    return found[0]


def _assert_rest_intact(report, clean: da.Dataset, dropped_images=(), dropped_boxes=None) -> None:
    """The report's dataset is the clean one minus exactly the named images / boxes, unaltered."""
    kept = {r.image_id: r for r in report.dataset}
    assert set(kept) == {r.image_id for r in clean} - set(dropped_images)
    for rec in clean:
        if rec.image_id in kept:
            dropped = (dropped_boxes or {}).get(rec.image_id, [])
            np.testing.assert_array_equal(kept[rec.image_id].boxes, np.delete(rec.boxes, dropped, axis=0))
            np.testing.assert_array_equal(kept[rec.image_id].area, np.delete(rec.area, dropped))
            assert kept[rec.image_id].path == rec.path


def _as_png(voc: Path, image_id: str, write) -> Path:
    """Re-save one image as PNG via ``write(rgb array, path)`` and point its annotation at it."""
    jpg = voc / "JPEGImages" / f"{image_id}.jpg"
    png = jpg.with_suffix(".png")
    write(read_image(jpg), png)
    jpg.unlink()
    _edit(voc / "Annotations" / f"{image_id}.xml", f"{image_id}.jpg", f"{image_id}.png")
    return png


# --- clean data -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("path", "split"), [("raccoon", None), ("fruits_nuts", "train"), ("bccd", "test")])
def test_embedded_sets_are_clean_and_fast(datasets_dir, path, split):
    start = time.perf_counter()
    report = da.inspect(datasets_dir / path, split=split)
    assert report.ok and time.perf_counter() - start < 5, report
    assert report.stats["images"] == len(da.Dataset(datasets_dir / path, split=split))
    assert set(report.stats["box_width_px"]) == {"min", "p5", "p50", "p95", "max"}
    json.dumps(report.to_dict())


def test_real_zero_area_boxes_in_bccd(datasets_dir):
    report = da.inspect(datasets_dir / "bccd", split="train")
    problem = _one(report, "box_empty", "fixed")
    assert problem.record == "BloodImage_00343" and problem.file.endswith("BloodImage_00343.xml")
    assert "[181, 329, 181, 329] has zero area" in str(problem)
    assert problem.severity == "fixed" and problem.action == "left out of training and evaluation"
    assert report.ok  # a point is no object: BCCD trains by default, the report says what was left out


def test_raccoon_grayscale_jpegs_are_converted(datasets_dir):
    report = da.inspect(datasets_dir / "raccoon", split="train")
    converted = [p for p in report.problems if p.code == "mode_converted"]
    assert converted and all(p.severity == "fixed" and "grayscale" in p.message for p in converted)
    assert read_image(converted[0].file).shape[2] == 3


def test_fruit_quirks_are_fixed_or_noted(shared_data):
    report = da.inspect(shared_data / "fruit")
    counts = {code: sum(p.code == code for p in report.problems) for code in
              ("format_mismatch", "size_unknown", "mode_converted", "exif_rotated")}
    assert report.ok and counts == {"format_mismatch": 37, "size_unknown": 37, "mode_converted": 29, "exif_rotated": 0}
    for rec in report.dataset.records[::25]:  # header sizes (EXIF orientation 0 included) match decoding
        info = probe_image(rec.path)
        assert read_image(rec.path).shape[:2] == (info.height, info.width)


# --- image files ----------------------------------------------------------------------------------

def _text(p: Path) -> None:
    p.write_text("not an image at all\n")


def _empty(p: Path) -> None:
    p.write_bytes(b"")


@pytest.mark.parametrize("decode", [False, True])
@pytest.mark.parametrize(("breaker", "code"), [(None, "image_truncated"), (_text, "not_an_image"),
                                                (_empty, "image_unreadable")])
def test_broken_image_is_named_and_dropped_alone(voc, truncate, breaker, code, decode):
    clean = da.Dataset(voc)
    (breaker or truncate)(voc / "JPEGImages" / "raccoon-10.jpg")
    report = da.inspect(voc, decode=decode)
    problem = _one(report, code)
    assert problem.file.endswith("raccoon-10.jpg") and "raccoon-10.jpg" in str(problem)
    assert problem.record == "raccoon-10" and problem.action == "image dropped"
    assert len(report.errors) == 1
    _assert_rest_intact(report, clean, dropped_images=["raccoon-10"])


def test_end_markers_tell_truncation_from_trailing_bytes(voc, truncate):
    jpg = voc / "JPEGImages" / "raccoon-1.jpg"
    jpg.write_bytes(jpg.read_bytes() + bytes(range(256)) * 8)  # valid, with 2 KiB after the end marker
    png = _as_png(voc, "raccoon-10", lambda a, p: Image.fromarray(a).save(p))
    assert da.inspect(voc).ok
    truncate(png)
    problem = _one(da.inspect(voc), "image_truncated")
    assert problem.file == str(png) and "truncated PNG file" in problem.message


def test_missing_image_and_every_problem_listed(voc, truncate):
    clean = da.Dataset(voc)
    (voc / "JPEGImages" / "raccoon-10.jpg").unlink()
    truncate(voc / "JPEGImages" / "raccoon-100.jpg")
    report = da.inspect(voc)
    missing = _one(report, "image_missing")
    assert missing.file.endswith("raccoon-10.xml") and "'raccoon-10.jpg' not found" in missing.message
    assert _one(report, "image_truncated").record == "raccoon-100"
    _assert_rest_intact(report, clean, dropped_images=["raccoon-10", "raccoon-100"])
    text = str(report)
    assert "2 error(s)" in text and "raccoon-10.xml" in text and "raccoon-100.jpg" in text


# --- annotation files -----------------------------------------------------------------------------

def test_malformed_xml_names_file_and_line_and_the_rest_is_read(voc):
    clean = da.Dataset(voc)
    _edit(voc / "Annotations" / "raccoon-10.xml", "<folder>images</folder>", "<folder>a & b</folder>")  # line 2
    _edit(voc / "Annotations" / "raccoon-1.xml", "</annotation>", "")
    report = da.inspect(voc)
    found = [p for p in report.errors if p.code == "annotation_malformed"]
    assert [Path(p.file).name for p in found] == ["raccoon-1.xml", "raccoon-10.xml"]
    assert "malformed XML at line 2, column" in found[1].message and found[1].action == "annotation file skipped"
    _assert_rest_intact(report, clean, dropped_images=["raccoon-1", "raccoon-10"])


def test_malformed_json_names_file_line_and_column(coco):
    path, data = coco
    text = json.dumps(data, indent=1)
    path.parent.mkdir(parents=True)
    path.write_text(text.replace('"images": [', '"images": [,', 1))
    report = da.inspect(path)
    problem = _one(report, "annotation_malformed")
    line = text[: text.index('"images": [')].count("\n") + 1
    assert problem.file == str(path) and f"malformed JSON at line {line}, column" in problem.message
    assert report.dataset is None and not report.ok and report.stats["images"] == 0
    assert main(["inspect", str(path)]) == 1


@pytest.mark.parametrize(
    ("old", "new", "code", "text"),
    [
        ("<xmin>342</xmin>", "", "field_missing", "object #1 (raccoon): missing field <xmin>"),
        ("<ymax>297</ymax>", "<ymax>2g7</ymax>", "field_type", "object #1 (raccoon): field <ymax> is not a number"),
        ("<ymax>297</ymax>", "<ymax>nan</ymax>", "box_nan", "object #1 (raccoon): field <ymax> is not finite"),
    ],
)
def test_bad_voc_object_drops_that_box_only(voc, old, new, code, text):
    clean = da.Dataset(voc)
    _edit(voc / "Annotations" / "raccoon-117.xml", old, new)
    report = da.inspect(voc)
    problem = _one(report, code)
    assert problem.file.endswith("raccoon-117.xml") and text in problem.message and problem.action == "object skipped"
    _assert_rest_intact(report, clean, dropped_boxes={"raccoon-117": [1]})


def test_missing_bndbox(voc):
    xml = voc / "Annotations" / "raccoon-117.xml"
    text = xml.read_text()
    start, end = text.index("<bndbox>"), text.index("</bndbox>") + len("</bndbox>")
    xml.write_text(text[:start] + text[end:])
    assert "object #0 (raccoon): no <bndbox>" in _one(da.inspect(voc), "field_missing").message


@pytest.mark.parametrize(
    ("edit", "code", "text"),
    [
        (lambda a: a.pop("bbox"), "field_missing", "annotations[1] (id {id}) has no 'bbox'"),
        (lambda a: a.update(bbox=[1, 2, "x", 4]), "field_type", "annotation id {id}: bbox must be 4 numbers"),
        (lambda a: a.update(bbox=[1, float("nan"), 3, 4]), "box_nan", "annotation id {id}: bbox has a non-finite"),
        (lambda a: a.update(image_id=999), "unknown_image", "annotation id {id}: unknown image_id 999"),
        (lambda a: a.update(category_id=7), "unknown_class", "annotation id {id}: unknown category_id 7"),
    ],
)
def test_bad_coco_annotation_drops_that_box_only(coco, edit, code, text):
    path, data = coco
    clean = da.Dataset(_write_json(path, data))
    ann = data["annotations"][1]
    image_id = str(ann["image_id"])
    position = [a["id"] for a in data["annotations"] if str(a["image_id"]) == image_id].index(ann["id"])
    edit(ann)
    report = da.inspect(_write_json(path, data))
    problem = _one(report, code)
    assert problem.file == str(path) and text.format(id=ann["id"]) in problem.message
    assert problem.action == "annotation skipped"
    _assert_rest_intact(report, clean, dropped_boxes={image_id: [position]})


def test_coco_box_dropped_by_the_checks_takes_its_area_along(coco):
    path, data = coco
    clean = da.Dataset(_write_json(path, data))
    ann = data["annotations"][1]
    image_id = str(ann["image_id"])
    position = [a["id"] for a in data["annotations"] if str(a["image_id"]) == image_id].index(ann["id"])
    ann["bbox"] = [900, 10, 50, 50]  # right of the 800 px wide image
    report = da.inspect(_write_json(path, data))
    assert _one(report, "box_outside").action == "box dropped"
    _assert_rest_intact(report, clean, dropped_boxes={image_id: [position]})
    assert np.isfinite(np.concatenate([r.area for r in report.dataset])).all()  # fruits_nuts' polygon areas


def test_coco_duplicates_and_wrong_types(coco):
    path, data = coco
    clean = da.Dataset(_write_json(path, data))
    first, second = data["images"][0], data["images"][1]
    data["images"].append({**second, "id": 1000})  # another id for the same file
    data["images"].append({**first, "file_name": "x.jpg"})  # a repeated id
    data["images"].append({"id": [1], "file_name": "y.jpg"})  # an id of the wrong type
    report = da.inspect(_write_json(path, data))
    assert "duplicate image id" in _one(report, "duplicate_id").message
    duplicate_file = _one(report, "duplicate_file")
    assert second["file_name"] in duplicate_file.message and duplicate_file.record == "1000"
    assert "images[16]: id must be a number or a string" in _one(report, "field_type").message
    _assert_rest_intact(report, clean)


def test_duplicate_id_in_split_file(voc):
    (voc / "ImageSets" / "Main" / "all.txt").write_text("raccoon-1\nraccoon-10\nraccoon-1\n")
    report = da.inspect(voc, split="all")
    assert _one(report, "duplicate_id").action == "later record dropped"
    assert [r.image_id for r in report.dataset] == ["raccoon-1", "raccoon-10"]


def test_unknown_classes_with_a_given_list(datasets_dir, tmp_path, copy_voc):
    ids = ["BloodImage_00003", "BloodImage_00004"]
    root = copy_voc(datasets_dir / "bccd", tmp_path / "bccd", ids)
    clean = da.Dataset(root)
    report = da.inspect(root, classes=["RBC", "WBC", "Zebra"])
    unknown = [p for p in report.errors if p.code == "unknown_class"]
    platelets = {r.image_id: np.flatnonzero(r.labels == clean.classes.index("Platelets")) for r in clean}
    assert len(unknown) == sum(len(v) for v in platelets.values()) > 0
    assert all("'Platelets', not in classes" in p.message for p in unknown)
    assert _one(report, "unused_class", "warning").message == "class 'Zebra' has no boxes"
    _assert_rest_intact(report, clean, dropped_boxes=platelets)


# --- boxes and sizes ------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("box", "code", "severity"),
    [
        ("<xmin>81</xmin><ymin>88</ymin><xmax>81</xmax><ymax>408</ymax>", "box_empty", "fixed"),
        ("<xmin>522</xmin><ymin>88</ymin><xmax>81</xmax><ymax>408</ymax>", "box_inverted", "error"),
        ("<xmin>81</xmin><ymin>88</ymin><xmax>81.5</xmax><ymax>408</ymax>", "box_empty", "fixed"),
        ("<xmin>700</xmin><ymin>88</ymin><xmax>800</xmax><ymax>408</ymax>", "box_outside", "error"),
        ("<xmin>81</xmin><ymin>88</ymin><xmax>680</xmax><ymax>408</ymax>", "box_outside", "error"),
        ("<xmin>81</xmin><ymin>88</ymin><xmax>650.5</xmax><ymax>409</ymax>", "box_clipped", "fixed"),
        (f"<xmin>-{CLIP_TOLERANCE:g}</xmin><ymin>88</ymin><xmax>522</xmax><ymax>408</ymax>", "box_clipped", "fixed"),
    ],
)
def test_box_checks_against_the_real_size(voc, box, code, severity):
    clean = da.Dataset(voc)
    xml = voc / "Annotations" / "raccoon-1.xml"  # a 650x417 image, one box
    text = xml.read_text()
    start, end = text.index("<xmin>"), text.index("</ymax>") + len("</ymax>")
    xml.write_text(text[:start] + box + text[end:])
    report = da.inspect(voc)
    problem = _one(report, code, severity)
    assert problem.file.endswith("raccoon-1.xml") and "image raccoon-1: box #0 (raccoon)" in problem.message
    if severity == "error":
        _assert_rest_intact(report, clean, dropped_boxes={"raccoon-1": [0]})
    else:  # kept as annotated: the loader clips it, or leaves a degenerate one out
        assert problem.action in ("clipped to the image", "left out of training and evaluation") and report.ok
        np.testing.assert_array_equal(report.dataset[0].boxes, da.Dataset(voc)[0].boxes)


def test_annotated_size_mismatch_is_fixed(voc):
    _edit(voc / "Annotations" / "raccoon-10.xml", "<width>450</width>", "<width>900</width>")
    problem = _one(da.inspect(voc), "size_mismatch", "fixed")
    assert "annotated size 900x495 differs from the image's 450x495" in problem.message
    assert problem.action == "the image's size is used"


# --- pixel formats, EXIF, file names --------------------------------------------------------------

@pytest.mark.parametrize(
    ("write", "pixels"),
    [
        (lambda a, p: Image.fromarray(a).convert("L").save(p), "grayscale"),
        (lambda a, p: Image.fromarray(a).convert("RGBA").save(p), "RGBA"),
        (lambda a, p: Image.fromarray(a).convert("P").save(p), "palette"),
        (lambda a, p: cv2.imwrite(str(p), a[..., ::-1].astype(np.uint16) * 257), "16-bit RGB"),
        (lambda a, p: cv2.imwrite(str(p), a[..., 0].astype(np.uint16) * 257), "16-bit grayscale"),
    ],
)
def test_pixel_formats_are_converted_and_load(voc, write, pixels):
    png = _as_png(voc, "raccoon-10", write)
    report = da.inspect(voc)
    problem = _one(report, "mode_converted", "fixed")
    assert problem.file == str(png) and problem.message.startswith(pixels)
    assert report.ok and len(report.dataset) == len(IDS)
    image = read_image(png)
    assert image.shape == (495, 450, 3) and image.dtype == np.uint8


def test_exif_rotated_jpeg(voc):
    jpg = voc / "JPEGImages" / "raccoon-1.jpg"  # stored 650x417
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.open(jpg).save(jpg, exif=exif)
    assert read_image(jpg).shape == (650, 417, 3)  # rotated on load
    report = da.inspect(voc)
    warning = _one(report, "exif_rotated", "warning")
    assert "EXIF orientation 6" in warning.message and "to 417x650" in warning.message
    assert "un-rotated" in warning.message  # the annotation still says 650x417
    assert "reaches" in _one(report, "box_outside").message  # its box was drawn on the stored frame
    _edit(voc / "Annotations" / "raccoon-1.xml", "<width>650</width>\n\t\t<height>417</height>",
          "<width>417</width>\n\t\t<height>650</height>")
    _edit(voc / "Annotations" / "raccoon-1.xml", "<xmax>522</xmax>", "<xmax>400</xmax>")
    report = da.inspect(voc, decode=True)
    assert report.ok and "un-rotated" not in _one(report, "exif_rotated", "warning").message


def test_odd_file_names_load_and_train_load(voc):
    odd = voc / "JPEGImages" / "raccoon ü 10.JPG"
    (voc / "JPEGImages" / "raccoon-10.jpg").rename(odd)
    _edit(voc / "Annotations" / "raccoon-10.xml", "<filename>raccoon-10.jpg", "<filename>raccoon ü 10.JPG")
    report = da.inspect(voc, decode=True)
    note = _one(report, "file_name", "info")
    assert note.file == str(odd)
    assert note.message == "file name has non-ASCII characters, spaces, an upper-case extension"
    dataset = da.Dataset(voc)
    assert dataset[1].path == odd and read_image(odd).shape == (495, 450, 3)
    images, targets = next(iter(make_loader(dataset.subset([1, 0]), batch_size=2, train=True, shuffle=False)))
    assert images[0].shape[0] == 3 and targets[0]["boxes"].shape[1] == 4


# --- policies: Dataset, check_dataset, fit, evaluate, CLI -----------------------------------------

def test_dataset_raise_lists_every_parse_error_and_skip_keeps_the_rest(voc):
    clean = da.Dataset(voc)
    _edit(voc / "Annotations" / "raccoon-10.xml", "<xmin>", "<xmin>x")
    (voc / "JPEGImages" / "raccoon-100.jpg").unlink()
    with pytest.raises(DatasetError, match=r"2 problems") as caught:
        da.Dataset(voc)
    assert "raccoon-10.xml: object #0 (raccoon): field <xmin>" in str(caught.value)
    assert "raccoon-100.xml: image 'raccoon-100.jpg' not found" in str(caught.value)
    assert [p.code for p in caught.value.problems] == ["field_type", "image_missing"]
    skipped = da.Dataset(voc, on_error="skip")
    assert [p.action for p in skipped.problems] == ["object skipped", "image skipped"]
    report = da.inspect(skipped)
    assert report.problems[:2] == skipped.problems
    _assert_rest_intact(report, clean, dropped_images=["raccoon-100"], dropped_boxes={"raccoon-10": [0]})
    with pytest.warns(UserWarning, match="2 bad item"):
        assert check_dataset(skipped) is skipped  # already left out: warned, not raised


def test_check_dataset_raises_or_drops_exactly_the_bad_items(voc, truncate):
    clean = da.Dataset(voc)
    truncate(voc / "JPEGImages" / "raccoon-10.jpg")
    _edit(voc / "Annotations" / "raccoon-117.xml", "<xmax>", "<xmax>9")  # object #0 far outside
    with pytest.raises(DatasetError, match="1 error") as caught:
        check_dataset(clean)
    assert "raccoon-10.jpg" in str(caught.value) and "raccoon-117.xml" not in str(caught.value)  # not re-read
    broken = da.Dataset(voc)
    with pytest.raises(DatasetError) as caught:
        check_dataset(broken)
    assert "raccoon-10.jpg" in str(caught.value) and "raccoon-117.xml" in str(caught.value)
    assert {p.code for p in caught.value.problems if p.severity == "error"} == {"image_truncated", "box_outside"}
    with pytest.warns(UserWarning) as warned:
        kept = check_dataset(broken, on_error="skip")
    assert "raccoon-10.jpg" in str(warned[0].message) and "[box dropped]" in str(warned[0].message)
    assert [r.image_id for r in kept] == ["raccoon-1", "raccoon-100", "raccoon-117"]
    assert kept[2].boxes.shape == (1, 4) and kept[0] is broken[0] and len(broken) == 4  # input untouched
    with pytest.raises(InputError, match="on_error"):
        check_dataset(broken, on_error="ignore")
    with pytest.raises(InputError):
        da.inspect(broken, split="train")


def test_fit_fails_in_seconds_with_the_report(voc, truncate, tmp_path):
    truncate(voc / "JPEGImages" / "raccoon-10.jpg")
    train = da.Dataset(voc)
    start = time.perf_counter()
    with pytest.raises(DatasetError, match=r"(?s)on_error='skip'.*image_truncated: .*raccoon-10\.jpg"):
        da.fit(train, time_limit=60, output_dir=tmp_path / "out", progress=False)
    assert time.perf_counter() - start < 10
    assert not (tmp_path / "out").exists()


def test_evaluate_checks_the_data_first(voc):
    from detect_automl.config import TrainConfig
    from detect_automl.models import build

    detector = da.ObjectDetector(build("ssdlite320_mobilenet_v3_large", 1), ["raccoon"], TrainConfig())
    (voc / "JPEGImages" / "raccoon-100.jpg").write_text("text")
    with pytest.raises(DatasetError, match=r"not_an_image: .*raccoon-100\.jpg"):
        detector.evaluate(da.Dataset(voc))
    with pytest.warns(UserWarning, match=r"raccoon-100\.jpg"):
        metrics = detector.evaluate(da.Dataset(voc), on_error="skip")
    assert metrics["num_images"] == len(IDS) - 1


def test_cli_fit_stops_with_the_report(voc, tmp_path, capsys):
    (voc / "JPEGImages" / "raccoon-10.jpg").unlink()
    assert main(["fit", str(voc), "--time-limit", "60", "--output", str(tmp_path / "out")]) == 2
    assert "raccoon-10.xml: image 'raccoon-10.jpg' not found" in capsys.readouterr().err


def test_cli_inspect_exit_codes_and_json(voc, truncate, capsys):
    assert main(["inspect", str(voc)]) == 0
    assert "OK" in capsys.readouterr().out
    truncate(voc / "JPEGImages" / "raccoon-1.jpg")
    assert main(["inspect", str(voc), "--format", "voc", "--split", "all", "--decode", "--json"]) == 1
    payload = json.loads(capsys.readouterr().out)
    assert payload["ok"] is False and payload["counts"]["error"] == 1
    assert payload["problems"][0]["code"] == "image_truncated" and payload["stats"]["images"] == 3
