"""Transforms, the torch dataset wrapper and DataLoader construction, on real images."""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from detect_automl.data import Dataset, ImageRecord
from detect_automl.data.boxes import sanitize_boxes
from detect_automl.data.image import read_image
from detect_automl.data.loader import DetectionDataset, collate, make_loader
from detect_automl.data.transforms import _Albumentations, build_transforms, identity
from detect_automl.errors import InputError


def _by_ids(ds: Dataset, ids: list[str]) -> Dataset:
    return ds.subset([k for k, r in enumerate(ds) if r.image_id in ids])


@pytest.fixture(scope="module")
def raccoon_train(datasets_dir) -> Dataset:
    return Dataset(datasets_dir / "raccoon", split="train")


@pytest.fixture(scope="module")
def raccoon_image(raccoon_train):
    record = raccoon_train[0]
    return read_image(record.path), record.boxes, record.labels


def test_grayscale_jpeg_becomes_three_channels(raccoon_train):
    ds = DetectionDataset(_by_ids(raccoon_train, ["raccoon-150"]))
    image, target = ds[0]
    assert image.shape == (3, 183, 275) and image.dtype == torch.float32
    assert 0.0 <= image.min() and image.max() <= 1.0 and image.max() > 0.5
    assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])
    assert target["boxes"].dtype == torch.float32 and target["labels"].dtype == torch.int64
    assert target["boxes"].shape == (1, 4) and target["image_id"] == 0


def test_bccd_zero_area_boxes_dropped_with_one_warning(datasets_dir):
    ds = _by_ids(Dataset(datasets_dir / "bccd"), ["BloodImage_00338", "BloodImage_00343", "BloodImage_00000"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch_ds = DetectionDataset(ds)
        targets = [torch_ds[k][1] for k in range(len(torch_ds))]
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1, messages
    assert "2 box(es) in 2 image(s)" in messages[0] and "BloodImage_00338" in messages[0]
    assert [len(t["boxes"]) for t in targets] == [len(r.boxes) - d for r, d in zip(ds, (0, 1, 1))]
    for t in targets:
        sides = t["boxes"][:, 2:] - t["boxes"][:, :2]
        assert (sides >= 1).all()
        assert len(t["labels"]) == len(t["boxes"])


def test_boxes_outside_the_decoded_image_warn_once(raccoon_train):
    record = raccoon_train[0]  # 650x417; the annotated size is unknown (0x0), as in the fruit set
    outside = [[700, 10, 760, 60], [10, 10, 50, 50]]
    ds = Dataset.from_records([ImageRecord(record.path, boxes=outside, labels=[0, 0])] * 2, ["raccoon"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch_ds = DetectionDataset(ds)
        assert not caught  # nothing is known to be wrong before decoding
        targets = [torch_ds[0][1], torch_ds[1][1]]
    assert len(caught) == 1 and "[700.0, 10.0, 760.0, 60.0]" in str(caught[0].message)
    assert all(t["boxes"].tolist() == [[10, 10, 50, 50]] for t in targets)


def test_clean_dataset_gives_no_warning(raccoon_train):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        DetectionDataset(raccoon_train.subset(3))[1]


def test_negative_image_has_empty_targets(raccoon_train):
    record = raccoon_train[0]
    ds = Dataset.from_records([ImageRecord(record.path, record.width, record.height)], ["raccoon"])
    for transforms in (None, build_transforms(True, 1.0, seed=0)):
        image, target = DetectionDataset(ds, transforms)[0]
        assert target["boxes"].shape == (0, 4) and target["boxes"].dtype == torch.float32
        assert target["labels"].shape == (0,) and target["labels"].dtype == torch.int64


def test_eval_and_zero_strength_are_identity_without_albumentations(raccoon_image):
    assert build_transforms(False, 1.0) is identity
    assert build_transforms(True, 0.0) is identity
    image, boxes, labels = raccoon_image
    assert identity(image, boxes, labels)[0] is image
    for bad in (-0.1, 1.5):
        with pytest.raises(InputError):
            build_transforms(True, bad)


def test_horizontal_flip_mirrors_boxes(raccoon_image):
    import albumentations as A

    image, boxes, labels = raccoon_image
    width = image.shape[1]
    flipped, new_boxes, new_labels = _Albumentations([A.HorizontalFlip(p=1.0)])(image, boxes, labels)
    np.testing.assert_array_equal(flipped, image[:, ::-1])
    expected = np.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], axis=1)
    np.testing.assert_allclose(new_boxes, expected, atol=1e-3)
    np.testing.assert_array_equal(new_labels, labels)


def test_flip_is_half_the_time_whatever_the_strength(raccoon_image):
    image, boxes, labels = raccoon_image
    width = image.shape[1]
    mirrored = np.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], axis=1)
    tf = build_transforms(True, 1e-6, seed=0)  # scale/shift and colour practically never fire
    flips = 0
    for _ in range(20):
        out, new_boxes, _ = tf(image, boxes, labels)
        flipped = np.allclose(new_boxes, mirrored, atol=1e-3)
        assert flipped or np.allclose(new_boxes, boxes, atol=1e-3)
        np.testing.assert_array_equal(out, image[:, ::-1] if flipped else image)
        flips += flipped
    assert 3 <= flips <= 17


def test_train_transforms_keep_size_and_boxes_inside(raccoon_image):
    image, boxes, labels = raccoon_image
    height, width = image.shape[:2]
    tf = build_transforms(True, 1.0, seed=0)
    changed = 0
    for _ in range(25):
        out, new_boxes, new_labels = tf(image, boxes, labels)
        assert out.shape == image.shape and out.dtype == np.uint8  # no resizing: the model owns it
        assert new_boxes.dtype == np.float32 and len(new_boxes) == len(new_labels)
        assert (new_boxes >= 0).all()
        assert (new_boxes[:, [0, 2]] <= width).all() and (new_boxes[:, [1, 3]] <= height).all()
        assert (new_boxes[:, 2:] - new_boxes[:, :2] >= 1).all()
        changed += not np.array_equal(new_boxes, boxes)
    assert changed > 10  # strength 1 moves boxes most of the time


def test_transforms_are_seeded(raccoon_image):
    image, boxes, labels = raccoon_image
    a, b = build_transforms(True, 0.7, seed=5), build_transforms(True, 0.7, seed=5)
    for _ in range(3):
        out_a, out_b = a(image, boxes, labels), b(image, boxes, labels)
        np.testing.assert_array_equal(out_a[0], out_b[0])
        np.testing.assert_array_equal(out_a[1], out_b[1])


def test_fruit_png_rgba_and_zero_size_decode_to_rgb(shared_data):
    fruit = Dataset(shared_data / "fruit", split="train")
    picked = _by_ids(fruit, ["apple_1", "apple_37", "apple_28"])  # PNG bytes in .jpg: RGBA, palette, RGBA
    assert all((r.width, r.height) == (0, 0) for r in picked)
    torch_ds = DetectionDataset(picked)
    for k, record in enumerate(picked):
        with Image.open(record.path) as pil:
            assert pil.format == "PNG"
            real_w, real_h = pil.size
        image, target = torch_ds[k]
        assert image.shape == (3, real_h, real_w)
        assert (target["boxes"][:, [0, 2]] <= real_w).all() and (target["boxes"][:, [1, 3]] <= real_h).all()


def test_collate_keeps_lists():
    batch = [(torch.zeros(3, 4, 5), {"image_id": 0}), (torch.zeros(3, 6, 2), {"image_id": 1})]
    images, targets = collate(batch)
    assert [i.shape[1:] for i in images] == [(4, 5), (6, 2)] and [t["image_id"] for t in targets] == [0, 1]


def test_loader_batches_shuffle_and_drop_last(raccoon_train):
    ds = raccoon_train.subset(5)
    train = make_loader(ds, batch_size=2, train=True, augment=0.5, seed=1)
    batches = list(train)
    assert [len(images) for images, _ in batches] == [2, 2]  # the last incomplete batch is dropped
    ids = [t["image_id"] for _, targets in batches for t in targets]
    again = [t["image_id"] for _, targets in make_loader(ds, 2, True, seed=1) for t in targets]
    assert ids == again and len(set(ids)) == 4
    eval_ids = [t["image_id"] for _, targets in make_loader(ds, 2, train=False) for t in targets]
    assert eval_ids == [0, 1, 2, 3, 4]
    assert [len(i) for i, _ in make_loader(ds.subset(2), batch_size=4, train=True)] == [2]  # small set kept
    with pytest.raises(InputError):
        make_loader(ds, batch_size=0, train=True)


def test_loader_same_seed_same_augmentations(raccoon_train):
    ds = raccoon_train.subset(4)
    runs = [[t["boxes"] for _, targets in make_loader(ds, 2, True, augment=1.0, seed=7) for t in targets]
            for _ in range(2)]
    assert all(torch.equal(a, b) for a, b in zip(*runs))


def test_loader_with_a_worker_process(raccoon_train):
    loader = make_loader(raccoon_train.subset(3), batch_size=2, train=False, num_workers=1)
    assert loader.persistent_workers
    images, targets = next(iter(loader))
    assert len(images) == 2 and images[0].shape[0] == 3 and targets[1]["image_id"] == 1


def test_the_cache_decodes_each_training_image_once_within_its_byte_budget(datasets_dir, monkeypatch):
    from detect_automl.data import loader as loader_module

    data = Dataset(datasets_dir / "raccoon", split="train").subset(4)
    reads = []
    real = loader_module.read_image
    monkeypatch.setattr(loader_module, "read_image", lambda path: reads.append(path) or real(path))
    plain = DetectionDataset(data, max_side=320)
    first = [plain[i] for i in range(4)]
    two_images = sum(image.numel() for image, _ in first[:2])  # uint8 bytes of the first two
    cached = DetectionDataset(data, max_side=320, cache_bytes=two_images)
    reads.clear()
    for _ in range(3):  # three epochs
        again = [cached[i] for i in range(4)]
        for (image, target), (image2, target2) in zip(first, again):
            assert torch.equal(image, image2) and torch.equal(target["boxes"], target2["boxes"])
    assert len(reads) == 4 + 2 * 2  # all four decoded once; only the two that fit were kept
    assert cached._cached_bytes == two_images


def test_targets_carry_the_ground_truth_in_original_pixels(datasets_dir, tmp_path):
    """What evaluation scores against: the record's sanitised boxes, flags and areas, whatever the shrink."""
    source = Dataset(datasets_dir / "fruits_nuts", split="val")
    record = source[0]
    crowd = np.zeros(len(record.boxes), bool)
    crowd[0] = True
    wide = record.boxes.copy()
    wide[1, 2] = record.width + 3  # clipped to the image
    data = Dataset.from_records([replace(record, boxes=wide, iscrowd=crowd)], source.classes)
    for dataset in (DetectionDataset(data), DetectionDataset(data, max_side=200, cache_bytes=1 << 30)):
        for _ in range(2):  # decoded, then (for the second) from the cache
            image, target = dataset[0]
            truth = target["ground_truth"]
            boxes, labels, keep = sanitize_boxes(wide, record.labels, record.width, record.height)
            np.testing.assert_array_equal(truth["boxes"], boxes)
            np.testing.assert_array_equal(truth["labels"], labels)
            np.testing.assert_array_equal(truth["ignore"], crowd[keep])
            np.testing.assert_array_equal(truth["area"], record.area[keep])
            assert len(target["boxes"]) == len(boxes) - 1  # the crowd box is no training target
    assert max(image.shape[1:]) == 200  # the image (and its training boxes) shrunk, the truth did not
