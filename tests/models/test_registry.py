"""Detector factory: registry, class-id offset, pretrained weights (cache, local file, offline)."""

from __future__ import annotations

import urllib.error

import pytest
import torch
from torch import nn

from detect_automl.errors import ModelError, WeightsError
from detect_automl.models import Detector, build, get_spec, list_models
from detect_automl.models.weights import cached_weights_path

FAST = "ssdlite320_mobilenet_v3_large"
ONE_PER_FAMILY = ["ssdlite320_mobilenet_v3_large", "ssd300_vgg16", "fasterrcnn_mobilenet_v3_large_320_fpn",
                  "retinanet_resnet50_fpn"]


def _num_outputs(detector: Detector) -> int:
    """How many classes torchvision's head scores, read off the built module."""
    family = detector.spec.family
    if family == "faster_rcnn":
        return detector.net.roi_heads.box_predictor.cls_score.out_features
    if family == "retinanet":
        return detector.net.head.classification_head.num_classes
    return detector.net.head.classification_head.num_columns


def test_registry_lists_every_required_model():
    required = {"fasterrcnn_resnet50_fpn", "fasterrcnn_resnet50_fpn_v2", "fasterrcnn_mobilenet_v3_large_fpn",
                "fasterrcnn_mobilenet_v3_large_320_fpn", "retinanet_resnet50_fpn", "retinanet_resnet50_fpn_v2",
                "ssd300_vgg16", "ssdlite320_mobilenet_v3_large"}
    assert required <= set(list_models())
    with pytest.raises(ModelError, match="unknown model 'yolo'.*ssdlite320"):
        get_spec("yolo")


@pytest.mark.parametrize("name", ONE_PER_FAMILY)
def test_head_size_and_label_offset_per_family(name):
    detector = build(name, num_classes=1)
    background = detector.spec.family != "retinanet"
    assert detector.label_offset == (1 if background else 0)
    assert _num_outputs(detector) == 1 + detector.label_offset
    # Training targets reach torchvision shifted past background; predictions come back 0-based.
    shifted = detector.to_model_targets([{"boxes": torch.zeros(2, 4), "labels": torch.tensor([0, 0])}])
    assert shifted[0]["labels"].tolist() == [detector.label_offset] * 2


class _Recorder(nn.Module):
    """Stands in for a torchvision detector: records training labels, emits fixed predictions."""

    def __init__(self, labels_out):
        super().__init__()
        self.seen = None
        self.labels_out = torch.tensor(labels_out)

    def forward(self, images, targets=None):
        if self.training:
            self.seen = [t["labels"].tolist() for t in targets]
            return {"loss": torch.tensor(0.0)}
        n = len(self.labels_out)
        return [{"boxes": torch.arange(n * 4, dtype=torch.float32).reshape(n, 4),
                 "scores": torch.linspace(0.9, 0.1, n), "labels": self.labels_out}]


@pytest.mark.parametrize("name, offset", [(FAST, 1), ("retinanet_resnet50_fpn", 0)])
def test_offset_applied_and_removed_in_one_place(name, offset):
    inner = _Recorder([0, 1, 2, 3])
    detector = Detector(inner, get_spec(name), num_classes=3)
    detector.train()
    detector([torch.zeros(3, 8, 8)], [{"boxes": torch.zeros(3, 4), "labels": torch.tensor([0, 1, 2])}])
    assert inner.seen == [[0 + offset, 1 + offset, 2 + offset]]
    out = detector.predict([torch.zeros(3, 8, 8)])[0]
    expected = [label - offset for label in [0, 1, 2, 3] if label - offset >= 0]
    assert out["labels"].tolist() == expected  # background (0 for Faster R-CNN/SSD) never surfaces
    assert len(out["boxes"]) == len(out["scores"]) == len(expected)
    assert detector.training  # predict() restores the mode


def test_image_size_reaches_the_transform_and_vgg_ssd_ignores_it():
    rcnn = build("fasterrcnn_mobilenet_v3_large_320_fpn", 2, image_size=256)
    assert rcnn.net.transform.min_size == (256,)
    vgg = build("ssd300_vgg16", 2, image_size=256)  # its extra layers need 300: passing one must not break
    assert vgg.net.transform.fixed_size == (300, 300)


def test_ssdlite_trains_and_predicts_at_another_square_side():
    """SSDlite's default boxes are relative to the image: at 256 px its inputs are 256 square, its
    losses are finite and its boxes come back in the pixels of the image it was given."""
    torch.manual_seed(0)
    detector = build(FAST, 2, image_size=256)
    assert detector.net.transform.fixed_size == (256, 256) and detector.input_side == 256
    image = torch.rand(3, 300, 500)
    batch, _ = detector.net.transform([image])
    assert tuple(batch.tensors.shape[-2:]) == (256, 256)
    detector.train()
    target = {"boxes": torch.tensor([[50.0, 40.0, 300.0, 280.0]]), "labels": torch.tensor([1])}
    losses = detector([image, image.flip(-1)], [target, target])  # BatchNorm trains on more than one
    assert all(torch.isfinite(v) for v in losses.values())
    out = detector.predict([image])[0]
    assert len(out["boxes"]) and float(out["boxes"][:, 2].max()) <= 500.5 and float(out["boxes"][:, 3].max()) <= 300.5
    with pytest.raises(ModelError, match="multiple of 32"):
        build(FAST, 2, image_size=250)


def test_state_dict_keys_are_the_nets_and_checkpoints_of_the_old_name_still_load():
    """Detector keeps the torchvision module as ``net``; before, it was ``model`` (trial checkpoints
    written then hold ``model.<key>``): both load, into the detector and into its weight average."""
    from detect_automl.engine.optim import ModelEma

    torch.manual_seed(0)
    source = build(FAST, 2)
    assert all(k.startswith("net.") for k in source.state_dict())
    assert set(source.state_dict()) == {"net." + k for k in source.net.state_dict()}
    legacy = {"model." + k.removeprefix("net."): v for k, v in source.state_dict().items()}
    target = build(FAST, 2)
    target.load_state_dict(legacy)  # strict: every key found
    average = ModelEma(build(FAST, 2), 0.9)
    average.restore(legacy, 3)
    for loaded in (target, average.module):
        assert all(torch.equal(v, source.state_dict()[k]) for k, v in loaded.state_dict().items())


def _coco_like_state(name: str) -> dict:
    """A state_dict shaped like torchvision's COCO checkpoint (91 outputs), random values."""
    torch.manual_seed(1)
    return build(name, num_classes=91 - get_spec(name).label_offset).net.state_dict()


def _assert_loaded_except_head(detector: Detector, state: dict) -> None:
    own = detector.net.state_dict()
    backbone = [k for k in state if k.startswith("backbone.") and k in own]
    assert backbone and all(torch.equal(own[k], state[k]) for k in backbone)
    mismatched = [k for k in state if k in own and own[k].shape != state[k].shape]
    assert mismatched and all("classification_head" in k or "box_predictor" in k for k in mismatched)


def test_pretrained_local_file_loads_backbone_and_reinitialises_head(tmp_path):
    state = _coco_like_state(FAST)
    path = tmp_path / "my_weights.pth"
    torch.save(state, path)
    detector = build(FAST, num_classes=3, pretrained=str(path))
    assert _num_outputs(detector) == 4
    _assert_loaded_except_head(detector, state)


def test_pretrained_local_file_errors_name_the_file(tmp_path):
    with pytest.raises(WeightsError, match="missing.pth does not exist"):
        build(FAST, 2, pretrained=str(tmp_path / "missing.pth"))
    foreign = tmp_path / "resnet.pth"
    torch.save({"fc.weight": torch.zeros(3, 3)}, foreign)
    with pytest.raises(WeightsError, match="resnet.pth: only 0 of .* tensors match"):
        build(FAST, 2, pretrained=str(foreign))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a tensor file")
    with pytest.raises(WeightsError, match="junk.pth: not a loadable tensor file"):
        build(FAST, 2, pretrained=str(junk))


def test_coco_weights_come_from_the_torch_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    spec = get_spec(FAST)
    cached = cached_weights_path(spec.coco_weights)
    assert cached.parent == tmp_path / "hub" / "checkpoints"
    cached.parent.mkdir(parents=True)
    state = _coco_like_state(FAST)
    torch.save(state, cached)
    detector = build(FAST, num_classes=3, pretrained="coco")  # no network: read from the cache
    assert _num_outputs(detector) == 4
    _assert_loaded_except_head(detector, state)


def _offline(*args, **kwargs):
    raise urllib.error.URLError("[Errno -2] Name or service not known")


def test_offline_error_says_which_file_where_and_how(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _offline)
    expected = cached_weights_path(get_spec(FAST).coco_weights)
    with pytest.raises(WeightsError) as info:
        build(FAST, 2, pretrained="coco")
    message = str(info.value)
    assert expected.name in message and str(expected.parent) in message
    assert "pretrained=None" in message and "download" in message
    with pytest.warns(UserWarning, match="from scratch instead"):
        detector = build(FAST, 2, pretrained="auto")
    assert _num_outputs(detector) == 3


def test_imagenet_backbone_weights_from_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _offline)
    spec = get_spec(FAST)
    with pytest.raises(WeightsError, match="mobilenet_v3_large"):
        build(FAST, 2, pretrained="imagenet")
    from torchvision.models import mobilenet_v3_large

    torch.manual_seed(2)
    backbone_state = mobilenet_v3_large().state_dict()
    path = cached_weights_path(spec.backbone_weights)
    path.parent.mkdir(parents=True)
    torch.save(backbone_state, path)
    monkeypatch.undo()  # torchvision's own loader must now find the file in the cache
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    detector = build(FAST, 2, pretrained="imagenet")
    first_conv = detector.net.backbone.features[0][0][0].weight
    assert torch.equal(first_conv, backbone_state["features.0.0.weight"])


def test_fit_resolves_auto_weights_once_and_says_why_offline(tmp_path, monkeypatch):
    from detect_automl.models import resolve_pretrained as _resolve_auto

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _offline)
    with pytest.warns(UserWarning, match=r"(?s)ssdlite320_mobilenet_v3_large_coco-a79551df\.pth.*from scratch instead"):
        assert _resolve_auto("auto", [FAST, "fasterrcnn_mobilenet_v3_large_fpn"]) is None
    cached = cached_weights_path(get_spec(FAST).coco_weights)
    cached.parent.mkdir(parents=True)
    torch.save({}, cached)
    assert _resolve_auto("auto", [FAST]) == "coco"  # found in the cache: no download, no warning
    assert _resolve_auto(None, [FAST]) is None and _resolve_auto("imagenet", [FAST]) == "imagenet"
