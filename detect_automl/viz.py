"""Pictures: detections drawn on images; mAP per epoch per trial, per-class AP and PR curves.

Drawing needs only Pillow; the plots import matplotlib when called. One class has one colour
everywhere: its box, its AP bar and its precision-recall curve.

Boxes are drawn with Pillow, not ``torchvision.utils.draw_bounding_boxes`` (torchvision 0.29),
which cannot draw these labels: it writes a label inside its box's top-left corner, not on a strip
above the box kept inside the image, and without a TrueType font file it ignores ``font_size``
(Pillow's small fixed bitmap font, unreadable on a large photo), so the text cannot scale with the
image. It also truncates coordinates to integers without clipping boxes that cross the border,
does not skip undefined (NaN) boxes, wants a CHW tensor and warns on an image without
detections. Using it for the outlines alone would add a tensor round trip and a second pass for
what ``ImageDraw.rectangle`` does in one line.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._inputs import to_rgb_array
from .errors import InputError
from .results import Detections

__all__ = ["draw_detections", "plot_history", "plot_per_class_ap", "plot_pr_curves"]

# matplotlib's tab10, then tab20's light shades: class k has colour k % 20.
_PALETTE = (
    "1f77b4", "ff7f0e", "2ca02c", "d62728", "9467bd", "8c564b", "e377c2", "7f7f7f", "bcbd22", "17becf",
    "aec7e8", "ffbb78", "98df8a", "ff9896", "c5b0d5", "c49c94", "f7b6d2", "c7c7c7", "dbdb8d", "9edae5",
)


def _colour(class_id: int) -> tuple[int, int, int]:
    """The RGB colour of a class: stable across images, runs and plots."""
    code = _PALETTE[int(class_id) % len(_PALETTE)]
    return int(code[0:2], 16), int(code[2:4], 16), int(code[4:6], 16)


def _hex(class_id: int) -> str:
    """The class colour as matplotlib takes it."""
    return "#" + _PALETTE[int(class_id) % len(_PALETTE)]


def _text_colour(background: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black on light colours, white on dark ones (ITU-R BT.601 luma)."""
    r, g, b = background
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 140 else (255, 255, 255)


def _font(size: int):
    """Pillow's built-in font at ``size`` px (a fixed small bitmap font without FreeType)."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # old Pillow or no FreeType
        return ImageFont.load_default()


def draw_detections(
    image: Any,
    detections: Detections,
    *,
    score_threshold: float | None = None,
    line_width: int | None = None,
    font_size: int | None = None,
) -> np.ndarray:
    """Draw boxes labelled "name score" on a copy of ``image``, one colour per class.

    Boxes are clipped to the image; labels sit on a filled strip of the class colour (readable on
    any background), above the box or inside it at the image's top edge. The best-scoring
    detection is drawn last, so its label is never covered. The input is left unchanged.

    Args:
        image: a path, a numpy HxWx3 RGB uint8 array or a PIL image (as ``predict`` takes).
        detections: what ``ObjectDetector.predict`` returned for this image.
        score_threshold: draw only detections scoring at least this (default: all of them).
        line_width: box outline in pixels (default: scales with the image, at least 2).
        font_size: label text height in pixels (default: scales with the image, at least 12).

    Returns:
        An HxWx3 RGB uint8 array.

    Raises:
        InputError: ``image`` is not an image, or ``detections`` is not a Detections.

    >>> from detect_automl.viz import draw_detections        # doctest: +SKIP
    >>> drawn = draw_detections("raccoon.jpg", detector.predict("raccoon.jpg"))  # doctest: +SKIP
    """
    from PIL import Image, ImageDraw

    if not isinstance(detections, Detections):
        raise InputError(f"detections must be a Detections (what predict returns), got {type(detections).__name__}")
    canvas = Image.fromarray(to_rgb_array(image).copy())
    width, height = canvas.size
    side = (width + height) / 2
    line_width = max(2, round(0.003 * side)) if line_width is None else max(1, int(line_width))
    font = _font(max(12, round(0.025 * side)) if font_size is None else max(6, int(font_size)))
    draw = ImageDraw.Draw(canvas)
    keep = np.ones(len(detections), bool) if score_threshold is None else detections.scores >= score_threshold
    for class_id, score, box in reversed(list(zip(detections.class_ids[keep], detections.scores[keep],
                                                  detections.boxes[keep]))):
        x1, y1, x2, y2 = (float(v) for v in box)
        if not all(map(math.isfinite, (x1, y1, x2, y2))) or x2 <= max(x1, 0) or y2 <= max(y1, 0) \
                or x1 >= width or y1 >= height:
            continue  # undefined, or entirely outside the image
        x1, y1 = max(x1, 0.0), max(y1, 0.0)
        x2, y2 = min(x2, width - 1.0), min(y2, height - 1.0)
        colour = _colour(class_id)
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=line_width)
        names = detections.class_names
        text = f"{names[class_id] if 0 <= class_id < len(names) else class_id} {score:.2f}"
        _label(draw, text, (x1, y1), colour, font, line_width, (width, height))
    return np.array(canvas)


def _label(draw, text: str, corner: tuple[float, float], colour: tuple[int, int, int], font,
           pad: int, size: tuple[int, int]) -> None:
    """Write ``text`` on a strip of ``colour`` at a box's top-left ``corner``, kept inside the image."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    w, h = right - left + 2 * pad, bottom - top + 2 * pad
    x = max(0.0, min(corner[0], size[0] - w))
    y = corner[1] - h if corner[1] - h >= 0 else corner[1]  # above the box, else just inside it
    draw.rectangle((x, y, x + w - 1, y + h - 1), fill=colour)
    draw.text((x + pad - left, y + pad - top), text, fill=_text_colour(colour), font=font)


def _axes(ax: Any, figsize: tuple[float, float]):
    """``ax``, or the Axes of a new figure of ``figsize`` inches."""
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=figsize)[1]


def _finish(ax: Any, title: str, xlabel: str, ylabel: str, **legend: Any):
    """Title, axis labels, a light grid and a legend when something is labelled."""
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize="small", **legend)
    return ax


def plot_history(history: dict[str, list[dict]], metric: str = "val_map", ax: Any = None):
    """Draw ``metric`` per epoch, one line per trial (like AutoGluon's tuning plots).

    Args:
        history: ``{trial_id: [{"epoch": 1, "val_map": ...}, ...]}`` as in ``history.json``.
        metric: ``"val_map"``, ``"val_map_50"`` or ``"loss"``.
        ax: a matplotlib Axes to draw into; a new figure when None.

    Returns:
        The matplotlib Axes.
    """
    ax = _axes(ax, (7, 4.5))
    for trial_id, records in history.items():
        points = [(r["epoch"], r[metric]) for r in records if r.get(metric) is not None]
        if points:
            epochs, values = zip(*points)
            ax.plot(epochs, values, marker="o", markersize=3, label=f"trial {trial_id}")
    ylabel = {"val_map": "validation mAP@[.5:.95]", "val_map_50": "validation mAP@50"}.get(metric, metric)
    return _finish(ax, f"{metric} per epoch per trial", "epoch", ylabel)


_AP_NAMES = {"per_class": "AP@[.5:.95]", "per_class_50": "AP@50"}


def plot_per_class_ap(metrics: dict, ax: Any = None, *, key: str = "per_class"):
    """Horizontal bars of each class's AP, best at the top; "n/a" for a class without ground truth.

    Args:
        metrics: what ``ObjectDetector.evaluate`` (or ``coco_metrics``) returns.
        ax: a matplotlib Axes to draw into; a new figure when None.
        key: ``"per_class"`` (AP@[.5:.95]) or ``"per_class_50"`` (AP@50).

    Returns:
        The matplotlib Axes (one bar per class with ground truth).

    Raises:
        InputError: ``metrics`` has no such per-class table.

    >>> plot_per_class_ap(detector.evaluate(test)).figure.savefig("ap.png")  # doctest: +SKIP
    """
    if key not in _AP_NAMES:
        raise InputError(f"key must be one of {sorted(_AP_NAMES)}, got {key!r}")
    table = _table(metrics, key, f"metrics has no {key!r} table: pass the dict that evaluate() returns")
    order = sorted(range(len(table)), key=lambda k: (table[k][1] is None, -(table[k][1] or 0.0)))
    ax = _axes(ax, (6.5, 1.2 + 0.32 * max(len(table), 2)))
    for row, k in enumerate(order):
        ap = table[k][1]
        if ap is not None:
            ax.barh(row, ap, color=_hex(k), height=0.7)
        ax.text(0.01 if ap is None else ap + 0.01, row, "n/a" if ap is None else f"{ap:.3f}",
                va="center", fontsize="small")
    ax.set_yticks(range(len(order)), labels=[table[k][0] for k in order])
    ax.set_ylim(len(order) - 0.5, -0.5)  # best at the top
    ax.set_xlim(0, 1.1)
    overall = metrics.get("map_50" if key == "per_class_50" else "map")
    title = f"{_AP_NAMES[key]} per class" + ("" if overall is None else f" (mean {overall:.3f})")
    _finish(ax, title, _AP_NAMES[key], "")
    ax.grid(False, axis="y")
    return ax


def plot_pr_curves(metrics: dict, iou: float = 0.5, ax: Any = None):
    """Precision-recall curves at one IoU threshold, one line per class, its AP in the legend.

    The curves are COCO's: interpolated precision at 101 recall thresholds (the AP is their mean).
    A class without ground truth has no curve and no line.

    Args:
        metrics: what ``ObjectDetector.evaluate`` (or ``coco_metrics``) returns; it holds
            ``pr_curves`` (a saved model's ``config.json`` does not).
        iou: 0.5 or 0.75.
        ax: a matplotlib Axes to draw into; a new figure when None.

    Returns:
        The matplotlib Axes.

    Raises:
        InputError: no curves in ``metrics``, or none at that IoU.

    >>> plot_pr_curves(detector.evaluate(test), iou=0.75)  # doctest: +SKIP
    """
    curves = metrics.get("pr_curves") if isinstance(metrics, dict) else None
    if not isinstance(curves, dict):
        raise InputError("metrics has no 'pr_curves': pass the dict that ObjectDetector.evaluate() or "
                         "coco_metrics() returns (a saved model's config.json keeps no curves)")
    key = f"precision_{round(float(iou) * 100)}"
    ious = [f"{int(k.rsplit('_', 1)[1]) / 100:g}" for k in curves if k.startswith("precision_")]
    table = _table(curves, key, f"no precision-recall curves at IoU {iou}; there are curves at IoU {ious}")
    ax = _axes(ax, (6.5, 5))
    recall = np.asarray(curves["recall"], dtype=float)
    for k, (name, precision) in enumerate(table):
        if precision is not None:
            values = np.array([np.nan if p is None else p for p in precision], dtype=float)
            ax.plot(recall, values, color=_hex(k), label=f"{name} (AP {np.nanmean(values):.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.02, 1.05)  # a curve at precision 0 stays visible above the axis
    return _finish(ax, f"precision-recall at IoU {float(iou):.2f}", "recall", "precision",
                   loc="lower left", ncol=1 + (len(ax.lines) - 1) // 20)


def _table(metrics: Any, key: str, missing: str) -> list[tuple[str, Any]]:
    """``metrics[key]`` ({class name: value}) as (name, value) pairs in class order.

    Raises:
        InputError: ``missing``, when there is no such table.
    """
    value = metrics.get(key) if isinstance(metrics, dict) else None
    if not isinstance(value, dict):
        raise InputError(missing)
    return list(value.items())
