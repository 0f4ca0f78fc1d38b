"""Data layer: read/write VOC and COCO, the Dataset container, augmentations and loaders."""

from .dataset import Dataset
from .records import ImageRecord

__all__ = ["Dataset", "ImageRecord"]
