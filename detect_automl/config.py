"""TrainConfig: the hyperparameters of one training run, merged once in the facade."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from .errors import InputError

__all__ = ["TrainConfig"]


@dataclass
class TrainConfig:
    """Hyperparameters of one training run (one trial of a search).

    Attributes:
        model: a registry name (``detect_automl.models.list_models()``).
        pretrained: "auto" (COCO weights where they can be had, else from scratch with a
            warning), "coco", "imagenet", a weights file path, or None (train from scratch).
        epochs: number of epochs, or None to train until the time budget ends (the schedule is
            then planned to end at the deadline). With a budget, a number is a cap: training
            ends at whichever comes first. ``fit`` with a ``time_limit`` sets None unless the
            user gives ``epochs``; without one, the preset's number is used.
        batch_size: images per step.
        optimizer: "sgd" or "adamw".
        lr: peak learning rate (after warm-up), cosine-decayed to ``lr * min_lr_ratio``.
        weight_decay: decoupled (AdamW) or L2 (SGD) weight decay.
        momentum: SGD momentum.
        warmup_steps: linear warm-up steps from ``lr * 0.001``.
        min_lr_ratio: final learning rate as a fraction of ``lr``.
        grad_clip: max gradient norm (0 disables clipping).
        ema_decay: decay of the exponential moving average of the weights that is validated
            and kept (0 disables it and keeps the raw weights).
        image_size: shorter side the model resizes to; SSDlite's square side (VGG SSD300 ignores
            it); None: the model's own.
        augment: augmentation strength in [0, 1] (0 disables augmentation).
        amp: mixed precision on CUDA (ignored on CPU).
        num_workers: DataLoader worker processes; None derives them from the CPUs the run has
            (:func:`detect_automl.engine.trial.data_workers`).
        seed: seeds torch, numpy and data order.
        eval_every: evaluate on the validation set every N epochs (the last epoch always).
        patience: stop once this many validations in a row have not improved the best val mAP,
            counted only in the second half of the schedule (the first half's plateaus are
            lifted by the decaying learning rate); None never stops on a plateau.
    """

    model: str = "ssdlite320_mobilenet_v3_large"
    pretrained: str | None = "auto"
    epochs: int | None = 20
    batch_size: int = 4
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    warmup_steps: int = 50
    min_lr_ratio: float = 0.01
    grad_clip: float = 10.0
    ema_decay: float = 0.998
    image_size: int | None = None
    augment: float = 0.5
    amp: bool = True
    num_workers: int | None = None
    seed: int = 0
    eval_every: int = 1
    patience: int | None = None

    def __post_init__(self) -> None:
        if self.optimizer not in ("sgd", "adamw"):
            raise InputError(f"optimizer must be 'sgd' or 'adamw', got {self.optimizer!r}")
        for name in ("epochs", "batch_size", "eval_every", "patience"):
            if getattr(self, name) is None and name in ("epochs", "patience"):
                continue
            if int(getattr(self, name)) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if not self.lr > 0:
            raise InputError(f"lr must be > 0, got {self.lr!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise InputError(f"ema_decay must be in [0, 1), got {self.ema_decay!r}")
        if self.num_workers is not None and int(self.num_workers) < 0:
            raise InputError(f"num_workers must be >= 0 or None, got {self.num_workers!r}")
        if not 0.0 <= self.augment <= 1.0:
            raise InputError(f"augment must be in [0, 1], got {self.augment!r}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a dict, rejecting unknown keys by name."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InputError(f"unknown hyperparameters {unknown}; known: {sorted(known)}")
        return cls(**values)

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` applied (validated)."""
        return TrainConfig.from_dict({**self.to_dict(), **changes})
