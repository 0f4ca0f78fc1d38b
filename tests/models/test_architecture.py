"""Architecture-only builds: a model rebuilt for its own state_dict has the architecture its
``pretrained`` mode gave it (norm layers, eps, frozen stages), offline and without the weights file.

The real ``pretrained="coco"`` path runs here: a stand-in COCO file (torchvision's keys and shapes,
random values, built by the test) sits under torchvision's own file name in a temporary torch hub.
"""

from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.models import WeightsEnum, mobilenet_v3_large

from detect_automl import ObjectDetector, TrainConfig
from detect_automl.models import Detector, build, get_spec
from detect_automl.models.weights import placeholder_weights

# The cheapest registered model of each family, plus the one whose COCO build overwrites eps.
CHEAPEST = ["ssdlite320_mobilenet_v3_large", "ssd300_vgg16", "fasterrcnn_mobilenet_v3_large_320_fpn",
            "retinanet_resnet50_fpn", "fasterrcnn_resnet50_fpn"]
CLASSES = ["apple", "banana", "orange"]
SIZE = 256  # R-CNN / RetinaNet input side: small, so predictions stay fast on CPU


pytestmark = pytest.mark.usefixtures("one_thread")


class _NetworkUsed(AssertionError):
    pass


def _no_network(*args, **kwargs):
    raise _NetworkUsed(f"tried to download {args[:1]}")


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch) -> Path:
    """An empty torch home and no downloads: any attempt to get weights fails loudly."""
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_network)
    return home


def _cache_file(weights: WeightsEnum) -> Path:
    """torchvision's own cache location for ``weights`` (where its builders look)."""
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _random_like(key: str, shape: torch.Size, dtype: torch.dtype) -> torch.Tensor:
    """Random values of a plausible scale (norm weights near 1, positive running variances)."""
    if not dtype.is_floating_point:
        return torch.zeros(shape, dtype=dtype)
    if key.endswith("running_var"):
        return torch.rand(shape) + 0.5
    if len(shape) == 1:
        return (1.0 if key.endswith("weight") else 0.0) + 0.1 * torch.randn(shape)
    return torch.randn(shape) * (shape.numel() // shape[0]) ** -0.5


def _stand_in_file(weights: WeightsEnum, builder, **kwargs) -> Path:
    """A weights file for ``weights`` in torchvision's cache: its keys and shapes, random values.

    The keys and shapes come from ``builder`` run from scratch on the meta device (no memory, no
    init), with the class count of ``weights``.
    """
    categories = weights.meta["categories"]
    with torch.device("meta"):
        model = builder(weights=None, **({"num_classes": len(categories)} if categories else {}), **kwargs)
    torch.manual_seed(3)
    # FrozenBatchNorm2d keeps no batch counter: torchvision's files for those models have none.
    state = {k: _random_like(k, v.shape, v.dtype) for k, v in model.state_dict().items()
             if not k.endswith("num_batches_tracked")}
    path = _cache_file(weights)
    torch.save(state, path)
    return path


def _architecture(detector: Detector) -> dict:
    """Everything that makes two builds the same network apart from the values of the weights."""
    model = detector.net
    return {
        "modules": [(n, type(m).__name__, getattr(m, "eps", None), getattr(m, "momentum", None))
                    for n, m in model.named_modules()],
        "trainable": [(n, p.requires_grad) for n, p in model.named_parameters()],
        "state": [(k, tuple(v.shape), v.dtype) for k, v in model.state_dict().items()],
    }


@pytest.fixture(scope="module", params=CHEAPEST)
def coco_built(request, tmp_path_factory) -> Detector:
    """``build(pretrained="coco")`` the real way, from a stand-in file that is deleted afterwards."""
    name = request.param
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(tmp_path_factory.mktemp("coco_home")))
        mp.setattr(torch.hub, "download_url_to_file", _no_network)
        spec = get_spec(name)
        file = _stand_in_file(spec.coco_weights, spec.builder, weights_backbone=None)
        detector = build(name, len(CLASSES), pretrained="coco", image_size=SIZE)
        file.unlink()
    return detector


def test_architecture_only_coco_build_equals_the_real_one(coco_built, offline):
    name = coco_built.spec.name
    rebuilt = build(name, len(CLASSES), pretrained="coco", image_size=SIZE, load_pretrained=False)
    assert _architecture(rebuilt) == _architecture(coco_built)
    assert not offline.exists()  # the torch hub cache was not even looked at
    frozen = [m for m in coco_built.net.modules() if type(m).__name__ == "FrozenBatchNorm2d"]
    if name in ("fasterrcnn_resnet50_fpn", "retinanet_resnet50_fpn"):
        assert frozen and all(m.eps == 0.0 for m in frozen)  # torchvision's overwrite_eps for these weights
    if name != "ssdlite320_mobilenet_v3_large":  # the one family whose COCO build is the scratch one
        with torch.device("meta"):  # the architecture alone, quickly
            scratch = build(name, len(CLASSES), pretrained=None, image_size=SIZE)
        assert _architecture(scratch) != _architecture(coco_built)


def _image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (200, 240, 3), dtype=np.uint8)


def test_a_saved_coco_model_loads_into_its_own_architecture_offline(coco_built, offline, tmp_path):
    name = coco_built.spec.name
    original = ObjectDetector(coco_built, CLASSES, TrainConfig(model=name, pretrained="coco", image_size=SIZE),
                              device="cpu")
    loaded = ObjectDetector.load(original.save(tmp_path / "model"), device="cpu")
    assert _architecture(loaded.model) == _architecture(coco_built)
    assert loaded.config.pretrained == "coco"  # a second save records the same architecture
    expected, got = original.predict(_image(), score_threshold=0.0), loaded.predict(_image(), score_threshold=0.0)
    assert len(expected.scores) > 0
    np.testing.assert_array_equal(got.class_ids, expected.class_ids)
    np.testing.assert_array_equal(got.scores, expected.scores)
    np.testing.assert_array_equal(got.boxes, expected.boxes)
    assert not offline.exists()


@pytest.mark.parametrize("name", ["ssdlite320_mobilenet_v3_large", "fasterrcnn_mobilenet_v3_large_320_fpn"])
def test_architecture_only_imagenet_build_equals_the_real_one(name):
    spec = get_spec(name)
    file = _stand_in_file(spec.backbone_weights, mobilenet_v3_large)
    real = build(name, 2, pretrained="imagenet")
    file.unlink()
    rebuilt = build(name, 2, pretrained="imagenet", load_pretrained=False)
    assert _architecture(rebuilt) == _architecture(real)
    # SSDlite keeps MobileNetV3's full tail with an ImageNet backbone: other shapes than from scratch.
    assert _architecture(build(name, 2, pretrained=None)) != _architecture(real)


def test_a_path_or_auto_rebuilds_the_scratch_architecture_without_reading_anything(tmp_path, offline):
    name = "fasterrcnn_mobilenet_v3_large_320_fpn"
    scratch = _architecture(build(name, 2, pretrained=None))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "auto" must neither look for weights nor warn
        assert _architecture(build(name, 2, pretrained="auto", load_pretrained=False)) == scratch
    assert _architecture(build(name, 2, pretrained=str(tmp_path / "gone.pth"), load_pretrained=False)) == scratch
    assert not offline.exists()


def test_a_model_saved_with_pretrained_auto_still_loads(tmp_path):
    name = "ssdlite320_mobilenet_v3_large"
    torch.manual_seed(0)
    detector = build(name, len(CLASSES))
    original = ObjectDetector(detector, CLASSES, TrainConfig(model=name, pretrained="auto"), device="cpu")
    loaded = ObjectDetector.load(original.save(tmp_path / "model"), device="cpu")
    assert _architecture(loaded.model) == _architecture(detector)
    expected, got = original.predict(_image(), score_threshold=0.0), loaded.predict(_image(), score_threshold=0.0)
    np.testing.assert_array_equal(got.scores, expected.scores)


def test_placeholders_are_served_only_to_the_building_thread_and_only_inside():
    weights = get_spec("ssdlite320_mobilenet_v3_large").coco_weights
    original = WeightsEnum.get_state_dict
    other: list[BaseException] = []

    def elsewhere() -> None:
        try:
            weights.get_state_dict(progress=False)
        except BaseException as exc:  # noqa: BLE001 - the outcome is what the test checks
            other.append(exc)

    with placeholder_weights():
        state = weights.get_state_dict(progress=False, check_hash=True)
        thread = threading.Thread(target=elsewhere)
        thread.start()
        thread.join()
    assert state and all(v.device.type == "cpu" for v in state.values())
    assert [type(e) for e in other] == [_NetworkUsed]  # another thread still gets torchvision's own loader
    assert WeightsEnum.get_state_dict is original
    with pytest.raises(_NetworkUsed):
        weights.get_state_dict(progress=False)


def test_nested_placeholder_blocks_neither_deadlock_nor_end_the_outer_one():
    weights = get_spec("ssdlite320_mobilenet_v3_large").backbone_weights
    result: list[str] = []

    def nested() -> None:
        with placeholder_weights():
            with placeholder_weights():
                pass
            result.append("served" if weights.get_state_dict() else "empty")

    thread = threading.Thread(target=nested, daemon=True)
    thread.start()
    thread.join(timeout=60)
    assert result == ["served"]


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
@pytest.mark.parametrize("coco_built", ["fasterrcnn_mobilenet_v3_large_320_fpn"], indirect=True)
def test_a_loaded_coco_model_exports_what_it_predicts(coco_built, tmp_path):
    name = coco_built.spec.name
    saved = ObjectDetector(coco_built, CLASSES, TrainConfig(model=name, pretrained="coco", image_size=SIZE),
                           device="cpu").save(tmp_path / "model")
    loaded = ObjectDetector.load(saved, device="cpu")
    scripted = torch.jit.load(str(loaded.export(saved / "model.torchscript")))
    boxes, scores, class_ids = scripted(torch.from_numpy(_image()).permute(2, 0, 1).float() / 255.0)
    eager = loaded.predict(_image(), score_threshold=0.0)
    assert len(scores) == len(eager.scores) > 0
    np.testing.assert_allclose(scores.numpy(), eager.scores, atol=1e-5)
    np.testing.assert_allclose(boxes.numpy(), eager.boxes, atol=1e-3)
    np.testing.assert_array_equal(class_ids.numpy(), eager.class_ids)


def test_a_resumed_or_continued_run_keeps_the_architecture_offline(coco_built, offline, datasets_dir):
    """Ray's resume and the continuation of the best trial both rebuild through run_trial(resume=...)."""
    from detect_automl import Dataset
    from detect_automl.engine import TrainState
    from detect_automl.engine.trial import run_trial

    raccoon = Dataset(datasets_dir / "raccoon", split="train").subset(2)
    data = Dataset.from_records(raccoon.records, CLASSES)  # the 3 classes coco_built was made for
    config = TrainConfig(model=coco_built.spec.name, pretrained="coco", image_size=SIZE, epochs=1, batch_size=2,
                         warmup_steps=1)
    # A checkpoint of the first run: its optimizer only loads into the same trainable parameters.
    checkpoint = TrainState(coco_built, config, torch.device("cpu")).checkpoint()
    outcome = run_trial(config.replace(epochs=1), data, None, device=torch.device("cpu"), resume=checkpoint,
                        progress=False)
    assert _architecture(outcome.detector) == _architecture(coco_built)
    assert not offline.exists()  # nothing read or downloaded
