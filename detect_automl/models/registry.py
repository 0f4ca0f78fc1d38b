"""Detector registry: model name -> ModelSpec; ``build()`` makes a detector for a class list."""

from __future__ import annotations

import logging
import warnings
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

from torch import nn
from torchvision.models import MobileNet_V3_Large_Weights, ResNet50_Weights, VGG16_Weights
from torchvision.models import detection as tvd

from ..errors import ModelError, WeightsError
from .detector import Detector
from .heads import HEAD_REPLACERS
from .spec import ModelSpec
from .weights import ensure_weights, load_state_dict_file, placeholder_weights

__all__ = ["register_model", "list_models", "get_spec", "build", "resolve_pretrained"]

log = logging.getLogger(__name__)


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> ModelSpec:
    """Add ``spec`` to the registry (names are unique)."""
    if spec.name in _REGISTRY:
        raise ModelError(f"model {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def list_models() -> list[str]:
    """Names of every registered detector, sorted."""
    return sorted(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    """The ModelSpec registered under ``name``.

    Raises:
        ModelError: unknown name (the message lists the known ones).
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ModelError(f"unknown model {name!r}; choose one of {', '.join(list_models())}") from None


def build(
    name: str,
    num_classes: int,
    *,
    pretrained: str | Path | None = None,
    image_size: int | None = None,
    load_pretrained: bool = True,
    **kwargs,
) -> Detector:
    """Build detector ``name`` for ``num_classes`` classes (background not counted).

    Args:
        name: a name from ``list_models()``.
        num_classes: number of object classes; class ids are 0-based everywhere outside models/.
        pretrained: "coco" (COCO detector weights, class head re-initialised), "imagenet"
            (backbone only), "auto" ("coco" where the weights can be had, else a warning that
            says why and training from scratch), a path to a state_dict file for this
            architecture, or None (from scratch).
        image_size: shorter side to resize to (Faster R-CNN / RetinaNet); SSDlite's square side
            (a multiple of 32, at least 128); ignored by VGG SSD300, whose size is fixed.
        load_pretrained: False builds exactly the architecture ``pretrained`` gives (module
            types, norm-layer eps, frozen parameters, state_dict keys) without reading,
            downloading or even looking for any weights file, for a caller that loads its own
            state_dict (a saved model, a checkpoint). The weights are placeholders until then.
            "auto" and a file path give the from-scratch architecture, as they always did
            when a saved model was loaded.
        **kwargs: passed to the torchvision builder (e.g. ``box_batch_size_per_image``).

    Returns:
        A Detector whose inputs and outputs use 0-based class ids.

    >>> det = build("ssdlite320_mobilenet_v3_large", num_classes=3)
    """
    spec = get_spec(name)
    if num_classes < 1:
        raise ModelError(f"num_classes must be >= 1, got {num_classes}")
    if image_size is not None and not spec.fixed_size:
        kwargs.setdefault("min_size", int(image_size))
        kwargs.setdefault("max_size", int(round(image_size * 1333 / 800)))
    side = _square_side(spec, image_size)
    num_outputs = num_classes + spec.label_offset
    try:
        model = _build_torchvision(spec, num_outputs, pretrained, load_pretrained, kwargs)
    except (WeightsError, ModelError):
        raise
    except TypeError as exc:
        raise ModelError(f"cannot build {name} with options {sorted(kwargs)}: {exc}") from exc
    if side is not None:
        model.transform.fixed_size, model.transform.min_size, model.transform.max_size = (side, side), (side,), side
    return Detector(model, spec, num_classes)


def _square_side(spec: ModelSpec, image_size: int | None) -> int | None:
    """The square side a fixed-size model that allows others is built for (None: its default)."""
    if image_size is None or not spec.square_sides:
        return None
    side = int(image_size)
    if side < 128 or side % 32:
        raise ModelError(f"{spec.name}: image_size must be a multiple of 32 from 128 on, got {image_size!r}")
    return side


def resolve_pretrained(pretrained: str | None, models: list[str]) -> str | None:
    """``pretrained="auto"`` -> "coco" when every candidate model's COCO weights can be had (cached
    or downloaded once, here, before any trial starts), else None with one warning saying why.
    Any other value is returned as it is."""
    if pretrained != "auto":
        return pretrained
    try:
        for name in dict.fromkeys(models):
            ensure_weights(get_spec(name).coco_weights)
    except WeightsError as exc:
        warnings.warn(f"{exc}\nTraining from scratch instead: expect a much lower mAP than with pretrained "
                      "weights.", stacklevel=4)  # the caller of fit()
        return None
    return "coco"


def _build_torchvision(spec: ModelSpec, num_outputs: int, pretrained, load: bool, kwargs: dict) -> nn.Module:
    if pretrained == "auto":
        if not load:
            pretrained = None  # fit resolves "auto" before building: only old saved models record it
        else:
            try:
                return _build_torchvision(spec, num_outputs, "coco", load, kwargs)
            except WeightsError as exc:
                warnings.warn(f"{exc}\nTraining {spec.name} from scratch instead: expect a much lower mAP "
                              "than with pretrained weights.", stacklevel=4)
                pretrained = None
    if pretrained == "coco":
        if load:
            ensure_weights(spec.coco_weights)  # once cached, the builder reads it without network
        with _weights_source(load):
            model = spec.builder(weights=spec.coco_weights, weights_backbone=None, **kwargs)
        HEAD_REPLACERS[spec.family](model, num_outputs)
        log.info("%s: COCO %s, class head re-initialised for %d outputs", spec.name,
                 "weights loaded" if load else "architecture (weights not read)", num_outputs)
        return model
    if pretrained == "imagenet":
        if load:
            ensure_weights(spec.backbone_weights)
        with _weights_source(load):
            return spec.builder(weights=None, weights_backbone=spec.backbone_weights, num_classes=num_outputs,
                                **kwargs)
    if pretrained is not None and not isinstance(pretrained, (str, Path)):
        raise ModelError(f"pretrained must be 'coco', 'imagenet', 'auto', a file path or None, got {pretrained!r}")
    model = spec.builder(weights=None, weights_backbone=None, num_classes=num_outputs, **kwargs)
    if pretrained is not None and load:
        _load_matching(model, Path(pretrained), spec.name)
    return model


def _weights_source(load: bool) -> AbstractContextManager:
    """Where torchvision's builder gets pretrained weights: their file, or placeholders."""
    return nullcontext() if load else placeholder_weights()


def _load_matching(model: nn.Module, path: Path, name: str) -> None:
    """Load every tensor of the file whose name and shape match; class-count heads stay fresh."""
    state = load_state_dict_file(path)
    own = model.state_dict()
    matching = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if len(matching) < len(own) // 2:
        raise WeightsError(
            f"{path}: only {len(matching)} of {len(own)} tensors match {name}; "
            "is it a state_dict for this architecture?"
        )
    model.load_state_dict(matching, strict=False)
    skipped = sorted(set(own) - set(matching))
    log.info("%s: loaded %d tensors from %s; re-initialised %d (%s)", name, len(matching), path,
             len(skipped), ", ".join(skipped[:4]) + (" ..." if len(skipped) > 4 else ""))


_MOBILENET = MobileNet_V3_Large_Weights.IMAGENET1K_V1
_RESNET = ResNet50_Weights.IMAGENET1K_V1
for _spec in (
    ModelSpec("fasterrcnn_resnet50_fpn", tvd.fasterrcnn_resnet50_fpn, "faster_rcnn", "ResNet-50 FPN",
              tvd.FasterRCNN_ResNet50_FPN_Weights.COCO_V1, _RESNET, True, 800),
    ModelSpec("fasterrcnn_resnet50_fpn_v2", tvd.fasterrcnn_resnet50_fpn_v2, "faster_rcnn", "ResNet-50 FPN v2",
              tvd.FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1, _RESNET, True, 800),
    ModelSpec("fasterrcnn_mobilenet_v3_large_fpn", tvd.fasterrcnn_mobilenet_v3_large_fpn, "faster_rcnn",
              "MobileNetV3-Large FPN", tvd.FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1, _MOBILENET,
              True, 800),
    ModelSpec("fasterrcnn_mobilenet_v3_large_320_fpn", tvd.fasterrcnn_mobilenet_v3_large_320_fpn,
              "faster_rcnn", "MobileNetV3-Large FPN (320 px)",
              tvd.FasterRCNN_MobileNet_V3_Large_320_FPN_Weights.COCO_V1, _MOBILENET, True, 320),
    ModelSpec("retinanet_resnet50_fpn", tvd.retinanet_resnet50_fpn, "retinanet", "ResNet-50 FPN",
              tvd.RetinaNet_ResNet50_FPN_Weights.COCO_V1, _RESNET, False, 800),
    ModelSpec("retinanet_resnet50_fpn_v2", tvd.retinanet_resnet50_fpn_v2, "retinanet", "ResNet-50 FPN v2",
              tvd.RetinaNet_ResNet50_FPN_V2_Weights.COCO_V1, _RESNET, False, 800),
    ModelSpec("ssd300_vgg16", tvd.ssd300_vgg16, "ssd", "VGG16", tvd.SSD300_VGG16_Weights.COCO_V1,
              VGG16_Weights.IMAGENET1K_FEATURES, True, 300, fixed_size=True),
    ModelSpec("ssdlite320_mobilenet_v3_large", tvd.ssdlite320_mobilenet_v3_large, "ssdlite",
              "MobileNetV3-Large", tvd.SSDLite320_MobileNet_V3_Large_Weights.COCO_V1, _MOBILENET, True, 320,
              fixed_size=True, square_sides=True),
):
    register_model(_spec)
