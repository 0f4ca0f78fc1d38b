"""Pretrained weights: torch hub cache, download, or a local file — with a clear message offline.

Also placeholders: torchvision's builders with ``weights=`` served tensors of the right keys and
shapes instead of the file, to rebuild a pretrained architecture without reading any weights.
"""

from __future__ import annotations

import inspect
import logging
import os
import threading
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn
from torchvision import models as tv_models
from torchvision.models import WeightsEnum

from ..errors import ModelError, WeightsError

__all__ = ["cached_weights_path", "ensure_weights", "load_state_dict_file",
           "placeholder_state_dict", "placeholder_weights"]

log = logging.getLogger(__name__)


def cached_weights_path(weights: WeightsEnum) -> Path:
    """Where torch hub keeps (or would keep) the file of ``weights``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)


def ensure_weights(weights: WeightsEnum) -> Path:
    """Make sure the file of ``weights`` is in the torch hub cache, downloading it if needed.

    Once this returns, torchvision's builders load the file from the cache without any network.

    Raises:
        WeightsError: the file is not cached and cannot be downloaded; the message says which
            file, where it was looked for and how to provide it.
    """
    path = cached_weights_path(weights)
    if path.is_file():
        log.info("using cached pretrained weights %s", path)
        return path
    try:
        torch.hub.load_state_dict_from_url(weights.url, progress=False, check_hash=True)
    except Exception as exc:  # URLError, HTTPError, socket errors, hash mismatch, ...
        raise WeightsError(
            f"cannot get pretrained weights {weights} ({path.name}): not in the torch hub cache "
            f"{path.parent} and the download from {weights.url} failed "
            f"({exc.__class__.__name__}: {exc}). Offline? Download that file elsewhere and copy it "
            f"to {path}, or pass pretrained='/path/to/{path.name}', or pretrained=None to train "
            "from scratch."
        ) from exc
    log.info("downloaded pretrained weights to %s", path)
    return path


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a state_dict saved with ``torch.save`` (tensors only: ``weights_only=True``).

    Accepts a bare state_dict or a checkpoint dict holding one under ``"model"`` or ``"state_dict"``.

    Raises:
        WeightsError: missing, unreadable or not a state_dict (the message names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    try:
        obj: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(
            f"{path}: not a loadable tensor file ({exc.__class__.__name__}: {str(exc).splitlines()[0]})"
        ) from exc
    if isinstance(obj, dict):
        for key in ("model", "state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: expected a state_dict (a dict of tensors), got {type(obj).__name__}")
    return obj


def placeholder_state_dict(weights: WeightsEnum) -> dict[str, torch.Tensor]:
    """Tensors with the keys, shapes and dtypes of the file of ``weights``, without reading it.

    The keys come from torchvision's own builder for ``weights`` run from scratch with their
    class count, on the meta device (no memory, no initialisation). Values are zeros, running
    variances ones (a model not yet given its real state_dict stays finite). The batch counters
    of BatchNorm2d are included; FrozenBatchNorm2d drops them when loading, so the dict fits both.

    Raises:
        ModelError: torchvision has no builder registered for ``weights``.
    """
    builder = _builder_of(type(weights))
    kwargs: dict[str, Any] = {"weights": None}
    if "weights_backbone" in inspect.signature(builder).parameters:
        kwargs["weights_backbone"] = None  # else its default backbone weights would be asked for too
    if weights.meta.get("categories"):
        kwargs["num_classes"] = len(weights.meta["categories"])
    with torch.device("meta"):
        shapes = builder(**kwargs).state_dict()
    return {key: (torch.ones if key.endswith("running_var") else torch.zeros)(value.shape, dtype=value.dtype)
            for key, value in shapes.items()}


@lru_cache(maxsize=None)
def _builder_of(enum: type[WeightsEnum]) -> Callable[..., nn.Module]:
    """torchvision's registered builder whose ``weights`` are of type ``enum``."""
    for name in tv_models.list_models():
        if tv_models.get_model_weights(name) is enum:
            return tv_models.get_model_builder(name)
    raise ModelError(f"torchvision registers no builder for {enum.__name__}")


_PLACEHOLDER_LOCK = threading.RLock()
_placeholder_thread = threading.local()


@contextmanager
def placeholder_weights() -> Iterator[None]:
    """Inside this block, weights asked for by torchvision builders in this thread are placeholders.

    ``WeightsEnum.get_state_dict`` (the one call through which every torchvision builder reads
    weights: the hub cache or a download) is replaced, for the duration of the block only, by a
    dispatcher that returns :func:`placeholder_state_dict` to the thread that entered the block
    and calls torchvision's own loader for any other thread. A lock keeps two threads' blocks from
    installing and restoring the method over each other; a block nested in one thread is fine.
    The builder then runs unchanged: its norm layers, eps overrides and frozen stages are exactly
    those of a real pretrained build.
    """
    with _PLACEHOLDER_LOCK:
        original = WeightsEnum.get_state_dict
        outer = getattr(_placeholder_thread, "active", False)

        def get_state_dict(self: WeightsEnum, *args: Any, **kwargs: Any) -> dict[str, Any]:
            if getattr(_placeholder_thread, "active", False):
                return placeholder_state_dict(self)
            return original(self, *args, **kwargs)

        WeightsEnum.get_state_dict = get_state_dict
        _placeholder_thread.active = True
        try:
            yield
        finally:
            _placeholder_thread.active = outer
            WeightsEnum.get_state_dict = original
