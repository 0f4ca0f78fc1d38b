"""ObjectDetector: a trained detector with its classes, config and search results."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import pandas as pd
import torch
from tqdm.auto import tqdm

from .config import TrainConfig
from .data.checks import check_dataset
from .data.dataset import Dataset
from .data.loader import make_loader
from .data.policy import DEFAULT_ON_ERROR, skipped_counts
from .engine.evaluate import evaluate as _evaluate
from .engine.trial import default_device
from .errors import InputError
from .export import export as _export
from .leaderboard import COLUMNS
from .models import Detector
from .results import Detections
from . import _inputs, _saving

__all__ = ["ObjectDetector"]

_METRICS_NOT_SAVED = ("seconds", "pr_curves")
"""Validation metrics left out of config.json: timing, and curves (101 floats x classes x 2)."""


class ObjectDetector:
    """A trained object detector: predict, evaluate, save, load.

    Made by :func:`detect_automl.fit` or :meth:`ObjectDetector.load`; needs no Ray.

    Attributes:
        model: the :class:`~detect_automl.models.Detector` (its ``net`` is the torchvision module).
        class_names: the class names; class ids index this list.
        config: the training configuration the model was made with.
        score_threshold: ``predict`` drops detections scoring below this by default.
        path: the saved-model directory this detector was last saved to or loaded from; None
            until then (``fit`` saves, so a detector it returns has one).

    >>> detector = ObjectDetector.load("raccoon_model")        # doctest: +SKIP
    >>> class_ids, scores, boxes = detector.predict("raccoon.jpg")  # doctest: +SKIP
    """

    def __init__(
        self,
        detector: Detector,
        class_names: Sequence[str],
        config: TrainConfig,
        *,
        score_threshold: float = 0.25,
        leaderboard: pd.DataFrame | None = None,
        history: dict[str, list[dict]] | None = None,
        metrics: dict | None = None,
        device: str | torch.device | None = None,
        data_report: dict | None = None,
    ) -> None:
        self.model = detector
        self.class_names = list(class_names)
        self.config = config
        self.score_threshold = float(score_threshold)
        self._leaderboard = leaderboard if leaderboard is not None else pd.DataFrame(columns=COLUMNS)
        self.history = history or {}
        self.metrics = metrics or {}
        self.data_report = data_report  # what fit left out of its train and val data; None if unknown
        self.device = torch.device(device) if device is not None else default_device()
        self.path: Path | None = None
        self.model.to(self.device).eval()

    @property
    def model_name(self) -> str:
        """Registry name of the underlying torchvision detector."""
        return self.config.model

    def leaderboard(self) -> pd.DataFrame:
        """Trials of the search that made this detector, best first (a copy)."""
        return self._leaderboard.copy()

    def plot_history(self, metric: str = "val_map", ax: Any = None):
        """Plot ``metric`` per epoch for every trial of the search (needs matplotlib)."""
        from .viz import plot_history

        return plot_history(self.history, metric, ax)

    def predict(
        self,
        images: Any,
        *,
        score_threshold: float | None = None,
        batch_size: int = 8,
        progress: bool = False,
    ) -> Detections | list[Detections]:
        """Detect objects in one image or a list of images.

        Args:
            images: a path, a numpy uint8 array (HxWx3 RGB; also HxWx4 RGBA, HxW grayscale,
                read-only or not), a PIL image of any mode, or a list of these; each is
                converted as a file of its kind is (alpha dropped, gray repeated).
            score_threshold: drop detections scoring below this (default: ``self.score_threshold``).
            batch_size: images per forward pass.
            progress: show a progress bar over the batches.

        Returns:
            Detections (boxes in original-image pixels) for one input; a list for a list.

        >>> class_ids, scores, boxes = detector.predict("apple.jpg")  # doctest: +SKIP
        """
        single = not isinstance(images, (list, tuple))
        items = [images] if single else list(images)
        if not items:
            raise InputError("predict() got an empty list of images")
        if int(batch_size) < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        threshold = self.score_threshold if score_threshold is None else float(score_threshold)
        results: list[Detections] = []
        starts = range(0, len(items), int(batch_size))
        for start in tqdm(starts, desc="predict", unit="batch", leave=False, disable=None if progress else True):
            arrays = [_inputs.to_rgb_array(item, start + i) for i, item in enumerate(items[start:start + batch_size])]
            tensors = [torch.from_numpy(a).to(self.device).permute(2, 0, 1).float().div_(255.0) for a in arrays]
            for out in self.model.predict(tensors):
                keep = (out["scores"] >= threshold).numpy()
                results.append(Detections(out["labels"].numpy()[keep], out["scores"].numpy()[keep],
                                          out["boxes"].numpy()[keep], self.class_names))
        return results[0] if single else results

    def evaluate(self, data: Dataset, *, batch_size: int = 4, progress: bool = False,
                 on_error: str = DEFAULT_ON_ERROR) -> dict:
        """COCO metrics on a labelled dataset: map, map_50, map_75, per_class ({name: AP}), counts.

        ``pr_curves`` holds each class's precision-recall curve at IoU .50 and .75: draw them with
        :func:`detect_automl.viz.plot_pr_curves`, and per-class AP with ``plot_per_class_ap``.

        The dataset's classes are matched to the model's by name; a class the model does not
        know is an error that names it. The data is checked first (:func:`detect_automl.inspect`,
        headers only) under ``on_error`` (``"auto"``, ``"raise"`` or ``"skip"``, as for
        :func:`detect_automl.fit`): bad images and boxes are left out with one warning, or a
        DatasetError carrying the report is raised. ``num_images`` and ``num_ground_truth``
        count what was scored; ``num_images_skipped`` and ``num_boxes_skipped`` what was left out.
        """
        data = check_dataset(data, on_error)
        skipped = skipped_counts(data.problems)
        loader = make_loader(_inputs.match_classes(data, self.class_names), batch_size, train=False)
        return {**_evaluate(self.model, loader, self.class_names, self.device, progress=progress), **skipped}

    def save(self, path: str | Path) -> Path:
        """Write ``model.pt`` (state_dict), ``config.json``, ``leaderboard.csv``, ``history.json``, and
        ``data_report.json`` when :attr:`data_report` is set.

        The directory is written atomically: an interrupted save leaves any previous one intact.
        Sets :attr:`path` to the directory, which it returns.
        """
        config = {
            "model": self.config.model,
            "class_names": self.class_names,
            "image_size": self.config.image_size,
            "score_threshold": self.score_threshold,
            "hyperparameters": self.config.to_dict(),
            "metrics": {k: v for k, v in self.metrics.items() if k not in _METRICS_NOT_SAVED},
        }
        self.path = _saving.save_dir(Path(path), self.model.net.state_dict(), config, self._leaderboard,
                                     self.history, self.data_report)
        return self.path

    def export(self, path: str | Path | None = None, *, format: str = "torchscript") -> Path:
        """Export to TorchScript or ONNX (+ a JSON sidecar); see :func:`detect_automl.export.export`.

        >>> detector.export("raccoon.onnx", format="onnx")  # doctest: +SKIP
        """
        return _export(self, path, format=format)

    @classmethod
    def load(cls, path: str | Path, *, device: str | torch.device | None = None) -> ObjectDetector:
        """Load a directory written by :meth:`save` (tensors only, ``weights_only=True``; no Ray).

        Raises:
            ModelError: missing, truncated or foreign files, or a newer format version.
        """
        saved = _saving.load_dir(Path(path))
        # Keep the recorded ``pretrained``: it names the architecture, so a second save loads the same.
        config = TrainConfig.from_dict(saved.config["hyperparameters"])
        detector = cls(saved.detector, saved.config["class_names"], config,
                       score_threshold=saved.config["score_threshold"], leaderboard=saved.leaderboard,
                       history=saved.history, metrics=saved.config.get("metrics", {}), device=device,
                       data_report=saved.data_report)
        detector.path = Path(path)
        return detector

    def __repr__(self) -> str:
        score = f", val mAP {self.metrics['map']:.3f}" if "map" in self.metrics else ""
        return f"ObjectDetector({self.model_name}, {len(self.class_names)} classes{score})"
