"""One trial: build the detector and loaders for a TrainConfig, train, keep the best epoch."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ..config import TrainConfig
from ..data.dataset import Dataset
from ..data.loader import make_loader
from ..models import Detector, build
from .train import TrainResult, seed_everything, train

__all__ = ["TrialOutcome", "default_device", "run_trial"]


@dataclass
class TrialOutcome:
    """A trained detector (weights of its best epoch) and its training record."""

    detector: Detector
    result: TrainResult
    seconds: float


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def run_trial(
    config: TrainConfig,
    train_data: Dataset,
    val_data: Dataset | None,
    *,
    device: torch.device | None = None,
    deadline: float | None = None,
    on_epoch=None,
    init_state: dict | None = None,
    start_epoch: int = 1,
    progress: bool = True,
) -> TrialOutcome:
    """Train ``config`` on ``train_data``, validating on ``val_data`` every ``eval_every`` epochs.

    This is what both a single ``fit`` and every Ray Tune trial call. ``init_state`` (a
    Detector state_dict) and ``start_epoch`` continue an interrupted trial.
    """
    start = time.monotonic()
    device = device or default_device()
    seed_everything(config.seed)
    detector = build(config.model, len(train_data.classes), pretrained=config.pretrained,
                     image_size=config.image_size)
    if init_state is not None:
        detector.load_state_dict(init_state)
    # Training images larger than twice what the model looks at are shrunk before augmentation.
    train_loader = make_loader(train_data, config.batch_size, train=True, augment=config.augment,
                               num_workers=config.num_workers, seed=config.seed, max_side=2 * detector.input_side)
    val_loader = None
    if val_data is not None and len(val_data):
        val_loader = make_loader(val_data, config.batch_size, train=False, num_workers=config.num_workers)
    result = train(detector, train_loader, config, device, val_loader=val_loader,
                   class_names=list(train_data.classes), deadline=deadline, on_epoch=on_epoch,
                   start_epoch=start_epoch, progress=progress)
    detector.load_state_dict(result.best_state)
    return TrialOutcome(detector, result, time.monotonic() - start)
