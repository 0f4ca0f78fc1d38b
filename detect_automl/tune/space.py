"""Presets: named training configurations (and, for the search, spaces) per hardware."""

from __future__ import annotations

import inspect
import warnings
from typing import Callable

from ..config import TrainConfig
from ..errors import InputError

__all__ = ["PRESETS", "register_preset", "list_presets", "preset_config", "preset_space", "default_point", "in_domain",
           "is_default", "is_searched", "to_tune_domains"]

PresetFn = Callable[[bool, bool], TrainConfig]
PRESETS: dict[str, PresetFn] = {}


def register_preset(name: str) -> Callable[[PresetFn], PresetFn]:
    """Decorator: register ``fn(gpu: bool, pretrained: bool) -> TrainConfig`` as preset ``name``.

    A preset written before fine-tuning recipes existed, ``fn(gpu)``, still registers: it gets a
    FutureWarning and serves both regimes with its one recipe.
    """

    def wrap(fn: PresetFn) -> PresetFn:
        PRESETS[name] = fn if _takes_two(fn) else _one_recipe(name, fn)
        return fn

    return wrap


def _takes_two(fn: Callable) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # a builtin or C callable: trust it
        return True
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2 or any(p.kind is p.VAR_POSITIONAL for p in params)


def _one_recipe(name: str, fn: Callable[[bool], TrainConfig]) -> PresetFn:
    warnings.warn(f"preset {name!r}: presets take (gpu, pretrained) now; {fn.__name__}(gpu) serves fine-tuning "
                  "COCO weights with its from-scratch recipe", FutureWarning, stacklevel=3)
    return lambda gpu, pretrained: fn(gpu)


def list_presets() -> list[str]:
    """Names of the registered presets."""
    return sorted(PRESETS)


def preset_config(name: str, gpu: bool, pretrained: bool = False) -> TrainConfig:
    """The default TrainConfig of preset ``name`` for a machine with (``gpu=True``) or without a
    GPU, training from scratch or fine-tuning COCO weights (``pretrained=True``).

    ``epochs`` is used without a ``time_limit`` only: with one, ``fit`` plans training to it.
    """
    try:
        return PRESETS[name](gpu, pretrained)
    except KeyError:
        raise InputError(f"unknown preset {name!r}; choose one of {', '.join(list_presets())}") from None


# From scratch: measured on the shared sets (benchmarks/RESULTS.md). Fine-tuning COCO weights (the
# default where they can be had, e.g. Colab) cannot be measured on the machines without network;
# its recipes follow the published ones and differ from scratch where they do:
# - torchvision detection references (references/detection/README.md): SGD, momentum 0.9, weight
#   decay 1e-4, lr 0.02 for 16 images per step (linearly scaled here: lr = 0.02 * batch / 16),
#   linear warm-up; norm layers frozen (the builders use FrozenBatchNorm2d with COCO weights).
# - MMDetection's fine-tuning guide (docs/en/user_guides/finetune.md) and Detectron2's: a short
#   schedule (the "1x" 12 epochs or less) from the COCO model, the learning rate of the
#   linear-scaling rule or lower.
@register_preset("fast")
def _fast(gpu: bool, pretrained: bool) -> TrainConfig:
    # SSDlite is the only model that learns in minutes on a CPU (step times: benchmarks/RESULTS.md).
    batch = 16 if gpu else 4
    if pretrained:  # AdamW at a fifth of the from-scratch rate, 12 epochs (MMDetection's 1x)
        return TrainConfig(model="ssdlite320_mobilenet_v3_large", optimizer="adamw", lr=2e-4, batch_size=batch,
                           epochs=12, warmup_steps=100)
    return TrainConfig(model="ssdlite320_mobilenet_v3_large", optimizer="adamw", lr=1e-3, batch_size=batch,
                       epochs=30 if gpu else 20)


@register_preset("medium_quality")
def _medium(gpu: bool, pretrained: bool) -> TrainConfig:
    if not gpu:
        return _fast(gpu, pretrained)
    if pretrained:  # torchvision's Faster R-CNN recipe at batch 8 (lr 0.02 * 8 / 16), MMDetection's 1x
        return TrainConfig(model="fasterrcnn_mobilenet_v3_large_fpn", optimizer="sgd", lr=0.01, batch_size=8,
                           weight_decay=1e-4, momentum=0.9, epochs=12, warmup_steps=200)
    # AdamW from scratch; what GPU searches found: benchmarks/RESULTS.md.
    return TrainConfig(model="fasterrcnn_mobilenet_v3_large_fpn", optimizer="adamw", lr=1e-3, batch_size=8,
                       epochs=24)


@register_preset("best_quality")
def _best(gpu: bool, pretrained: bool) -> TrainConfig:
    if not gpu:
        return _fast(gpu, pretrained)
    if pretrained:  # torchvision's recipe at batch 4 (lr 0.02 * 4 / 16), 800 px as in the references
        return TrainConfig(model="fasterrcnn_resnet50_fpn_v2", optimizer="sgd", lr=0.005, batch_size=4,
                           image_size=800, weight_decay=1e-4, momentum=0.9, epochs=12, warmup_steps=200)
    return TrainConfig(model="fasterrcnn_resnet50_fpn_v2", optimizer="adamw", lr=2e-4, batch_size=4,
                       image_size=800, epochs=26)


# Search spaces in plain form: a list is a choice, ("loguniform"|"uniform", low, high) a range,
# ("randint", low, high) an integer range. ``to_tune_domains`` turns them into Ray Tune domains.
_CPU_SPACE = {
    "lr": ("loguniform", 3e-4, 3e-3),
    "weight_decay": ("loguniform", 1e-5, 1e-3),
    "batch_size": [4, 8],
    "augment": ("uniform", 0.0, 0.8),
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


def preset_space(name: str, gpu: bool, pretrained: bool = False) -> dict:
    """The search space of preset ``name`` (plain form) for a machine with or without a GPU; for
    fine-tuning, the learning rate ranges from a quarter to twice the preset's, with its optimizer."""
    config = preset_config(name, gpu, pretrained)  # validates the name
    space = dict(_GPU_SPACES[name] if gpu else _CPU_SPACE)
    if pretrained:
        space.update(optimizer=[config.optimizer], lr=("loguniform", config.lr / 4, config.lr * 2))
    return space


def default_point(space: dict, config: TrainConfig) -> dict | None:
    """The preset's own values for the searched keys, when each lies in its range or choices.

    Tried as the first trial (Ray Tune's ``points_to_evaluate``), given its slot for the whole
    search by the plan and never stopped early by ASHA (``scheduler.DefaultKeepingASHA``).
    """
    point = {}
    for key, domain in space.items():
        default = getattr(config, key, None)
        if default is None or not in_domain(default, domain):
            return None
        point[key] = default
    return point or None


def is_default(config: dict, default: dict | None) -> bool:
    """True when a trial's ``config`` has the default point's value for every searched key."""
    return bool(default) and all(config.get(key) == value for key, value in default.items())


def in_domain(value, domain) -> bool:
    """True when ``value`` is one of a plain choice's values or inside a plain range (never for
    an opaque Ray Tune domain)."""
    if isinstance(domain, (list, range)):
        return value in list(domain)
    if isinstance(domain, tuple) and domain and domain[0] in ("loguniform", "uniform", "randint"):
        return isinstance(value, (int, float)) and domain[1] <= value <= domain[2]
    return False


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
