"""A plain torchvision training loop (not detect_automl's engine) for a fixed time, then test mAP.

The baseline that fit() must beat: one configuration trained for the same wall time. Only the
dataset reading (our VOC adapter + image decoding) and the metric (pycocotools via our
coco_metrics) are shared with detect_automl; the loop is the torchvision-reference style.

    python benchmarks/bench_plain_loop.py --data ../shared/data/fruit --seconds 600 --optimizer adamw --lr 1e-3
"""

from __future__ import annotations

import argparse
import json
import random
import time

import torch
import torchvision

from _common import SHARED_DATA

import detect_automl as da
from detect_automl.data.boxes import sanitize_boxes
from detect_automl.data.image import read_image
from detect_automl.metrics import coco_metrics


def _load(dataset):
    items = []
    for record in dataset:
        image = read_image(record.path)
        boxes, labels, keep = sanitize_boxes(record.boxes, record.labels, image.shape[1], image.shape[0])
        items.append((torch.from_numpy(image).permute(2, 0, 1).float() / 255, boxes, labels, record.ignore[keep]))
    return items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(SHARED_DATA / "fruit"),
                        help="a VOC root (default: fruit under $DETECT_AUTOML_DATA, else ../shared/data)")
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--optimizer", choices=["sgd", "adamw"], default="adamw")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    random.seed(0)
    train, test = da.Dataset(args.data, split="train"), da.Dataset(args.data, split="test")
    device = torch.device(args.device)
    model = torchvision.models.detection.ssdlite320_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=len(train.classes) + 1).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = (torch.optim.AdamW(params, lr=args.lr) if args.optimizer == "adamw"
           else torch.optim.SGD(params, lr=args.lr, momentum=0.9, weight_decay=4e-5))
    items = _load(train)
    start = time.time()
    steps = epochs = 0
    model.train()
    while time.time() - start < args.seconds:
        order = list(range(len(items)))
        random.shuffle(order)
        for i in range(0, len(order) - args.batch_size + 1, args.batch_size):
            if time.time() - start >= args.seconds:
                break
            images, targets = [], []
            for j in order[i:i + args.batch_size]:
                image, boxes, labels, _ = items[j]
                boxes = torch.from_numpy(boxes.copy())
                if random.random() < 0.5:  # horizontal flip
                    image = image.flip(-1)
                    boxes[:, [0, 2]] = image.shape[-1] - boxes[:, [2, 0]]
                images.append(image.to(device))
                targets.append({"boxes": boxes.to(device), "labels": torch.from_numpy(labels + 1).to(device)})
            loss = sum(model(images, targets).values())
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
        epochs += 1
    train_seconds = time.time() - start
    model.eval()
    gts, preds = [], []
    with torch.no_grad():
        for image, boxes, labels, ignore in _load(test):
            out = model([image.to(device)])[0]
            gts.append({"boxes": boxes, "labels": labels, "ignore": ignore})
            preds.append({"boxes": out["boxes"].cpu().numpy(), "scores": out["scores"].cpu().numpy(),
                          "labels": out["labels"].cpu().numpy() - 1})
    metrics = coco_metrics(gts, preds, train.classes)
    print(json.dumps({"data": args.data, "optimizer": args.optimizer, "lr": args.lr, "batch_size": args.batch_size,
                      "train_seconds": round(train_seconds, 1), "steps": steps, "epochs": epochs,
                      "wall_s": round(time.time() - start, 1), "test_map": round(metrics["map"], 4),
                      "test_map_50": round(metrics["map_50"], 4)}, indent=2))


if __name__ == "__main__":
    main()
