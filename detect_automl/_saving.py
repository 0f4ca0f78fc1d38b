"""The saved-model directory: model.pt (state_dict), config.json, leaderboard.csv, history.json, and
data_report.json (what the fit left out of its data) when there is one."""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pandas as pd
import torch
import torchvision

from ._version import __version__
from .errors import ModelError
from .leaderboard import COLUMNS
from .models import Detector, build, get_spec

__all__ = ["FORMAT_VERSION", "SavedModel", "save_dir", "load_dir", "write_serialized"]

FORMAT_VERSION = 2
"""2: ``image_size`` is SSDlite's square side too. Format 1 files built every fixed-size model at its
own size whatever they recorded, and still load so (an older detect_automl refuses format 2, as it
would build a 256 px SSDlite at 320)."""
_FILES = ("model.pt", "config.json", "leaderboard.csv", "history.json")


def write_serialized(path: str | Path, serialize: Callable[[BinaryIO], object]) -> None:
    """Serialize into memory, then write the bytes with Python's file I/O.

    torch's own file writer turns a failed write (a full disk, a quota) into an abort of the whole
    process for ``torch.jit.save`` and into an opaque "unexpected pos" RuntimeError for
    ``torch.save``; written this way the failure is an ``OSError`` that names the file.
    """
    buffer = io.BytesIO()
    serialize(buffer)
    with open(path, "wb") as file:
        file.write(buffer.getbuffer())


def save_dir(path: Path, state_dict: dict, config: dict, leaderboard: pd.DataFrame, history: dict,
             data_report: dict | None = None) -> Path:
    """Write the four files (five with a ``data_report``) into a temporary sibling directory, then
    swap it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    full_config = {"format_version": FORMAT_VERSION, "detect_automl_version": __version__,
                   "torch_version": torch.__version__, "torchvision_version": torchvision.__version__,
                   **config}
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    old = path.with_name(f".{path.name}.old")
    moved = False
    try:
        write_serialized(tmp / "model.pt", lambda file: torch.save(state_dict, file))
        (tmp / "config.json").write_text(json.dumps(full_config, indent=2))
        # A board without columns would be written as a bare newline, which no CSV reader takes back.
        (leaderboard if len(leaderboard.columns) else pd.DataFrame(columns=COLUMNS)).to_csv(
            tmp / "leaderboard.csv", index=False)
        (tmp / "history.json").write_text(json.dumps(history, indent=2))
        if data_report is not None:
            (tmp / "data_report.json").write_text(json.dumps(data_report, indent=2))
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            moved = True
        os.replace(tmp, path)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if moved and not path.exists():
            os.replace(old, path)  # put the previous model back
        if isinstance(exc, OSError):
            raise ModelError(f"cannot save the model to {path} ({exc.__class__.__name__}: {exc}); "
                             "any previous model there is unchanged") from exc
        raise
    if moved:
        shutil.rmtree(old, ignore_errors=True)
    return path


@dataclass
class SavedModel:
    """What ``load_dir`` read."""

    detector: Detector
    config: dict
    leaderboard: pd.DataFrame
    history: dict
    data_report: dict | None = None


def load_dir(path: Path) -> SavedModel:
    """Read and check a saved-model directory; rebuild the detector through the registry.

    The detector gets the architecture its recorded ``pretrained`` mode gives, without reading any
    pretrained weights (no network, no torch hub cache); "auto", a path or None: from scratch.
    """
    path = Path(path)
    if not path.is_dir():
        raise ModelError(f"{path}: no saved model here (not a directory)")
    missing = [name for name in ("model.pt", "config.json") if not (path / name).is_file()]
    if missing:
        raise ModelError(f"{path}: not a detect_automl saved model, missing {', '.join(missing)}")
    config = _read_config(path / "config.json")
    try:
        state = torch.load(path / "model.pt", map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(f"{path / 'model.pt'}: cannot load weights (truncated, corrupted or not a "
                         f"tensor file): {exc.__class__.__name__}: {str(exc).splitlines()[0]}") from exc
    if not isinstance(state, dict):
        raise ModelError(f"{path / 'model.pt'}: expected a state_dict, got {type(state).__name__}")
    # The architecture the model was trained in (FrozenBatchNorm2d, eps, frozen stages for COCO or
    # ImageNet weights), never the pretrained weights themselves: model.pt holds every tensor.
    pretrained = config["hyperparameters"].get("pretrained")
    image_size = config.get("image_size")
    if config["format_version"] < 2 and get_spec(config["model"]).fixed_size:
        image_size = None
    detector = build(config["model"], len(config["class_names"]), pretrained=pretrained,
                     image_size=image_size, load_pretrained=False)
    try:
        detector.net.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelError(f"{path / 'model.pt'}: weights do not fit {config['model']} with "
                         f"{len(config['class_names'])} classes: {str(exc).splitlines()[0]}") from exc
    leaderboard = _read_leaderboard(path / "leaderboard.csv")
    history = json.loads((path / "history.json").read_text()) if (path / "history.json").is_file() else {}
    report = json.loads((path / "data_report.json").read_text()) if (path / "data_report.json").is_file() else None
    return SavedModel(detector, config, leaderboard, history, report)


def _read_leaderboard(file: Path) -> pd.DataFrame:
    if not file.is_file():
        return pd.DataFrame(columns=COLUMNS)
    try:
        return pd.read_csv(file, dtype={"trial_id": str})
    except (ValueError, pd.errors.ParserError) as exc:  # EmptyDataError is a ValueError
        raise ModelError(f"{file}: not a leaderboard CSV: {str(exc).splitlines()[0]}") from exc


def _read_config(file: Path) -> dict:
    try:
        config = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{file}: unreadable config ({exc})") from exc
    if not isinstance(config, dict) or "format_version" not in config:
        raise ModelError(f"{file}: not a detect_automl config (no format_version)")
    version = config["format_version"]
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelError(f"{file}: format version {version!r} is newer than this detect_automl supports "
                         f"({FORMAT_VERSION}); upgrade detect_automl")
    for key in ("model", "class_names", "score_threshold", "hyperparameters"):
        if key not in config:
            raise ModelError(f"{file}: config is missing {key!r}")
    return config
