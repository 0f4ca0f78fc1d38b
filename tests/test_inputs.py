"""predict() inputs: paths, arrays and PIL images of every pixel kind give the same detections, quietly."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from detect_automl import InputError, ObjectDetector, TrainConfig
from detect_automl._inputs import to_rgb_array
from detect_automl.data.image import read_image
from detect_automl.models import build

CLASSES = ["apple", "banana", "orange"]


@pytest.fixture(scope="module")
def detector() -> ObjectDetector:
    """An untrained detector: at score threshold 0 it still returns boxes that depend on every pixel."""
    torch.manual_seed(0)
    model = build("ssdlite320_mobilenet_v3_large", len(CLASSES), pretrained=None)
    return ObjectDetector(model, CLASSES, TrainConfig(pretrained=None), score_threshold=0.0, device="cpu")


@pytest.fixture(scope="module")
def raccoon(datasets_dir) -> Image.Image:
    """A real RGB photo to write other pixel kinds from."""
    with Image.open(datasets_dir / "raccoon" / "JPEGImages" / "raccoon-10.jpg") as image:
        return image.convert("RGB")


def _assert_same_detections(detector: ObjectDetector, inputs: list) -> None:
    """Every input gives exactly the detections of the first, with no warning at all."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        results = [detector.predict(item) for item in inputs]
    assert len(results[0]) > 0
    for other in results[1:]:
        np.testing.assert_array_equal(other.class_ids, results[0].class_ids)
        np.testing.assert_array_equal(other.scores, results[0].scores)
        np.testing.assert_array_equal(other.boxes, results[0].boxes)


def test_rgba_path_read_only_array_and_pil_image_give_identical_detections(detector, shared_data):
    path = shared_data / "fruit" / "JPEGImages" / "apple_1.jpg"  # PNG bytes, RGBA, 43 % not opaque
    with Image.open(path) as image:
        assert image.mode == "RGBA"
        array = np.asarray(image)
        pil = image.copy()
    assert array.shape[2] == 4 and not array.flags.writeable and array[..., 3].min() == 0
    # The alpha channel is dropped, as OpenCV does when decoding the file, not composited.
    np.testing.assert_array_equal(to_rgb_array(array), read_image(path))
    np.testing.assert_array_equal(to_rgb_array(pil), read_image(path))
    _assert_same_detections(detector, [str(path), array, pil])


def test_palette_image_with_transparency_converts_quietly_like_its_file(detector, shared_data):
    path = shared_data / "fruit" / "JPEGImages" / "apple_37.jpg"  # PNG bytes, palette with tRNS bytes
    with Image.open(path) as image:
        assert image.mode == "P" and isinstance(image.info["transparency"], bytes)
        pil = image.copy()
    _assert_same_detections(detector, [path, pil])


def test_read_only_rgb_array_is_accepted_without_a_warning(detector, datasets_dir):
    path = datasets_dir / "raccoon" / "JPEGImages" / "raccoon-10.jpg"
    with Image.open(path) as image:
        array = np.asarray(image)
    assert not array.flags.writeable
    _assert_same_detections(detector, [path, array])


@pytest.mark.parametrize("mode", ["L", "LA"])
def test_grayscale_files_arrays_and_pil_images_give_identical_detections(detector, raccoon, tmp_path, mode):
    image = raccoon.convert("L")
    if mode == "LA":  # an alpha ramp: dropping it and compositing it differ everywhere
        h, w = image.height, image.width
        image.putalpha(Image.fromarray((np.arange(h * w) % 256).astype(np.uint8).reshape(h, w)))
    path = tmp_path / f"gray_{mode}.png"
    image.save(path)
    with Image.open(path) as opened:
        assert opened.mode == mode
        array = np.asarray(opened)  # read-only: HxW for L, HxWx2 for LA
        pil = opened.copy()
    inputs = [path, array, pil]
    if mode == "L":
        inputs.append(array[..., None])  # HxWx1
    gray = np.asarray(image.convert("L"))
    np.testing.assert_array_equal(read_image(path), np.repeat(gray[..., None], 3, axis=2))
    for item in inputs[1:]:
        np.testing.assert_array_equal(to_rgb_array(item), read_image(path))
    _assert_same_detections(detector, inputs)


def test_16_bit_pil_image_converts_like_its_file(raccoon, tmp_path):
    gray = np.asarray(raccoon.convert("L")).astype(np.uint16) * 257 + 100  # low bytes not all zero
    path = tmp_path / "gray16.png"
    Image.fromarray(gray).save(path)
    with Image.open(path) as image:
        assert image.mode.startswith("I;16")
        np.testing.assert_array_equal(to_rgb_array(image), read_image(path))


def test_the_array_returned_is_writable_and_the_input_untouched(datasets_dir):
    with Image.open(datasets_dir / "raccoon" / "JPEGImages" / "raccoon-10.jpg") as image:
        array = np.asarray(image)
    rgb = to_rgb_array(array)
    assert rgb.flags.writeable and rgb.flags.c_contiguous and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb, array)
    assert not array.flags.writeable


@pytest.mark.parametrize("bad, message", [
    ([], "empty list"),
    (np.zeros((10, 10, 5), np.uint8), r"image #0: expected .*HxWx3 RGB.* array, got shape \(10, 10, 5\)"),
    (np.zeros((2, 10, 10, 3), np.uint8), r"got shape \(2, 10, 10, 3\)"),
    (np.zeros((0, 10, 3), np.uint8), "empty image"),
    (np.zeros((10, 10, 3), np.float32), "dtype uint8"),
    (np.zeros((10, 10), np.uint16), "dtype uint8"),
    (42, "got int"),
    ("/nonexistent/cat.jpg", "image #0: .*cat.jpg"),
])
def test_predict_input_errors_are_clear(detector, bad, message):
    with pytest.raises(InputError, match=message):
        detector.predict(bad)


def test_errors_name_the_position_in_a_list(detector, datasets_dir):
    good = datasets_dir / "raccoon" / "JPEGImages" / "raccoon-10.jpg"
    with pytest.raises(InputError, match=r"image #1: .*shape \(10, 10, 5\)"):
        detector.predict([good, np.zeros((10, 10, 5), np.uint8)])
