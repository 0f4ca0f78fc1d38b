"""ModelSpec: how to build one torchvision detector (what the registry holds, what a Detector keeps)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn
from torchvision.models import WeightsEnum

__all__ = ["ModelSpec"]


@dataclass(frozen=True)
class ModelSpec:
    """How to build one torchvision detector.

    Attributes:
        name: registry name (torchvision's builder name).
        builder: the torchvision builder function.
        family: "faster_rcnn", "retinanet", "ssd" or "ssdlite" (selects the head replacer).
        backbone: a short backbone description.
        coco_weights: the COCO detector weights enum.
        backbone_weights: the ImageNet backbone weights enum.
        background: whether class index 0 is reserved for background in torchvision's head.
        default_size: shorter side the model resizes to by default (pixels).
        fixed_size: True when the model takes square inputs of one size (SSD).
        square_sides: for a fixed-size model, whether another square side may replace
            ``default_size`` (SSDlite: its default boxes are relative to the image and its extra
            layers are padded, so any side from 128 px on works); VGG SSD300's unpadded extra
            layers need 300.
    """

    name: str
    builder: Callable[..., nn.Module]
    family: str
    backbone: str
    coco_weights: WeightsEnum
    backbone_weights: WeightsEnum
    background: bool
    default_size: int
    fixed_size: bool = False
    square_sides: bool = False

    @property
    def label_offset(self) -> int:
        """What torchvision's head adds to our 0-based class ids (1 when 0 means background)."""
        return 1 if self.background else 0
