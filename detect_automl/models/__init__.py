"""Detector factory over torchvision Faster R-CNN, RetinaNet, SSD and SSDlite."""

from .detector import Detector
from .registry import ModelSpec, build, get_spec, list_models, register_model

__all__ = ["Detector", "ModelSpec", "build", "get_spec", "list_models", "register_model"]
