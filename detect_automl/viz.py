"""Pictures: validation mAP per epoch per trial (matplotlib is imported only when drawing)."""

from __future__ import annotations

from typing import Any

__all__ = ["plot_history"]


def plot_history(history: dict[str, list[dict]], metric: str = "val_map", ax: Any = None):
    """Draw ``metric`` per epoch, one line per trial (like AutoGluon's tuning plots).

    Args:
        history: ``{trial_id: [{"epoch": 1, "val_map": ...}, ...]}`` as in ``history.json``.
        metric: ``"val_map"``, ``"val_map_50"`` or ``"loss"``.
        ax: a matplotlib Axes to draw into; a new figure when None.

    Returns:
        The matplotlib Axes.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4.5))
    for trial_id, records in history.items():
        points = [(r["epoch"], r[metric]) for r in records if r.get(metric) is not None]
        if points:
            epochs, values = zip(*points)
            ax.plot(epochs, values, marker="o", markersize=3, label=f"trial {trial_id}")
    ax.set_xlabel("epoch")
    ax.set_ylabel({"val_map": "validation mAP@[.5:.95]", "val_map_50": "validation mAP@50"}.get(metric, metric))
    ax.set_title(f"{metric} per epoch per trial")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize="small")
    return ax
