"""Pretrained weights: torch hub cache, download, or a local file — with a clear message offline."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from torchvision.models import WeightsEnum

from ..errors import WeightsError

__all__ = ["cached_weights_path", "ensure_weights", "load_state_dict_file"]

log = logging.getLogger("detect_automl")


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
