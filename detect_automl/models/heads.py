"""Replace the class-dependent head of a COCO-pretrained detector, one function per family."""

from __future__ import annotations

from functools import partial

from torch import nn
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.retinanet import RetinaNetClassificationHead
from torchvision.models.detection.ssd import SSDClassificationHead
from torchvision.models.detection.ssdlite import SSDLiteClassificationHead

__all__ = ["HEAD_REPLACERS"]


def _faster_rcnn(model: nn.Module, num_outputs: int) -> None:
    in_features = model.roi_heads.box_predictor.cls_score.in_features
    model.roi_heads.box_predictor = FastRCNNPredictor(in_features, num_outputs)


def _retinanet(model: nn.Module, num_outputs: int) -> None:
    # Keep the pretrained conv tower; only the final logits depend on the class count.
    head = model.head.classification_head
    fresh = RetinaNetClassificationHead(head.cls_logits.in_channels, head.num_anchors, num_outputs)
    head.cls_logits = fresh.cls_logits
    head.num_classes = num_outputs


def _ssd(model: nn.Module, num_outputs: int) -> None:
    head = model.head.classification_head
    in_channels = [conv.in_channels for conv in head.module_list]
    anchors = [conv.out_channels // head.num_columns for conv in head.module_list]
    model.head.classification_head = SSDClassificationHead(in_channels, anchors, num_outputs)


def _ssdlite(model: nn.Module, num_outputs: int) -> None:
    head = model.head.classification_head
    in_channels = [block[0][0].in_channels for block in head.module_list]
    anchors = [block[-1].out_channels // head.num_columns for block in head.module_list]
    norm = partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)  # as torchvision's ssdlite builder
    model.head.classification_head = SSDLiteClassificationHead(in_channels, anchors, num_outputs, norm)


HEAD_REPLACERS = {
    "faster_rcnn": _faster_rcnn,
    "retinanet": _retinanet,
    "ssd": _ssd,
    "ssdlite": _ssdlite,
}
