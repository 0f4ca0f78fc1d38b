"""Mixed precision: step time in fp32 / fp16 / bf16, and how far AMP moves the boxes.

For each autocast dtype the device runs, on the same model and images:
- **train step** (s): median of ``--steps`` timed steps of ``train_one_epoch`` at batch ``--batch``
  (fp16 with a gradient scaler, as ``engine.train`` does);
- **decoding** (px): the largest difference between boxes decoded in fp32 and in that dtype, from
  the same regression outputs (the model's own, in fp32) and the model's anchors on the images:
  what torchvision's ``BoxCoder`` (which decodes in the regression's dtype) costs, and what ours
  (``models.Detector``: fp32 whatever autocast does) costs;
- **detections** (px): eval-mode detections under autocast against fp32 on the same images: every
  fp32 box among the top ``--top`` is matched to the AMP box of the same class with the highest
  IoU, and the median corner difference over matches with IoU > 0.9 is reported (what the whole
  network's lower precision moves a box). Validation itself always runs in fp32.

The model is untrained with its BatchNorm statistics estimated on the images, so its detections
depend on the image (an untrained model's raw statistics score every anchor alike).

    python benchmarks/bench_amp.py --device cuda --model fasterrcnn_mobilenet_v3_large_fpn
    python benchmarks/bench_amp.py --device cpu --steps 2   # bf16 only; checks the script runs
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
from torchvision.ops import box_iou

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from _common import add_common_args, environment, median, setup, table, timed  # noqa: E402

from detect_automl.data.dataset import Dataset  # noqa: E402
from detect_automl.data.loader import make_loader  # noqa: E402
from detect_automl.engine import build_optimizer, train_one_epoch  # noqa: E402
from detect_automl.models import build  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser, model="fasterrcnn_mobilenet_v3_large_fpn")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10, help="timed train steps per dtype")
    parser.add_argument("--images", type=int, default=16, help="images compared in eval mode")
    parser.add_argument("--top", type=int, default=20, help="fp32 detections per image compared")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    device = setup(args)
    data = Dataset(args.data, split="train")
    detector = build(args.model, len(data.classes), pretrained=None).to(device)
    _estimate_batchnorm(detector, make_loader(data.subset(args.images), args.batch, train=False), device)
    images = [img.to(device) for batch, _ in make_loader(data.subset(args.images), args.batch, train=False)
              for img in batch]
    dtypes = [torch.float16, torch.bfloat16] if device.type == "cuda" else [torch.bfloat16]
    reference = _detect(detector, images, None)
    codes, anchors = _regression_and_anchors(detector, images)
    rows, figures = [], {}
    for dtype in [None, *dtypes]:
        name = "fp32" if dtype is None else str(dtype).removeprefix("torch.")
        step = _step_seconds(args, data, dtype, device)
        decode_tv = decode_ours = shift = float("nan")
        if dtype is not None:
            decode_tv, decode_ours = _decoding_shift(detector, codes, anchors, dtype)
            shift = _median_shift(reference, _detect(detector, images, dtype), args.top)
        rows.append([name, step, decode_tv, decode_ours, shift])
        figures[name] = {"train_step_s": step, "decode_max_px_torchvision": decode_tv,
                         "decode_max_px_ours": decode_ours,
                         "detections_median_shift_px": shift}
    print(f"AMP on {args.model}, batch {args.batch}: step time and box shifts against fp32")
    print(environment(args, device))
    print(table(["dtype", "train s/step", "decode max px (torchvision)", "decode max px (ours)",
                 "detections median px"], rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": args.model, "batch": args.batch, "figures": figures}, f, indent=1)


def _estimate_batchnorm(detector, loader, device) -> None:
    for module in detector.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None
    detector.train()
    with torch.no_grad():
        for images, targets in loader:
            detector([i.to(device) for i in images], [{k: t[k].to(device) for k in ("boxes", "labels")}
                                                      for t in targets])
    detector.eval()


@torch.no_grad()
def _detect(detector, images, dtype) -> list[dict]:
    detector.eval()
    with torch.autocast(images[0].device.type, dtype=dtype, enabled=dtype is not None):
        return [detector([image])[0] for image in images]


@torch.no_grad()
def _regression_and_anchors(detector, images) -> tuple[torch.Tensor, torch.Tensor]:
    """The first image's RPN (or single-stage head) box regression in fp32, and its anchors."""
    model = detector.net.eval()
    batch, _ = model.transform(images[:1])
    features = model.backbone(batch.tensors)
    features = list(features.values()) if isinstance(features, dict) else [features]
    anchors = model.anchor_generator(batch, features)[0] if hasattr(model, "anchor_generator") \
        else model.rpn.anchor_generator(batch, features)[0]
    if hasattr(model, "rpn"):
        _, deltas = model.rpn.head(features)
        codes = torch.cat([d.permute(0, 2, 3, 1).reshape(d.shape[0], -1, 4) for d in deltas], dim=1)[0]
    else:
        codes = model.head(features)["bbox_regression"][0]
    return codes.float(), anchors.float()


def _decoding_shift(detector, codes, anchors, dtype) -> tuple[float, float]:
    """Largest |box difference| (px) when decoding in ``dtype``: torchvision's BoxCoder, then ours."""
    from torchvision.models.detection._utils import BoxCoder

    ours = next(m.box_coder for m in detector.modules() if hasattr(m, "box_coder"))
    exact = BoxCoder(ours.weights, ours.bbox_xform_clip).decode_single(codes, anchors)
    with torch.autocast(codes.device.type, dtype=dtype):
        plain = BoxCoder(ours.weights, ours.bbox_xform_clip).decode_single(codes.to(dtype), anchors)
        kept = ours.decode_single(codes.to(dtype), anchors)
    return float((plain.float() - exact).abs().max()), float((kept - exact).abs().max())


def _median_shift(reference: list[dict], other: list[dict], top: int) -> float:
    shifts = []
    for ref, out in zip(reference, other):
        boxes, labels = ref["boxes"][:top].float(), ref["labels"][:top]
        if not len(boxes) or not len(out["boxes"]):
            continue
        iou = box_iou(boxes, out["boxes"].float())
        iou[labels[:, None] != out["labels"][None, :]] = 0.0
        best, index = iou.max(dim=1)
        matched = best > 0.9
        shifts.append((boxes[matched] - out["boxes"][index[matched]].float()).abs().flatten())
    return float(torch.cat(shifts).median()) if shifts and torch.cat(shifts).numel() else float("nan")


def _step_seconds(args, data, dtype, device) -> float:
    torch.manual_seed(args.seed)
    detector = build(args.model, len(data.classes), pretrained=None).to(device)
    optimizer = build_optimizer(detector, "adamw", 1e-4, 1e-4, 0.9)
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
    batches = list(make_loader(data.subset(args.batch * args.steps), args.batch, train=True, augment=0.0))
    train_one_epoch(detector, optimizer, batches[:1], device, amp_dtype=dtype, scaler=scaler)  # warm-up
    times = [timed(lambda b=b: train_one_epoch(detector, optimizer, [b], device, amp_dtype=dtype, scaler=scaler),
                   device)[0] for b in batches]
    return median(times)


if __name__ == "__main__":
    main()
