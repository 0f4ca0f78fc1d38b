"""Detector: a torchvision detection model behind 0-based class ids (the one place for the offset)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models.detection._utils import BoxCoder

from .spec import ModelSpec

__all__ = ["Detector", "to_class_ids"]


class _Fp32BoxCoder(BoxCoder):
    """torchvision's BoxCoder, decoding in fp32 whatever autocast made of the regression.

    ``BoxCoder.decode_single`` casts the anchors to the regression's dtype; under bf16 autocast
    that rounds coordinates near 800 px to steps of 4 px (fp16: 0.5 px), which biases the
    proposals a Faster R-CNN trains on and every box at strict IoUs.
    """

    def decode_single(self, rel_codes: Tensor, boxes: Tensor) -> Tensor:
        return super().decode_single(rel_codes.float(), boxes.float())


def _decode_in_fp32(model: nn.Module) -> None:
    """Give every box coder of a torchvision detector (RPN, RoI heads, RetinaNet, SSD) fp32 decoding."""
    for module in model.modules():
        coder = getattr(module, "box_coder", None)
        if type(coder) is BoxCoder:
            module.box_coder = _Fp32BoxCoder(coder.weights, coder.bbox_xform_clip)


def to_class_ids(boxes: Tensor, scores: Tensor, labels: Tensor, label_offset: int) -> tuple[Tensor, Tensor, Tensor]:
    """One image's torchvision outputs -> 0-based class ids, background dropped.

    A plain tensor function, so the exported TorchScript/ONNX graphs (detect_automl.export)
    remove the offset with this same code.
    """
    labels = labels - label_offset
    keep = labels >= 0
    return boxes[keep], scores[keep], labels[keep]


def _rename_legacy_keys(module: nn.Module, state_dict: dict[str, Any], prefix: str, *_: Any) -> None:
    """Load-state-dict pre-hook: ``model.*`` keys (the wrapped net's name before ``net``) -> ``net.*``."""
    old = prefix + "model."
    for key in [k for k in state_dict if k.startswith(old)]:
        state_dict[prefix + "net." + key[len(old):]] = state_dict.pop(key)


class Detector(nn.Module):
    """Wraps a torchvision detector so callers see 0-based class ids.

    torchvision's Faster R-CNN and SSD heads reserve class 0 for background (a dataset labelled 0
    would train a model that predicts nothing, pytorch/vision#1952); RetinaNet does not. The shift
    is added to training targets and removed from predictions here, and nowhere else.

    In training mode ``forward(images, targets)`` returns torchvision's loss dict; in eval mode
    ``forward(images)`` returns one dict per image with ``boxes`` (xyxy, pixels of that input
    image), ``scores`` and 0-based ``labels``.

    Attributes:
        net: the torchvision detector itself, in its own label space. Its ``state_dict()`` is
            what a saved model's ``model.pt`` holds.
        spec: how ``net`` was built (registry entry).
        num_classes: object classes, background not counted.
        label_offset: what ``net``'s head adds to a 0-based class id.

    This module's own state_dict keys are ``net.<torchvision key>``; checkpoints written when the
    attribute was called ``model`` (keys ``model.<torchvision key>``) still load.
    """

    def __init__(self, net: nn.Module, spec: ModelSpec, num_classes: int) -> None:
        super().__init__()
        _decode_in_fp32(net)
        self.net = net
        self.spec = spec
        self.num_classes = num_classes
        self.label_offset = spec.label_offset
        self.register_load_state_dict_pre_hook(_rename_legacy_keys)

    @property
    def input_side(self) -> int:
        """The shorter side torchvision's transform resizes inputs to (320 for SSDlite)."""
        return int(self.net.transform.min_size[-1])

    def to_model_targets(self, targets: list[dict[str, Tensor]]) -> list[dict[str, Tensor]]:
        """0-based class ids -> torchvision's label space."""
        return [{**t, "labels": t["labels"] + self.label_offset} for t in targets]

    def from_model_outputs(self, outputs: list[dict[str, Tensor]]) -> list[dict[str, Tensor]]:
        """torchvision's label space -> 0-based class ids (background never reaches callers).

        Outputs come back on the CPU: one copy per field, then masking without device syncs.
        """
        results = []
        for out in outputs:
            boxes, scores, labels = to_class_ids(out["boxes"].cpu(), out["scores"].cpu(), out["labels"].cpu(),
                                                 self.label_offset)
            results.append({"boxes": boxes, "scores": scores, "labels": labels})
        return results

    def forward(self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None):
        if self.training:
            if targets is None:
                raise ValueError("targets are required in training mode")
            return self.net(images, self.to_model_targets(targets))
        return self.from_model_outputs(self.net(images))

    @torch.inference_mode()
    def predict(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        """Eval-mode forward without autograd; outputs on the CPU (restores the previous mode)."""
        if not self.training:
            return self(images)
        self.eval()
        try:
            return self(images)
        finally:
            self.train()
