"""Export a trained detector to TorchScript or ONNX, with a JSON sidecar for services.

The exported graph takes what :meth:`ObjectDetector.predict` feeds its model: one float32 CHW RGB
image in [0, 1] at its original size (any height and width). Resizing and mean/std normalisation
happen inside the graph, as in eager mode. It returns ``boxes`` (N, 4) float32 xyxy in pixels of
that image, ``scores`` (N,) float32 sorted high to low, and ``class_ids`` (N,) int64, 0-based into
the sidecar's ``class_names`` (the background offset is removed inside the graph by
:func:`detect_automl.models.detector.to_class_ids`, the code eager predictions use).

The saved model's ``score_threshold`` is *not* applied in the graph: the graph keeps every
detection the torchvision head keeps (its own floor, ``graph.score_floor`` in the sidecar), and
the caller drops scores below the sidecar's ``score_threshold``, as ``predict()`` does.

Both formats go through TorchScript machinery (``torch.jit.script``; the ``dynamo=False`` ONNX
exporter, which traces): torch.export cannot capture torchvision's data-dependent NMS. All eight
registry models export in both formats (torch 2.14, torchvision 0.29). Both resize exactly as eager
mode does (``_EagerSizeTransform``, ``_TracedEagerSizeTransform``), so exported and eager
predictions agree at every image size tried (tests/test_export.py).
"""

from __future__ import annotations

import copy
import json
import math
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torchvision
from torch import Tensor, nn
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from ._saving import write_serialized
from ._version import __version__
from .errors import DetectAutoMLError, InputError, ModelError
from .models.detector import Detector, to_class_ids

if TYPE_CHECKING:
    from .predictor import ObjectDetector

__all__ = ["FORMATS", "export"]

FORMATS = ("torchscript", "onnx")
_SUFFIXES = {"torchscript": ".torchscript", "onnx": ".onnx"}
_ONNX_OPSET = 17
_OUTPUTS = ("boxes", "scores", "class_ids")
_INSTALL_HINT = 'pip install "detect-automl[export]"'


class _Exportable(nn.Module):
    """One CHW float image in [0, 1] -> (boxes, scores, class_ids), class ids 0-based."""

    def __init__(self, net: nn.Module, label_offset: int) -> None:
        super().__init__()
        self.net = net
        self.label_offset = label_offset

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        with torch.no_grad():
            if torch.jit.is_scripting():  # scripted torchvision detectors return (losses, detections)
                out = self.net([image])[1][0]
            else:
                out = self.net([image])[0]
        return to_class_ids(out["boxes"], out["scores"], out["labels"], self.label_offset)


class _EagerSizeTransform(GeneralizedRCNNTransform):
    """torchvision's transform with eager mode's resize arithmetic, for scripting (eval only).

    Scripted, torchvision computes the scale factor in float32, and for about half of all image
    sizes resizes one row or column short of eager mode (259x194 -> 427x319, not 427x320), so
    detections differ. TorchScript floats are float64, as eager mode's Python floats are.
    """

    def resize(self, image: Tensor, target: dict[str, Tensor] | None = None
               ) -> tuple[Tensor, dict[str, Tensor] | None]:
        height, width = image.shape[-2], image.shape[-1]
        scale = min(float(self.min_size[-1]) / min(height, width), float(self.max_size) / max(height, width))
        size = [math.floor(height * scale), math.floor(width * scale)]
        return nn.functional.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0], target


class _TracedEagerSizeTransform(GeneralizedRCNNTransform):
    """torchvision's transform with eager mode's resize arithmetic, in a traced (ONNX) graph.

    Traced, torchvision computes the scale factor in float32, so for many sizes the image comes out
    a row or column off eager mode (300x200 -> 479x319, not 480x320) and detections differ. Here
    the output size is computed as eager mode computes it, in float64 (Python floats), and handed
    to the ONNX Resize as sizes, not a factor.
    """

    def resize(self, image: Tensor, target: dict[str, Tensor] | None = None
               ) -> tuple[Tensor, dict[str, Tensor] | None]:
        shape = torch._shape_as_tensor(image)[-2:].to(torch.float64)
        limits = torch.tensor([float(self.min_size[-1]), float(self.max_size)], dtype=torch.float64)
        # 1-D tensors throughout: the exporter computes 0-d tensors in float32, as Python scalars.
        sides = torch.stack([shape.amin(dim=0), shape.amax(dim=0)])
        scale = (limits / sides).amin(dim=0, keepdim=True)
        size = torch.floor(shape * scale).to(torch.int64)
        resized = nn.functional.interpolate(image[None], size=[size[0], size[1]], mode="bilinear", align_corners=False)
        return resized[0], target


def export(detector: ObjectDetector, path: str | Path | None = None, *, format: str = "torchscript") -> Path:
    """Export a detector to TorchScript or ONNX and write a JSON sidecar next to it.

    Args:
        detector: an ObjectDetector; load a saved-model directory first
            (``ObjectDetector.load(directory)``).
        path: output file, or an existing directory to write ``model.<format>`` into. Default:
            ``model.torchscript`` / ``model.onnx`` inside the detector's saved-model directory
            (``detector.path``: set by ``save``, ``load`` and ``fit``).
        format: "torchscript" or "onnx" (ONNX needs ``pip install "detect-automl[export]"``).

    Returns:
        The exported file; its sidecar is the same path plus ``.json``.

    Raises:
        InputError: unknown format, a path given as ``detector``, or no ``path`` for a detector
            that was never saved.
        ModelError: onnx missing, or this model cannot be exported in this format (says why).

    >>> export(ObjectDetector.load("runs/raccoon/model"), format="onnx")  # doctest: +SKIP
    PosixPath('runs/raccoon/model/model.onnx')
    """
    if isinstance(detector, (str, os.PathLike)):
        raise InputError(f"export() takes an ObjectDetector, got the path {str(detector)!r}: load it first, "
                         f"export(ObjectDetector.load({str(detector)!r}), ...)")
    if format not in FORMATS:
        raise InputError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    out = _output_path(path, detector.path, format)
    writer = _write_onnx if format == "onnx" else _write_torchscript
    extra = writer(detector.model, out, detector.model_name)
    _write_sidecar(detector, out, format, extra)
    return out


def _output_path(path: str | Path | None, source: Path | None, fmt: str) -> Path:
    if path is None:
        if source is None:
            raise InputError("export() needs a path for a detector that was never saved")
        path = source
    path = Path(path)
    if path.is_dir():
        path = path / f"model{_SUFFIXES[fmt]}"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _exportable(detector: Detector, scripted: bool = False) -> _Exportable:
    """A CPU copy in eval mode (the caller's model stays where it is)."""
    net = copy.deepcopy(detector.net).cpu().eval()
    net._has_warned = True  # silences torchvision's "returns a (Losses, Detections) tuple" warning
    t = net.transform
    if t.fixed_size is None:  # SSD's fixed size needs no arithmetic
        kind = _EagerSizeTransform if scripted else _TracedEagerSizeTransform
        net.transform = kind(t.min_size, t.max_size, t.image_mean, t.image_std, t.size_divisible,
                             t.fixed_size).eval()
    return _Exportable(net, detector.label_offset).eval()


def _example_image(detector: Detector) -> Tensor:
    """A fixed, non-square example at the model's working size (only tracing uses it)."""
    side = detector.input_side
    generator = torch.Generator().manual_seed(0)
    return torch.rand(3, side, side * 4 // 3, generator=generator)


def _attempt(model_name: str, fmt: str, out: Path, step: Callable[[], dict]) -> dict:
    """Run an export step; a failure inside torch/onnx becomes a ModelError that says why."""
    try:
        with warnings.catch_warnings():
            # Tracer notes from torchvision internals, and the deprecation of the very exporters
            # chosen on purpose here (see the module docstring), would only alarm users.
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", module=r"(torch|torchvision)\.")
            warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated")
            warnings.filterwarnings("ignore", message="You are using the legacy TorchScript-based ONNX export")
            return step()
    except DetectAutoMLError:
        out.unlink(missing_ok=True)
        raise
    except Exception as exc:
        out.unlink(missing_ok=True)
        first = (str(exc).strip().splitlines() or [""])[0]
        raise ModelError(f"cannot export {model_name} to {fmt}: {exc.__class__.__name__}: {first}") from exc


def _write_torchscript(detector: Detector, out: Path, model_name: str) -> dict:
    def step() -> dict:
        scripted = torch.jit.script(_exportable(detector, scripted=True))
        write_serialized(out, lambda file: torch.jit.save(scripted, file))
        return {}

    return _attempt(model_name, "torchscript", out, step)


def _write_onnx(detector: Detector, out: Path, model_name: str) -> dict:
    try:
        import onnx
    except ImportError as exc:
        raise ModelError(f"ONNX export needs the onnx package: {_INSTALL_HINT}") from exc

    def step() -> dict:
        dynamic = {"image": {1: "height", 2: "width"}, **{name: {0: "num_detections"} for name in _OUTPUTS}}
        torch.onnx.export(_exportable(detector), (_example_image(detector),), str(out), dynamo=False,
                          input_names=["image"], output_names=list(_OUTPUTS), dynamic_axes=dynamic,
                          opset_version=_ONNX_OPSET)
        onnx.checker.check_model(str(out))
        return {"onnx_version": onnx.__version__, "onnx_opset": _ONNX_OPSET}

    return _attempt(model_name, "onnx", out, step)


def _write_sidecar(detector: ObjectDetector, out: Path, fmt: str, extra: dict) -> Path:
    """``<export>.json``: what a service needs to feed the graph and read its outputs."""
    net = detector.model.net
    heads = getattr(net, "roi_heads", net)  # Faster R-CNN keeps its thresholds in roi_heads
    transform = net.transform
    sidecar = {
        "format": fmt,
        "file": out.name,
        "model": detector.model_name,
        "class_names": detector.class_names,
        "score_threshold": detector.score_threshold,
        "input": {
            "name": "image", "dtype": "float32", "shape": [3, "height", "width"],
            "description": "one RGB image, channels first, values in [0, 1] (uint8 / 255), at its "
                           "original size; the graph resizes and normalises it",
        },
        "outputs": {
            "boxes": "float32 (N, 4) x1, y1, x2, y2 in pixels of the input image",
            "scores": "float32 (N,) sorted high to low; keep scores >= score_threshold",
            "class_ids": "int64 (N,) 0-based indexes into class_names",
        },
        "graph": {
            "min_size": list(transform.min_size), "max_size": transform.max_size,
            "image_mean": list(transform.image_mean), "image_std": list(transform.image_std),
            "fixed_size": list(transform.fixed_size) if transform.fixed_size else None,
            "score_floor": float(heads.score_thresh), "nms_iou": float(heads.nms_thresh),
            "max_detections": int(heads.detections_per_img),
        },
        "detect_automl_version": __version__,
        "torch_version": torch.__version__,
        "torchvision_version": torchvision.__version__,
        **extra,
    }
    path = out.with_name(out.name + ".json")
    path.write_text(json.dumps(sidecar, indent=2))
    return path
