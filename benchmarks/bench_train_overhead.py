"""Training-loop overhead: ``detect_automl.engine.train_one_epoch`` vs a plain torchvision loop.

Both sides train the same architecture from scratch (``weights=None, weights_backbone=None``),
built under the same seed (identical initial weights; checked), on the same batches in the same
order: a fixed subset of the raccoon train split, decoded ONCE up front through our
``DetectionDataset`` (identity transform, no augmentation) and held in memory as CPU tensors, so
decoding and the DataLoader are out of the comparison and only the training loop is timed.
Both use AdamW with the same lr and weight decay (ours through ``build_optimizer``, which exempts
norms and biases from decay: the same arithmetic per step).

* plain: the torchvision ``references/detection/engine.py`` style loop: labels + 1, move to the
  device, ``model(images, targets)``, sum the losses, ``.item()`` + finite check, zero_grad,
  backward, step.
* ours: ``train_one_epoch(Detector, ...)`` with its defaults (no scheduler, no clipping),
  the Detector from ``detect_automl.models.build``.
* ours+fit: what ``engine.train`` passes on top (warm-up/cosine scheduler, grad_clip=10, the
  moving average of the weights), only
  with ``--with-fit-extras``; its overhead is informational, the target applies to "ours".

After warm-up steps on each side, runs alternate plain, ours[, ours+fit], plain, ours, ... each run
one pass over the batches; CUDA is synchronised around every run. The overhead is the median of
the paired ratios (ours run i / plain run i, adjacent in time, so drift cancels).

    python benchmarks/bench_train_overhead.py                  # CPU, 1 thread, ~1.5 min
    python benchmarks/bench_train_overhead.py --device cuda [--amp]
"""

from __future__ import annotations

import argparse
import math
import sys

import torch
from torchvision.models import detection as tvd

from _common import add_common_args, environment, median, setup, table, timed

from detect_automl import Dataset
from detect_automl.config import TrainConfig
from detect_automl.data.loader import DetectionDataset, collate
from detect_automl.engine import ModelEma, build_optimizer, train_one_epoch
from detect_automl.engine.optim import WarmupCosine  # what engine.train uses
from detect_automl.models import build

TARGET = 0.05
WEIGHT_DECAY = 1e-4


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(p)
    p.add_argument("--images", type=int, default=None,
                   help="first N images of the train split (default: 32 on CPU, 64 on CUDA)")
    p.add_argument("--batch-size", type=int, default=4, help="default: %(default)s")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed runs per side, alternating (default: 8 on CPU, 16 on CUDA)")
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed steps per side first (default: 3 on CPU, 10 on CUDA)")
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW lr, both sides (default: %(default)s)")
    p.add_argument("--amp", action="store_true", help="torch.autocast bfloat16 on CUDA, both sides (ignored on CPU)")
    p.add_argument("--with-fit-extras", action="store_true",
                   help="also time ours with the scheduler, grad_clip=10 and weight EMA that engine.train adds")
    return p.parse_args(argv)


def load_batches(args) -> tuple[list, int]:
    """Decode the subset once; return the list of collated CPU batches and the class count."""
    data = Dataset(args.data, split="train").subset(args.images)
    items = DetectionDataset(data)  # identity transform: decode, sanitise boxes, to float tensor
    decoded = [items[i] for i in range(len(items))]
    bs = args.batch_size
    batches = [collate(decoded[i:i + bs]) for i in range(0, len(decoded) - bs + 1, bs)]  # full batches
    if not batches:
        raise SystemExit(f"--images {args.images} gives no full batch of {bs}")
    return batches, len(data.classes)


def plain_epoch(model, optimizer, batches, device, amp_dtype, offset: int) -> float:
    """The torchvision reference loop; returns the mean loss."""
    model.train()
    total = 0.0
    for images, targets in batches:
        images = [img.to(device) for img in images]
        targets = [{"boxes": t["boxes"].to(device), "labels": (t["labels"] + offset).to(device)} for t in targets]
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            loss_dict = model(images, targets)
        losses = sum(loss for loss in loss_dict.values())
        loss_value = losses.item()
        if not math.isfinite(loss_value):
            raise SystemExit(f"plain loop: loss is {loss_value}")
        optimizer.zero_grad()
        losses.backward()
        optimizer.step()
        total += loss_value
    return total / len(batches)


def main(argv=None) -> int:
    args = parse_args(argv)
    device = setup(args)
    cuda = device.type == "cuda"  # GPU steps are ~10x shorter: longer runs for the same noise
    args.images = args.images or (64 if cuda else 32)
    args.repeats = args.repeats or (16 if cuda else 8)
    args.warmup = args.warmup if args.warmup is not None else (10 if cuda else 3)
    if args.repeats < 1 or args.batch_size < 1:
        raise SystemExit("--repeats and --batch-size must be >= 1")
    amp_dtype = torch.bfloat16 if args.amp and device.type == "cuda" else None
    batches, num_classes = load_batches(args)

    torch.manual_seed(args.seed)
    ours = build(args.model, num_classes, pretrained=None).to(device)
    offset = ours.label_offset
    torch.manual_seed(args.seed)
    plain = getattr(tvd, args.model)(weights=None, weights_backbone=None, num_classes=num_classes + offset).to(device)
    same_init = all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), ours.net.state_dict().values()))

    opt_plain = torch.optim.AdamW(plain.parameters(), lr=args.lr, weight_decay=WEIGHT_DECAY)
    opt_ours = build_optimizer(ours, "adamw", args.lr, WEIGHT_DECAY, 0.9)
    sides = {
        "plain": lambda b: plain_epoch(plain, opt_plain, b, device, amp_dtype, offset),
        "ours": lambda b: train_one_epoch(ours, opt_ours, b, device, amp_dtype=amp_dtype)["loss"],
    }
    if args.with_fit_extras:
        torch.manual_seed(args.seed)
        fit_model = build(args.model, num_classes, pretrained=None).to(device)
        opt_fit = build_optimizer(fit_model, "adamw", args.lr, WEIGHT_DECAY, 0.9)
        total = (args.warmup + args.repeats * len(batches)) * 2
        sched = WarmupCosine(opt_fit, total, 50, 0.01, 0.0, None)
        ema = ModelEma(fit_model, TrainConfig.ema_decay)
        sides["ours+fit"] = lambda b: train_one_epoch(fit_model, opt_fit, b, device, amp_dtype=amp_dtype,
                                                      scheduler=sched, ema=ema, grad_clip=10.0)["loss"]

    # Warm-up; the first step of each side sees identical weights and data, so equal losses.
    warm = [batches[i % len(batches)] for i in range(max(1, args.warmup))]  # >= 1: the first-step check
    first_loss = {name: fn(warm[:1]) for name, fn in sides.items()}
    for fn in sides.values():
        if len(warm) > 1:
            fn(warm[1:])

    per_step = {name: [] for name in sides}
    for _ in range(args.repeats):
        for name, fn in sides.items():
            seconds, loss = timed(lambda: fn(batches), device)
            if not math.isfinite(loss):
                raise SystemExit(f"{name}: loss is {loss}")
            per_step[name].append(seconds / len(batches))

    plain_med = median(per_step["plain"])
    rows, overhead = [], {}
    for name, values in per_step.items():
        paired = [v / p for v, p in zip(values, per_step["plain"])]
        ratio = median(paired)
        overhead[name] = ratio - 1
        rows.append([name, median(values), min(values), max(values), f"{100 * (ratio - 1):+.1f}%",
                     f"{100 * (min(paired) - 1):+.0f}% .. {100 * (max(paired) - 1):+.0f}%", f"{first_loss[name]:.4f}"])
    verdict = "OK" if overhead["ours"] <= TARGET else "OVER TARGET"
    amp = "bf16 autocast" if amp_dtype is not None else "fp32"
    print(f"train overhead: ours {median(per_step['ours']):.4f} s/step vs plain {plain_med:.4f} s/step -> "
          f"{100 * overhead['ours']:+.1f}% (target <= {100 * TARGET:.0f}%: {verdict}) | {args.model}, "
          f"{len(batches)} steps x batch {args.batch_size}, {args.repeats} alternating runs, {amp}, {args.device}")
    print(environment(args, device))
    print(f"identical initial weights: {same_init}; first-step losses should match (same weights, same batch)")
    print(table(["side", "median s/step", "min s/step", "max s/step", "overhead (paired median)", "paired range",
                 "first-step loss"],
                rows))
    print("per-run s/step: " + "; ".join(f"{n}: " + ", ".join(f"{v:.4f}" for v in vals)
                                         for n, vals in per_step.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
