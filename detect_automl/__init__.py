"""detect_automl: turn a folder of labelled images into a tuned, saved object detector.

>>> import detect_automl as da                                      # doctest: +SKIP
>>> train = da.Dataset("datasets/raccoon", format="voc", split="train")  # doctest: +SKIP
>>> detector = da.fit(train, time_limit=300)                         # doctest: +SKIP
>>> class_ids, scores, boxes = detector.predict("raccoon.jpg")      # doctest: +SKIP
"""

from ._version import __version__

from .api import fit
from .config import TrainConfig
from .data.checks import inspect
from .data.dataset import Dataset
from .data.download import download_dataset
from .errors import (
    DatasetError,
    DetectAutoMLError,
    InputError,
    ModelError,
    SearchError,
    TrainingError,
    WeightsError,
)
from .models import list_models
from .predictor import ObjectDetector
from .results import Detections

__all__ = [
    "Dataset",
    "DatasetError",
    "DetectAutoMLError",
    "Detections",
    "InputError",
    "ModelError",
    "ObjectDetector",
    "SearchError",
    "TrainConfig",
    "TrainingError",
    "WeightsError",
    "__version__",
    "download_dataset",
    "fit",
    "inspect",
    "list_models",
]
