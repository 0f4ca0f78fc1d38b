"""SSDlite's input side and memory layout on a CPU: seconds a training step.

Times one SSDlite training step (batch 4, random 320x320 images, AdamW) for each square side and
layout, after warm-up steps, in this process (``--threads``, default 2):

    python benchmarks/bench_input_side.py

What a side buys in val mAP at a budget is a recipe like any other: ``bench_portfolio.py
--candidates default,side256`` trains both on each set's val split, one core per shard.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

SIDES = (320, 256)


def step_seconds(side: int, channels_last: bool, steps: int = 10) -> float:
    """Mean seconds of ``steps`` training steps after 3 warm-up ones."""
    from detect_automl.engine.optim import build_optimizer
    from detect_automl.models import build

    torch.manual_seed(0)
    detector = build("ssdlite320_mobilenet_v3_large", 3, image_size=side)
    if channels_last:
        detector = detector.to(memory_format=torch.channels_last)
    detector.train()
    optimizer = build_optimizer(detector, "adamw", 1e-3, 1e-4, 0.9)
    images = [torch.rand(3, 320, 320) for _ in range(4)]
    targets = [{"boxes": torch.tensor([[40.0, 50.0, 260.0, 280.0]]), "labels": torch.tensor([1])} for _ in images]
    for i in range(steps + 3):
        if i == 3:
            start = time.perf_counter()
        loss = sum(detector(images, targets).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for side in SIDES:
        for channels_last in (False, True):
            seconds = step_seconds(side, channels_last)
            print(json.dumps({"image_size": side, "layout": "channels_last" if channels_last else "contiguous",
                              "threads": args.threads, "step_seconds": round(seconds, 3)}))


if __name__ == "__main__":
    main()
