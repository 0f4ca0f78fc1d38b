"""Make the example pictures in docs/ from a quick model trained on the embedded raccoon set.

Run from the repository root (a few minutes on 2 CPU cores, nothing downloaded)::

    python docs/make_examples.py

It trains ssdlite320_mobilenet_v3_large from scratch on ``datasets/raccoon`` (train split,
validated on val) for ``--epochs`` epochs or ``--time-limit`` seconds, whichever ends first,
evaluates it on the test split, and writes:

- ``detections.jpg``: a test image with the model's detections drawn;
- ``map_per_epoch.png``: validation mAP per epoch (``plot_history``);
- ``per_class_ap.png``: test AP per class (``plot_per_class_ap``);
- ``pr_curves.png``: test precision-recall curves at IoU 0.5 (``plot_pr_curves``).

A from-scratch model after a few minutes is weak: its scores are low, so the drawing uses a low
``--score-threshold``; pretrained weights (``pretrained="coco"``) do far better.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import matplotlib
import torch

import detect_automl as da
from detect_automl import viz

REPO = Path(__file__).resolve().parents[1]


def _save_plot(ax, path: Path) -> None:
    """Save ``ax``'s figure small enough for the repository (PNG, 100 dpi)."""
    import matplotlib.pyplot as plt

    ax.figure.tight_layout()
    ax.figure.savefig(path, dpi=100)
    plt.close(ax.figure)
    print(f"wrote {path} ({path.stat().st_size // 1024} KB)")


def main() -> None:
    """Train, evaluate, draw and plot (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--time-limit", type=float, default=180, help="at most this many seconds for fit()")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (measured on 2 busy cores: 1 thread 0.55 s/step, 2 threads 2.8)")
    parser.add_argument("--image", default="raccoon-186", help="test image id to draw")
    parser.add_argument("--score-threshold", type=float, default=0.2, help="draw detections scoring at least this")
    parser.add_argument("--out", type=Path, default=REPO / "docs")
    args = parser.parse_args()
    matplotlib.use("Agg")  # files only, no window
    torch.set_num_threads(args.threads)

    data = REPO / "datasets" / "raccoon"
    train, val, test = (da.Dataset(data, split=s) for s in ("train", "val", "test"))
    hyperparameters = {"model": "ssdlite320_mobilenet_v3_large", "pretrained": None, "epochs": args.epochs}
    with tempfile.TemporaryDirectory() as tmp:
        detector = da.fit(train, val, time_limit=args.time_limit, num_trials=1, hyperparameters=hyperparameters,
                          output_dir=tmp, seed=0)
    metrics = detector.evaluate(test)
    print(f"test: mAP {metrics['map']:.3f}, mAP@50 {metrics['map_50']:.3f} on {metrics['num_images']} images")

    args.out.mkdir(parents=True, exist_ok=True)
    image = data / "JPEGImages" / f"{args.image}.jpg"
    detections = detector.predict(str(image), score_threshold=args.score_threshold)
    print(f"{args.image}: {detections}")
    from PIL import Image

    Image.fromarray(viz.draw_detections(image, detections)).save(args.out / "detections.jpg", quality=85)
    print(f"wrote {args.out / 'detections.jpg'} (score threshold {args.score_threshold})")
    _save_plot(detector.plot_history(), args.out / "map_per_epoch.png")
    _save_plot(viz.plot_per_class_ap(metrics), args.out / "per_class_ap.png")
    _save_plot(viz.plot_pr_curves(metrics, iou=0.5), args.out / "pr_curves.png")


if __name__ == "__main__":
    main()
