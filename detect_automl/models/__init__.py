"""Detector factory over torchvision Faster R-CNN, RetinaNet, SSD and SSDlite."""

from .detector import Detector
from .registry import build, get_spec, list_models, register_model, resolve_pretrained
from .spec import ModelSpec

__all__ = ["Detector", "ModelSpec", "build", "get_spec", "list_models", "register_model", "resolve_pretrained"]
