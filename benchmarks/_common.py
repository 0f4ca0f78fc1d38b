"""Helpers shared by the benchmark scripts: arguments, device and thread set-up, timing, tables.

Scripts only (``python benchmarks/bench_*.py``): setting torch's thread count here is fine, the
library itself never does.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import statistics
import time
from datetime import date
from pathlib import Path
from typing import Callable, Sequence

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
RACCOON = REPO_ROOT / "datasets" / "raccoon"
#: The shared data sets (fruit, bccd, raccoon, fruits_nuts): $DETECT_AUTOML_DATA, else ../shared/data
#: next to the repository.
SHARED_DATA = Path(os.environ.get("DETECT_AUTOML_DATA") or REPO_ROOT.parent / "shared" / "data")
#: Where benchmarks put the fits they make: $DETECT_AUTOML_BENCH_OUTPUT, else runs/benchmarks (git-ignored).
BENCH_OUTPUT = Path(os.environ.get("DETECT_AUTOML_BENCH_OUTPUT") or REPO_ROOT / "runs" / "benchmarks")


def add_common_args(parser: argparse.ArgumentParser, *, model: str = "ssdlite320_mobilenet_v3_large") -> None:
    """--model, --device, --threads, --seed, --data."""
    parser.add_argument("--model", default=model, help="registry / torchvision builder name (default: %(default)s)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="default: %(default)s")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch.set_num_threads (default: %(default)s; on a busy 2-core machine 2 threads "
                             "ran 5-8x slower than 1, from OpenMP contention)")
    parser.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    parser.add_argument("--data", type=Path, default=RACCOON, help="a VOC root (default: the embedded raccoon set)")


def setup(args: argparse.Namespace) -> torch.device:
    """Apply --threads and return the torch.device for --device (failing clearly without CUDA)."""
    if args.threads < 1:
        raise SystemExit(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for, but torch.cuda.is_available() is False")
    torch.manual_seed(args.seed)
    return torch.device(args.device)


def sync(device: torch.device) -> None:
    """Wait for queued CUDA work so a timer reads finished work (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> tuple[float, object]:
    """Run ``fn`` between two synchronisations; return ``(seconds, result)``."""
    sync(device)
    start = time.perf_counter()
    result = fn()
    sync(device)
    return time.perf_counter() - start, result


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def environment(args: argparse.Namespace, device: torch.device) -> str:
    """One line: date, torch/torchvision versions, device, threads, CPU count and load."""
    import torchvision

    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    try:
        load = f", load avg {os.getloadavg()[0]:.2f}"
    except OSError:
        load = ""
    return (f"{date.today().isoformat()} | torch {torch.__version__}, torchvision {torchvision.__version__}, "
            f"python {platform.python_version()} | {where}, {torch.get_num_threads()} threads{load}")


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A small fixed-width text table."""
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def read_csv(path: Path) -> list[dict[str, str]]:
    """The rows of the CSV at ``path`` as dicts (none when the file does not exist yet)."""
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def append_csv(path: Path, fields: Sequence[str], rows: Sequence[dict]) -> None:
    """Append ``rows`` to the CSV at ``path``, writing the header first when the file is new or empty."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.is_file() or path.stat().st_size == 0
    with path.open("a", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(fields))
        if new:
            writer.writeheader()
        writer.writerows(rows)
