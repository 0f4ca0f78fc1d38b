"""Prediction throughput: ``ObjectDetector.predict`` vs calling the raw torchvision model.

One model object serves both sides: an ObjectDetector is built around
``detect_automl.models.build(...)`` (from scratch: weights do not change the cost of a forward
pass), and "raw" calls the torchvision module inside it (``detector.model.net``), in eval mode
under ``torch.no_grad()``. Both start from the same decoded HxWx3 uint8 RGB numpy arrays in
memory (the first N raccoon test images, decoded once with our ``read_image``), so decoding is out
of both. What each timed pass includes:

* raw: array -> tensor (``from_numpy -> device -> CHW float / 255``, the same conversion predict
  uses), ``model(batch)``, and each output tensor moved to the CPU: what any caller needs.
* ours: ``ObjectDetector.predict(arrays, batch_size=B)`` with its default score threshold, i.e. the
  user-facing cost: input checks, the array -> tensor conversion, the 0-based label shift,
  thresholding, CPU numpy copies and the sorted ``Detections`` per image.
* model only (reference row): ``model(batch)`` on tensors converted beforehand, no copies back.

Passes alternate raw, ours, model-only per repeat; CUDA is synchronised around each pass. The
ratio is the median over repeats of (ours images/s) / (raw images/s) in the same repeat.

    python benchmarks/bench_predict.py                 # CPU, 1 thread, ~1 min
    python benchmarks/bench_predict.py --device cuda
"""

from __future__ import annotations

import argparse
import sys

import torch

from _common import add_common_args, environment, median, setup, table, timed

from detect_automl import Dataset, ObjectDetector, TrainConfig
from detect_automl.data.image import read_image
from detect_automl.models import build

TARGET = 0.95


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(p)
    p.add_argument("--images", type=int, default=32, help="first N images of the test split (default: %(default)s)")
    p.add_argument("--split", default="test", help="default: %(default)s")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8], help="default: %(default)s")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed passes per side and batch size (default: 3 on CPU, 10 on CUDA)")
    return p.parse_args(argv)


def to_tensor(array, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(array).to(device).permute(2, 0, 1).float().div_(255.0)


def main(argv=None) -> int:
    args = parse_args(argv)
    device = setup(args)
    args.repeats = args.repeats or (10 if device.type == "cuda" else 3)
    data = Dataset(args.data, split=args.split).subset(args.images)
    arrays = [read_image(r.path) for r in data.records]

    torch.manual_seed(args.seed)
    config = TrainConfig(model=args.model, pretrained=None)
    detector = ObjectDetector(build(args.model, len(data.classes), pretrained=None), data.classes, config,
                              device=device)
    raw = detector.model.net  # the torchvision module itself, already on the device and in eval mode
    raw.eval()

    @torch.no_grad()
    def raw_pass(bs: int) -> int:
        kept = 0
        for start in range(0, len(arrays), bs):
            batch = [to_tensor(a, device) for a in arrays[start:start + bs]]
            outputs = [{k: v.cpu() for k, v in out.items()} for out in raw(batch)]
            kept += sum(len(o["scores"]) for o in outputs)
        return kept

    def ours_pass(bs: int) -> int:
        return sum(len(d) for d in detector.predict(arrays, batch_size=bs))

    pre_made = [to_tensor(a, device) for a in arrays]

    @torch.no_grad()
    def model_only_pass(bs: int) -> int:
        return sum(len(out["scores"]) for start in range(0, len(pre_made), bs)
                   for out in raw(pre_made[start:start + bs]))

    sides = {"raw": raw_pass, "ours": ours_pass, "model only": model_only_pass}
    n = len(arrays)
    rows, summary, ratios_by_bs = [], [], {}
    for bs in args.batch_sizes:
        counts = {name: fn(bs) for name, fn in sides.items()}  # warm-up pass (also counts detections)
        ips = {name: [] for name in sides}
        for _ in range(args.repeats):
            for name, fn in sides.items():
                seconds, _ = timed(lambda: fn(bs), device)
                ips[name].append(n / seconds)
        ratios = [o / r for o, r in zip(ips["ours"], ips["raw"])]
        ratios_by_bs[bs] = median(ratios)
        for name in sides:
            rel = median([v / r for v, r in zip(ips[name], ips["raw"])])
            rows.append([bs, name, median(ips[name]), min(ips[name]), max(ips[name]),
                         f"{100 * rel:.1f}%", counts[name]])
        summary.append(f"batch {bs}: {median(ips['ours']):.1f} vs {median(ips['raw']):.1f} img/s "
                       f"= {100 * ratios_by_bs[bs]:.1f}%")

    worst = min(ratios_by_bs.values())
    verdict = "OK" if worst >= TARGET else "UNDER TARGET"
    print(f"predict throughput, ours vs raw torchvision: {'; '.join(summary)} "
          f"(target >= {100 * TARGET:.0f}%: {verdict}) | {args.model}, {n} {args.split} images, {args.device}")
    print(environment(args, device))
    print(f"ours keeps scores >= {detector.score_threshold} (default threshold); raw keeps all torchvision outputs")
    print(table(["batch", "side", "median img/s", "min img/s", "max img/s", "vs raw (paired median)", "detections"],
                rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
