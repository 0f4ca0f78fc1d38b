"""A training run's live state, and the checkpoint that continues it where it stopped."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..config import TrainConfig
from .distributed import Replicas
from .optim import ModelEma, WarmupCosine, amp_dtype, build_optimizer

__all__ = ["TrainResult", "TrainState", "memory_format"]


def memory_format(device: torch.device, parallel: bool = False) -> torch.memory_format:
    """How a run lays out its convolution weights (and so its activations): channels-last on a
    CPU, where oneDNN's convolutions, depthwise ones above all, run faster in it (SSDlite320, a
    batch of 4, 2 cores: 0.56-0.64 s a training step contiguous, 0.46-0.47 s channels-last;
    ``benchmarks/RESULTS.md``, "Input side and layout on a CPU"). Contiguous on a GPU (not
    measured there yet) and for data-parallel replicas, whose gradient buckets follow the
    contiguous layout.
    """
    if device.type == "cpu" and not parallel:
        return torch.channels_last
    return torch.contiguous_format


@dataclass
class TrainResult:
    """What ``train`` returns.

    Attributes:
        history: one dict per epoch (epoch, loss, steps, train_seconds, and val metrics if any).
        best_state: state_dict (CPU tensors) of the best epoch by val mAP (ties: mAP@50) seen by
            this process, or the last epoch's when none was validated here.
        best_metrics: the validation metrics of the best epoch ({} without validation); kept
            across a resume and an out-of-memory retry.
        stopped: "epochs" (all done), "time_limit" (its time ended; the planned end without an
            epoch cap) or "converged" (val mAP stopped improving: ``TrainConfig.patience``).
    """

    history: list[dict] = field(default_factory=list)
    best_state: dict | None = None
    best_metrics: dict = field(default_factory=dict)
    stopped: str = "epochs"


class TrainState:
    """Model, optimizer, schedule position, weight average and best epoch of one run.

    ``train`` advances it; :meth:`checkpoint` captures it after an epoch and :meth:`restore`
    puts it back, so a resumed run continues with its next epoch, its optimizer moments, its
    place on the learning-rate curve (no second warm-up) and its best-so-far mAP. An
    out-of-memory retry keeps the same object and only changes the batch size.
    """

    def __init__(self, model: nn.Module, config: TrainConfig, device: torch.device) -> None:
        self.replicas = Replicas.current()
        self.model = model.to(device, memory_format=memory_format(device, self.replicas.parallel))
        self.config, self.device = config, device
        # What trains: the model, or (data-parallel) its DistributedDataParallel wrapper, which
        # starts every replica from rank 0's weights.
        self.parallel = self.replicas.wrap(self.model, device)
        self.optimizer = build_optimizer(model, config.optimizer, config.lr, config.weight_decay, config.momentum)
        self.amp_dtype = amp_dtype(device, config.amp)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.ema = ModelEma(model, config.ema_decay) if config.ema_decay > 0 else None
        self.epoch = 0  # epochs completed
        self.steps = 0  # optimizer steps taken
        self.progress = 0.0  # how far along the cosine the learning rate is, in [0, 1]
        self.result = TrainResult()

    @property
    def kept(self) -> nn.Module:
        """The weights that are validated, checkpointed and returned: the average, or the model."""
        return self.model if self.ema is None else self.ema.module

    def schedule(self, planned_steps: int | None, start: float, deadline: float | None) -> WarmupCosine:
        """The learning-rate schedule for the rest of the run, from where the state stands:
        over ``planned_steps``, or planned by time to end at ``deadline`` when that is None."""
        return WarmupCosine(self.optimizer, planned_steps, self.config.warmup_steps, self.config.min_lr_ratio,
                            start, deadline, offset=self.progress, done_steps=self.steps)

    def checkpoint(self) -> dict:
        """Everything needed to continue (tensors, numbers and dicts: loads with weights_only).

        ``state_dict`` holds the kept weights, the ones a search ranks and keeps. The tensors are
        the live ones, not copies: save the dict before training goes on.
        """
        best = self.result.best_metrics
        saved = {"state_dict": self.kept.state_dict(), "epoch": self.epoch, "steps": self.steps,
                 "progress": self.progress, "optimizer": self.optimizer.state_dict(),
                 "best": {k: best[k] for k in ("map", "map_50", "epoch") if k in best}}
        if self.ema is not None:
            saved["model"] = self.model.state_dict()
            saved["ema_updates"] = self.ema.updates
        if self.scaler is not None:
            saved["scaler"] = self.scaler.state_dict()
        return saved

    def restore(self, saved: dict) -> None:
        """Continue from :meth:`checkpoint`'s dict (a detector state_dict alone restarts the optimizer)."""
        self.model.load_state_dict(saved.get("model", saved["state_dict"]))
        if self.ema is not None:
            self.ema.restore(saved["state_dict"], saved.get("ema_updates", 0))
        if "optimizer" in saved:
            self.optimizer.load_state_dict(saved["optimizer"])
        if self.scaler is not None and "scaler" in saved:
            self.scaler.load_state_dict(saved["scaler"])
        self.epoch, self.steps = int(saved.get("epoch", 0)), int(saved.get("steps", 0))
        self.progress = float(saved.get("progress", 0.0))
        self.result.best_metrics = dict(saved.get("best", {}))
