"""Presets: named training configurations (and, for the search, spaces) per hardware."""

from __future__ import annotations

from typing import Callable

from ..config import TrainConfig
from ..errors import InputError

__all__ = ["PRESETS", "register_preset", "list_presets", "preset_config"]

PresetFn = Callable[[bool], TrainConfig]
PRESETS: dict[str, PresetFn] = {}


def register_preset(name: str) -> Callable[[PresetFn], PresetFn]:
    """Decorator: register ``fn(gpu: bool) -> TrainConfig`` as preset ``name``."""

    def wrap(fn: PresetFn) -> PresetFn:
        PRESETS[name] = fn
        return fn

    return wrap


def list_presets() -> list[str]:
    """Names of the registered presets."""
    return sorted(PRESETS)


def preset_config(name: str, gpu: bool) -> TrainConfig:
    """The default TrainConfig of preset ``name`` for a machine with (``gpu=True``) or without a GPU."""
    try:
        return PRESETS[name](gpu)
    except KeyError:
        raise InputError(f"unknown preset {name!r}; choose one of {', '.join(list_presets())}") from None


@register_preset("fast")
def _fast(gpu: bool) -> TrainConfig:
    # SSDlite is the only model that learns in minutes on a CPU (0.2 s/step at batch 2, 2 cores).
    return TrainConfig(model="ssdlite320_mobilenet_v3_large", optimizer="adamw", lr=1e-3,
                       batch_size=16 if gpu else 4, epochs=30 if gpu else 20, num_workers=4 if gpu else 0)


@register_preset("medium_quality")
def _medium(gpu: bool) -> TrainConfig:
    if not gpu:
        return _fast(gpu)
    return TrainConfig(model="fasterrcnn_mobilenet_v3_large_fpn", optimizer="sgd", lr=0.02, batch_size=8,
                       epochs=24, num_workers=4)


@register_preset("best_quality")
def _best(gpu: bool) -> TrainConfig:
    if not gpu:
        return _fast(gpu)
    return TrainConfig(model="fasterrcnn_resnet50_fpn_v2", optimizer="sgd", lr=0.02, batch_size=4,
                       epochs=26, num_workers=4)
