"""The moving average of the weights against the raw weights, in one from-scratch run (paired).

One training run through the library's own pieces (``make_loader`` with augmentation 0.5,
``build_optimizer``, the warm-up/cosine schedule ending at ``--seconds`` of training, clipping
10, ``ModelEma`` with the default decay); every ``--every`` epochs and after the last, both the
raw weights and their average are evaluated on the test split. Evaluation time is not counted in
the training budget. Both sides see the same training, so the comparison carries no seed noise.

    python benchmarks/bench_ema.py --data ../shared/data/fruit --seconds 560 --threads 2
"""

from __future__ import annotations

import argparse
import time

from _common import add_common_args, environment, setup, table

from detect_automl import Dataset
from detect_automl.config import TrainConfig
from detect_automl.data.loader import make_loader
from detect_automl.engine import ModelEma, build_optimizer, evaluate, seed_everything, train_one_epoch
from detect_automl.engine.optim import WarmupCosine  # what engine.train uses
from detect_automl.models import build


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    parser.add_argument("--seconds", type=float, default=560, help="training time (default: %(default)s)")
    parser.add_argument("--every", type=int, default=4, help="evaluate every N epochs (default: %(default)s)")
    args = parser.parse_args()
    device = setup(args)
    seed_everything(args.seed)
    config = TrainConfig(model=args.model, pretrained=None)
    train, test = Dataset(args.data, split="train"), Dataset(args.data, split="test")
    model = build(config.model, len(train.classes), pretrained=None).to(device)
    loader = make_loader(train, config.batch_size, train=True, augment=config.augment, seed=args.seed,
                         max_side=2 * model.input_side)
    test_loader = make_loader(test, config.batch_size, train=False)
    optimizer = build_optimizer(model, config.optimizer, config.lr, config.weight_decay, config.momentum)
    schedule = WarmupCosine(optimizer, 10**9, config.warmup_steps, config.min_lr_ratio, 0.0, args.seconds)
    ema = ModelEma(model, config.ema_decay)
    trained, epoch, rows = 0.0, 0, []
    while trained < args.seconds:
        epoch += 1
        # The schedule's clock counts training only: shift its start by the time spent evaluating.
        schedule.start = time.monotonic() - trained
        schedule.deadline = schedule.start + args.seconds
        stats = train_one_epoch(model, optimizer, loader, device, scheduler=schedule, ema=ema,
                                grad_clip=config.grad_clip, deadline=schedule.deadline)
        trained += stats["seconds"]
        if stats["steps"] == 0:
            break
        if epoch % args.every == 0 or trained >= args.seconds - 1:
            raw = evaluate(model, test_loader, list(train.classes), device)
            averaged = evaluate(ema.module, test_loader, list(train.classes), device)
            rows.append([epoch, round(trained), ema.updates, round(raw["map"], 4), round(averaged["map"], 4),
                         round(averaged["map"] - raw["map"], 4)])
            print(rows[-1], flush=True)
    print(f"moving average (decay {config.ema_decay}) vs raw weights, {args.data.name} test split")
    print(environment(args, device))
    print(table(["epoch", "train s", "steps", "raw test mAP", "EMA test mAP", "EMA - raw"], rows))


if __name__ == "__main__":
    main()
