"""Evaluation cost as a share of a training epoch, as ``engine.train`` runs them.

Trains the model from scratch on the raccoon train split for ``--epochs`` epochs through the
library's own path (``make_loader`` with real decoding and augmentation, ``build_optimizer``,
the warm-up/cosine scheduler, grad_clip from TrainConfig, ``train_one_epoch``) and after each
epoch runs ``engine.evaluate`` (inference over the val split + pycocotools) exactly as ``train``
does. Then, for the same model, it splits evaluation into its parts: inference only
(``predict_loader``) and scoring only (``metrics.coco_metrics`` on those detections, pycocotools;
faster-coco-eval too when it is installed). A few untimed training steps run first.

Note: a model trained from scratch for an epoch or two emits many low-score boxes (torchvision
keeps up to ``detections_per_img`` per image above its own tiny score threshold), so pycocotools
sees more detections than it would for a trained model; the table prints the count.

    python benchmarks/bench_eval_share.py               # CPU, 1 thread, ~1 min
    python benchmarks/bench_eval_share.py --device cuda
"""

from __future__ import annotations

import argparse
import itertools
import sys

import torch

from _common import add_common_args, environment, median, setup, table, timed

from detect_automl import Dataset, TrainConfig
from detect_automl.data.loader import make_loader
from detect_automl.engine import amp_dtype as amp_policy, build_optimizer, evaluate, predict_loader, train_one_epoch
from detect_automl.engine.optim import WarmupCosine  # what engine.train uses
from detect_automl.metrics import coco_metrics
from detect_automl.models import build


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(p)
    p.add_argument("--train-split", default="train", help="default: %(default)s")
    p.add_argument("--val-split", default="val", help="default: %(default)s")
    p.add_argument("--train-images", type=int, default=None, help="first N train images (default: all)")
    p.add_argument("--epochs", type=int, default=1, help="default: %(default)s")
    p.add_argument("--batch-size", type=int, default=4, help="train and eval batch (default: %(default)s)")
    p.add_argument("--augment", type=float, default=0.5, help="TrainConfig.augment (default: %(default)s)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=2, help="untimed training steps first (default: %(default)s)")
    p.add_argument("--coco-repeats", type=int, default=3, help="timings of scoring alone (default: %(default)s)")
    p.add_argument("--amp", action="store_true", help="TrainConfig.amp (bf16/fp16 autocast on CUDA only)")
    return p.parse_args(argv)


def _faster_available() -> bool:
    try:
        import faster_coco_eval  # noqa: F401
    except ImportError:
        return False
    return True


def main(argv=None) -> int:
    args = parse_args(argv)
    device = setup(args)
    train_data = Dataset(args.data, split=args.train_split)
    if args.train_images is not None:
        train_data = train_data.subset(args.train_images)
    val_data = Dataset(args.data, split=args.val_split)
    classes = list(train_data.classes)
    config = TrainConfig(model=args.model, pretrained=None, epochs=args.epochs, batch_size=args.batch_size,
                         augment=args.augment, amp=args.amp, num_workers=args.workers, seed=args.seed)

    torch.manual_seed(args.seed)
    model = build(args.model, len(classes), pretrained=None).to(device)
    train_loader = make_loader(train_data, config.batch_size, train=True, augment=config.augment,
                               num_workers=config.num_workers, seed=config.seed)
    val_loader = make_loader(val_data, config.batch_size, train=False, num_workers=config.num_workers)
    optimizer = build_optimizer(model, config.optimizer, config.lr, config.weight_decay, config.momentum)
    scheduler = WarmupCosine(optimizer, config.epochs * len(train_loader), config.warmup_steps,
                              config.min_lr_ratio, 0.0, None)
    amp_dtype = amp_policy(device, config.amp)  # training only: validation runs in fp32
    step_args = dict(amp_dtype=amp_dtype, grad_clip=config.grad_clip)

    if args.warmup:  # untimed: first-call costs (allocator, kernels) out of the epoch figure
        warm_opt = build_optimizer(model, config.optimizer, 1e-6, 0.0, 0.0)
        train_one_epoch(model, warm_opt, itertools.islice(train_loader, args.warmup), device, **step_args)
        evaluate(model, val_loader, classes, device)

    rows, epoch_s, eval_s = [], [], []
    for epoch in range(1, args.epochs + 1):
        t_epoch, stats = timed(lambda: train_one_epoch(model, optimizer, train_loader, device,
                                                       scheduler=scheduler, **step_args), device)
        t_eval, metrics = timed(lambda: evaluate(model, val_loader, classes, device), device)
        epoch_s.append(t_epoch)
        eval_s.append(t_eval)
        rows.append([f"epoch {epoch}: train ({stats['steps']} steps, {stats['images']} img)", t_epoch, "100%", ""])
        rows.append([f"epoch {epoch}: evaluate ({metrics['num_images']} img)", t_eval,
                     f"{100 * t_eval / t_epoch:.1f}%", f"mAP {metrics['map']:.3f}, {metrics['num_detections']} dets"])

    # The last evaluation, split into inference and scoring.
    t_infer, (gt, preds) = timed(lambda: predict_loader(model, val_loader, device), device)
    num_dets = sum(len(p["scores"]) for p in preds)
    coco_s = median([timed(lambda: coco_metrics(gt, preds, classes), device)[0] for _ in range(args.coco_repeats)])
    rows.append(["inference only (predict_loader)", t_infer, f"{100 * t_infer / epoch_s[-1]:.1f}%", ""])
    rows.append(["pycocotools only (coco_metrics)", coco_s, f"{100 * coco_s / epoch_s[-1]:.1f}%",
                 f"{num_dets} dets, median of {args.coco_repeats}"])
    if _faster_available():
        fast_s = median([timed(lambda: coco_metrics(gt, preds, classes, faster=True), device)[0]
                         for _ in range(args.coco_repeats)])
        rows.append(["faster-coco-eval only", fast_s, f"{100 * fast_s / epoch_s[-1]:.1f}%", ""])
    else:
        rows.append(["faster-coco-eval only", "n/a", "", "not installed"])

    share = median(eval_s) / median(epoch_s)
    print(f"eval share: evaluate {median(eval_s):.2f} s ({len(val_data)} {args.val_split} img) = {100 * share:.1f}% "
          f"of a {median(epoch_s):.2f} s training epoch ({len(train_data)} {args.train_split} img); "
          f"pycocotools alone {coco_s:.3f} s | {args.model}, batch {args.batch_size}, augment {args.augment}, "
          f"{args.device}")
    print(environment(args, device))
    print(table(["what", "seconds", "share of epoch", "note"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
