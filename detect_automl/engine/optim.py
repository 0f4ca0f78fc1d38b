"""Optimizer, learning-rate schedule, moving average of the weights, mixed-precision policy."""

from __future__ import annotations

import math
import time

import torch
from torch import nn

__all__ = ["build_optimizer", "WarmupCosine", "ModelEma", "amp_dtype", "WARMUP_TIME_FRACTION"]

WARMUP_TIME_FRACTION = 0.05
"""The most of a time budget the learning-rate warm-up takes."""


def build_optimizer(model: nn.Module, name: str, lr: float, weight_decay: float, momentum: float):
    """SGD (Nesterov-free, as torchvision's references) or AdamW over trainable parameters.

    Norm layers and biases get no weight decay.
    """
    decay, no_decay = [], []
    for param_name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 or param_name.endswith(".bias") else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    return torch.optim.AdamW(groups, lr=lr)


class WarmupCosine:
    """LR factor: linear warm-up, then cosine to ``min_ratio``.

    Progress is the larger of steps done / planned steps and time used / time budget, so a run
    planned by time (``total_steps=None``) or cut short by its deadline ends its schedule at the
    floor exactly when its time ends. ``offset`` is the progress a continued run had already
    reached: the rest of the cosine is spread over this call's steps and time, with no new
    warm-up when ``done_steps`` already covers it.
    """

    def __init__(self, optimizer, total_steps: int | None, warmup_steps: int, min_ratio: float,
                 start: float, deadline: float | None, *, offset: float = 0.0, done_steps: int = 0) -> None:
        if total_steps is None and deadline is None:
            raise ValueError("a schedule needs a number of steps or a deadline")
        self.total_steps = None if total_steps is None else max(1, total_steps)
        cap = warmup_steps if self.total_steps is None else self.total_steps // 4
        self.warmup_steps = max(0, min(warmup_steps, cap) - done_steps)
        self.min_ratio = min_ratio
        self.start, self.deadline = start, deadline
        self.offset = min(1.0, max(0.0, offset))
        self.step_count = 0
        self.optimizer = optimizer
        self.base_lrs = [g.get("initial_lr", g["lr"]) for g in optimizer.param_groups]
        for group, base in zip(optimizer.param_groups, self.base_lrs):
            group["initial_lr"] = base  # a continued optimizer's groups keep their peak rate here
        self._apply()

    def _time_used(self) -> float:
        """Fraction of the time budget used (0 without a deadline)."""
        if self.deadline is None:
            return 0.0
        return (time.monotonic() - self.start) / max(1e-9, self.deadline - self.start)

    def _warmed(self) -> float:
        """How far the warm-up is, in [0, 1]: by steps, or by time (it never takes more than
        ``WARMUP_TIME_FRACTION`` of a time budget, however slow the steps)."""
        if self.step_count >= self.warmup_steps:
            return 1.0
        return min(1.0, max(self.step_count / self.warmup_steps, self._time_used() / WARMUP_TIME_FRACTION))

    def progress(self) -> float:
        """Fraction of the cosine done, in [0, 1] (``offset`` during warm-up)."""
        if self._warmed() < 1.0:
            return self.offset
        done = 0.0 if self.total_steps is None else \
            (self.step_count - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
        done = max(done, self._time_used())
        return min(1.0, self.offset + (1.0 - self.offset) * done)

    def factor(self) -> float:
        warmed = self._warmed()
        if warmed < 1.0:
            return 0.001 + (1 - 0.001) * warmed
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * self.progress()))

    def _apply(self) -> None:
        self.follow(self.factor())

    def step(self) -> None:
        self.step_count += 1
        self._apply()

    def follow(self, factor: float) -> None:
        """Set the rates from another replica's factor (data-parallel ranks follow rank 0's clock)."""
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * factor


class ModelEma:
    """Exponential moving average of a model's weights and buffers (torch's ``AveragedModel``).

    The decay ramps up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so a short run
    averages roughly its last tenth of steps and a long one the last ``1 / (1 - decay)`` steps.
    The average is what gets validated, checkpointed and kept: from scratch its validation mAP
    swings less from epoch to epoch than the raw weights', which ranks trials on less noise.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.averaged = torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=self._lerp, use_buffers=True)

    @property
    def module(self) -> nn.Module:
        """The averaged copy of the model."""
        return self.averaged.module

    def update(self, model: nn.Module) -> None:
        """Fold the model's current weights into the average (after an optimizer step)."""
        self.updates += 1
        self.averaged.update_parameters(model)

    def restore(self, averaged: dict, updates: int) -> None:
        """Continue an average from its weights and update count (later updates fold into it)."""
        self.module.load_state_dict(averaged)
        self.updates = int(updates)
        self.averaged.n_averaged.fill_(self.updates)  # non-zero: the next update averages, not copies

    def _lerp(self, averaged: list[torch.Tensor], current: list[torch.Tensor], _count) -> None:
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        if torch.is_floating_point(averaged[0]):
            torch._foreach_lerp_(averaged, current, 1.0 - decay)
        else:  # integer buffers (BatchNorm's num_batches_tracked) follow the model
            torch._foreach_copy_(averaged, current)


def amp_dtype(device: torch.device, enabled: bool = True) -> torch.dtype | None:
    """The autocast dtype for training on ``device``: None (fp32) off CUDA or when disabled.

    bf16 only where the GPU computes it natively (compute capability 8.0 or newer: A100, L4,
    H100); older GPUs such as Colab's T4 report bf16 as "supported" through emulation, which
    is slow, so they get fp16 with a gradient scaler. Validation and box decoding always run
    in fp32 (``evaluate``; :class:`~detect_automl.models.Detector`).
    """
    if not enabled or device.type != "cuda":
        return None
    major, _ = torch.cuda.get_device_capability(device)
    return torch.bfloat16 if major >= 8 else torch.float16
