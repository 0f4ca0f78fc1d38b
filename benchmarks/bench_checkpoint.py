"""What a trial's checkpoint costs: its size and the time to write it, per model.

Since issue 11 a search checkpoints every validated epoch with the whole training state (kept
weights, raw weights when the moving average is on, AdamW moments, schedule position), so a
resumed trial goes on exactly; this measures that cost against the weights alone.

    python benchmarks/bench_checkpoint.py --models ssdlite320_mobilenet_v3_large fasterrcnn_resnet50_fpn_v2
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import table  # noqa: E402

from detect_automl import TrainConfig  # noqa: E402
from detect_automl.engine import TrainState  # noqa: E402
from detect_automl.models import build  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=[
        "ssdlite320_mobilenet_v3_large", "fasterrcnn_mobilenet_v3_large_fpn", "fasterrcnn_resnet50_fpn_v2"])
    args = parser.parse_args()
    rows = []
    for name in args.models:
        config = TrainConfig(model=name, pretrained=None)
        state = TrainState(build(name, 3, pretrained=None), config, torch.device("cpu"))
        _take_one_step(state)
        weights = _size(state.kept.state_dict())
        with tempfile.TemporaryDirectory() as directory:
            start = time.perf_counter()
            torch.save(state.checkpoint(), Path(directory) / "detector.pt")
            seconds = time.perf_counter() - start
        rows.append([name, weights, _size(state.checkpoint()), seconds])
    print(table(["model", "weights MB", "checkpoint MB", "torch.save s"], rows))


def _take_one_step(state: TrainState) -> None:
    """One optimizer step on a dummy loss so AdamW holds its moments, as after any epoch."""
    loss = sum(p.float().sum() for p in state.model.parameters() if p.requires_grad) * 0.0
    loss.backward()
    state.optimizer.step()
    state.ema.update(state.model)


def _size(obj) -> float:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.tell() / 2**20


if __name__ == "__main__":
    main()
