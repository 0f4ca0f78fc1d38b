"""Presets: named training configurations (and, for the search, spaces) per hardware."""

from __future__ import annotations

from typing import Callable

from ..config import TrainConfig
from ..errors import InputError

__all__ = ["PRESETS", "register_preset", "list_presets", "preset_config", "preset_space", "default_point",
           "is_searched", "to_tune_domains"]

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
                       batch_size=16 if gpu else 4, epochs=30 if gpu else 20)


@register_preset("medium_quality")
def _medium(gpu: bool) -> TrainConfig:
    if not gpu:
        return _fast(gpu)
    # AdamW from scratch and for fine-tuning alike; the H200 search's best was AdamW lr 1.5e-3.
    return TrainConfig(model="fasterrcnn_mobilenet_v3_large_fpn", optimizer="adamw", lr=1e-3, batch_size=8,
                       epochs=24)


@register_preset("best_quality")
def _best(gpu: bool) -> TrainConfig:
    if not gpu:
        return _fast(gpu)
    return TrainConfig(model="fasterrcnn_resnet50_fpn_v2", optimizer="adamw", lr=2e-4, batch_size=4,
                       image_size=800, epochs=26)


# Search spaces in plain form: a list is a choice, ("loguniform"|"uniform", low, high) a range,
# ("randint", low, high) an integer range. ``to_tune_domains`` turns them into Ray Tune domains.
_CPU_SPACE = {
    "lr": ("loguniform", 3e-4, 3e-3),
    "weight_decay": ("loguniform", 1e-5, 1e-3),
    "batch_size": [4, 8],
    "augment": ("uniform", 0.0, 0.6),  # short from-scratch budgets favour weak augmentation
}
_GPU_SPACES = {
    "fast": {**_CPU_SPACE, "batch_size": [16, 32]},
    "medium_quality": {
        "model": ["fasterrcnn_mobilenet_v3_large_fpn", "ssdlite320_mobilenet_v3_large", "retinanet_resnet50_fpn_v2"],
        "optimizer": ["adamw"], "lr": ("loguniform", 1e-4, 2e-3), "weight_decay": ("loguniform", 1e-5, 1e-3),
        "batch_size": [8, 16], "augment": ("uniform", 0.2, 0.8),
    },
    "best_quality": {
        "model": ["fasterrcnn_resnet50_fpn_v2", "retinanet_resnet50_fpn_v2", "fasterrcnn_mobilenet_v3_large_fpn"],
        "optimizer": ["adamw"], "lr": ("loguniform", 5e-5, 1e-3), "weight_decay": ("loguniform", 1e-5, 1e-3),
        "batch_size": [4, 8], "image_size": [640, 800], "augment": ("uniform", 0.2, 0.8),
    },
}


def preset_space(name: str, gpu: bool) -> dict:
    """The search space of preset ``name`` (plain form) for a machine with or without a GPU."""
    preset_config(name, gpu)  # validates the name
    return dict(_GPU_SPACES[name] if gpu else _CPU_SPACE)


def default_point(space: dict, config: TrainConfig) -> dict | None:
    """The preset's own values for the searched keys, when each lies in its range or choices.

    Tried as the first trial (Ray Tune's ``points_to_evaluate``) and never stopped early by ASHA
    (``scheduler.DefaultKeepingASHA``), so the default always gets its full share of the time.
    """
    point = {}
    for key, value in space.items():
        default = getattr(config, key, None)
        if isinstance(value, (list, range)) and default in list(value):
            point[key] = default
        elif isinstance(value, tuple) and value[0] in ("loguniform", "uniform", "randint") \
                and default is not None and value[1] <= default <= value[2]:
            point[key] = default
        else:
            return None
    return point or None


def is_searched(value) -> bool:
    """True when ``value`` describes a range or choice rather than one fixed value."""
    if isinstance(value, (list, range)):
        return True
    if isinstance(value, tuple) and value and value[0] in ("loguniform", "uniform", "randint"):
        return True
    if isinstance(value, dict) and "grid_search" in value:
        return True
    return type(value).__module__.startswith("ray.tune")  # a Ray Tune domain object


def to_tune_domains(space: dict) -> dict:
    """Plain space -> Ray Tune domains (Ray Tune objects pass through unchanged)."""
    from ray import tune

    domains = {}
    for key, value in space.items():
        if isinstance(value, (list, range)):
            values = list(value)
            if not values:
                raise InputError(f"search space {key!r}: empty list of choices")
            domains[key] = tune.choice(values)
        elif isinstance(value, tuple) and value and value[0] in ("loguniform", "uniform", "randint"):
            kind, low, high = value
            if not low < high or (kind == "loguniform" and low <= 0):
                raise InputError(f"search space {key!r}: bad range {value!r}")
            domains[key] = getattr(tune, kind)(low, high)
        else:
            domains[key] = value
    return domains
