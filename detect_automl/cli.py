"""detect-automl: train, tune, evaluate, export and use object detectors from the shell.

Exit codes: 0 success; 1 `inspect` found errors; 2 bad input or a failed run (the message names the
file, the record and what is wrong); 130 interrupted (Ctrl-C; a search keeps its best trial).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .data._files import IMAGE_EXTENSIONS
from .loggers import LOGGERS

if TYPE_CHECKING:
    from .predictor import ObjectDetector
    from .results import Detections

__all__ = ["main"]


def _dataset(path: str, fmt: str | None, split: str | None, on_error: str):
    from .data.dataset import Dataset

    return Dataset(path, format=fmt, split=split, on_error=on_error)


def _print_metrics(title: str, metrics: dict) -> None:
    print(f"{title}: mAP {metrics['map']:.3f}  mAP@50 {metrics['map_50']:.3f}  mAP@75 {metrics['map_75']:.3f}  "
          f"({metrics['num_images']} images, {metrics['num_ground_truth']} boxes)")
    for name, ap in metrics["per_class"].items():
        print(f"  {name:<24} AP {'n/a' if ap is None else f'{ap:.3f}'}")


def _fit(args: argparse.Namespace) -> int:
    from .api import fit
    from .leaderboard import COLUMNS

    train = _dataset(args.data, args.format, args.split, args.on_error)
    val = _dataset(args.data, args.format, args.val_split, args.on_error) if args.val_split else None
    hyperparameters = {"pretrained": None if args.pretrained == "none" else args.pretrained}
    if args.model:
        hyperparameters["model"] = args.model
    print(f"training on {train!r}" + (f", validating on {len(val)} images" if val is not None else ""))
    for name in ("epochs", "batch_size"):
        if getattr(args, name) is not None:
            hyperparameters[name] = getattr(args, name)
    detector = fit(train, val, time_limit=args.time_limit, num_trials=args.num_trials, presets=args.preset,
                   hyperparameters=hyperparameters, gpus_per_trial=args.gpus_per_trial,
                   cpus_per_trial=args.cpus_per_trial, ray_address=args.ray_address, searcher=args.searcher,
                   output_dir=args.output, seed=args.seed, resume=args.resume, on_error=args.on_error,
                   loggers=args.logger, workers_per_trial=args.workers_per_trial)
    board = detector.leaderboard()
    shown = [c for c in [*COLUMNS, "optimizer", "lr", "batch_size", "augment"] if c in board]
    print(board[shown].to_string(index=False, max_colwidth=48))
    if args.test_split:
        test = _dataset(args.data, args.format, args.test_split, args.on_error)
        _print_metrics(f"test ({args.test_split})", detector.evaluate(test, on_error=args.on_error))
    print(f"saved model: {detector.path}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from .predictor import ObjectDetector

    detector = ObjectDetector.load(args.model)
    images = _image_paths(args.images)
    results = [_predict_one(detector, path, f"{i}/{len(images)}", args) for i, path in enumerate(images, 1)]
    payload = {str(p): r.to_dict()["detections"] for p, r in zip(images, results)}
    text = json.dumps(payload, indent=2)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "predictions.json").write_text(text)
        _write_drawn(out, images, results)
        print(f"wrote {out / 'predictions.json'} and {len(results)} drawn images to {out}")
    else:
        print(text)
    return 0


def _predict_one(detector: ObjectDetector, path: str, position: str, args: argparse.Namespace) -> Detections:
    """Detections in one image; unless ``--quiet``, one line on stderr: position, path, counts, time."""
    start = time.perf_counter()
    detections = detector.predict(path, score_threshold=args.score_threshold)
    if not args.quiet:
        ms = (time.perf_counter() - start) * 1000
        print(f"image {position} {path}: {_count_by_class(detections)}, {ms:.1f}ms", file=sys.stderr)
    return detections


def _count_by_class(detections: Detections) -> str:
    """``"2 raccoon, 1 dog"`` (in class order), or ``"no detections"``."""
    counts = Counter(detections.class_ids.tolist())
    if not counts:
        return "no detections"
    return ", ".join(f"{counts[i]} {detections.class_names[i]}" for i in sorted(counts))


def _image_paths(items: Sequence[str]) -> list[str]:
    """The arguments, with each folder replaced by the image files in it (sorted)."""
    paths: list[str] = []
    for item in items:
        if Path(item).is_dir():
            found = sorted(str(p) for p in Path(item).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                from .errors import InputError

                raise InputError(f"{item}: a folder without image files ({', '.join(sorted(IMAGE_EXTENSIONS))})")
            paths.extend(found)
        else:
            paths.append(item)
    return paths


def _write_drawn(out: Path, images: Sequence[str], results: list) -> None:
    """Each image with its detections drawn, as ``out/<stem>.jpg`` (``<stem>_1.jpg``... for repeats)."""
    from PIL import Image

    from .viz import draw_detections

    taken: set[str] = set()
    for path, detections in zip(images, results):
        stem, n = Path(path).stem, 0
        name = stem
        while name.lower() in taken:  # case-insensitive file systems too
            n += 1
            name = f"{stem}_{n}"
        taken.add(name.lower())
        Image.fromarray(draw_detections(path, detections)).save(out / f"{name}.jpg", quality=90)


def _evaluate(args: argparse.Namespace) -> int:
    from .predictor import ObjectDetector

    detector = ObjectDetector.load(args.model)
    metrics = detector.evaluate(_dataset(args.data, args.format, args.split, args.on_error), progress=True,
                                on_error=args.on_error)
    _print_metrics(f"{args.data}" + (f" ({args.split})" if args.split else ""), metrics)
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from .data.checks import inspect

    report = inspect(args.data, args.format, args.split, decode=args.decode)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report)
    return 0 if report.ok else 1


def _download(args: argparse.Namespace) -> int:
    from .data.download import download_dataset

    path = download_dataset(args.name, args.root, categories=args.categories, keep_archives=args.keep_archives)
    print(f"prepared: {path}")
    return 0


def _convert(args: argparse.Namespace) -> int:
    from .data.convert import convert

    output = convert(args.data, args.to, args.output, format=args.format, splits=args.split)
    print(f"wrote {args.to.upper()} dataset: {output}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from .export import export
    from .predictor import ObjectDetector

    path = export(ObjectDetector.load(args.model, device="cpu"), args.output, format=args.format)
    print(f"exported {args.format}: {path} (sidecar {path.name}.json)")
    return 0


def _parser() -> argparse.ArgumentParser:
    from .data.policy import DEFAULT_ON_ERROR, MAX_BAD_FRACTION, ON_ERROR

    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog="detect-automl", description=__doc__, formatter_class=formatter)
    sub = parser.add_subparsers(dest="command", required=True)

    def data_args(p: argparse.ArgumentParser, split_help: str, on_error: bool = True) -> None:
        p.add_argument("data", help="VOC root, COCO json, or COCO root with annotations/instances_<split>.json")
        p.add_argument("--format", choices=["voc", "coco"], default=None, help="default: detect")
        p.add_argument("--split", default=None, help=split_help)
        if on_error:
            p.add_argument("--on-error", choices=ON_ERROR, default=DEFAULT_ON_ERROR,
                           help="bad images/boxes: auto leaves isolated ones out and stops with the report "
                                f"when over {100 * MAX_BAD_FRACTION:.0f}%% (or all) are bad; raise stops on any; "
                                "skip leaves out any share (default: %(default)s)")

    p = sub.add_parser("fit", help="train (and tune) a detector, save it", formatter_class=formatter,
                       description="Search detectors and hyperparameters with Ray Tune; keep and save the best.",
                       epilog="example:\n  detect-automl fit datasets/raccoon --split train --val-split val "
                              "--test-split test --time-limit 300 --num-trials 2 --output runs/raccoon")
    data_args(p, "training split, e.g. train (default: every image)")
    p.add_argument("--val-split", default=None, help="validation split (default: hold out 10%% of training)")
    p.add_argument("--test-split", default=None, help="evaluate the saved model on this split at the end")
    p.add_argument("--time-limit", type=float, default=None, help="seconds for the whole fit")
    p.add_argument("--num-trials", type=int, default=1,
                   help="configurations to train at most: the preset's default, its portfolio, then samples; "
                        "the search plan runs fewer when the time limit cannot train them all (1: one training)")
    p.add_argument("--preset", choices=["fast", "medium_quality", "best_quality"], default="medium_quality",
                   help="search space and defaults for the hardware found")
    p.add_argument("--model", default=None, help="a model name (see detect_automl.list_models())")
    p.add_argument("--pretrained", default="auto", help="auto | coco | imagenet | none | PATH")
    p.add_argument("--epochs", type=int, default=None,
                   help="cap the number of epochs (default: with --time-limit, train until it; without, the preset's)")
    p.add_argument("--batch-size", type=int, default=None, help="fix the batch size (default: the preset's)")
    p.add_argument("--gpus-per-trial", type=float, default=None, help="e.g. 0.25 to share a GPU (default: 1 with GPUs)")
    p.add_argument("--cpus-per-trial", type=float, default=None)
    p.add_argument("--workers-per-trial", type=int, default=None,
                   help="data-parallel workers per trial, splitting its GPUs/CPUs (default: 1 per GPU of a trial)")
    p.add_argument("--ray-address", default=None, help="run the search on an existing Ray cluster")
    p.add_argument("--searcher", choices=["random", "optuna"], default="random")
    p.add_argument("--resume", action="store_true", help="continue an interrupted search in --output")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default=None, help="output directory (the saved model goes to OUTPUT/model)")
    p.add_argument("--logger", action="append", choices=LOGGERS, default=None,
                   help="log each epoch's loss, lr, val mAP and each trial's config to OUTPUT/logs; repeatable: "
                        "--logger tensorboard --logger mlflow")
    p.set_defaults(func=_fit)

    p = sub.add_parser("predict", help="detect objects in images with a saved model")
    p.add_argument("model", help="saved model directory")
    p.add_argument("images", nargs="+", help="image files, or folders of them")
    p.add_argument("--score-threshold", type=float, default=None)
    p.add_argument("--out", default=None,
                   help="write predictions.json and each image with its detections drawn (OUT/<name>.jpg) here, "
                        "instead of printing")
    p.add_argument("--quiet", action="store_true",
                   help="do not print a line per image (position, path, detections per class, milliseconds) "
                        "on stderr")
    p.set_defaults(func=_predict)

    p = sub.add_parser("evaluate", help="COCO mAP of a saved model on a labelled dataset")
    p.add_argument("model", help="saved model directory")
    data_args(p, "split to evaluate, e.g. test")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("inspect", help="check a dataset: every problem and statistics (exit 1 on errors)")
    data_args(p, "split to inspect", on_error=False)
    p.add_argument("--decode", action="store_true", help="decode every image fully (slower; default: headers)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_inspect)

    p = sub.add_parser("download", help="download and prepare voc2007 | voc2012 | coco2017 | fruit")
    p.add_argument("name", choices=["voc2007", "voc2012", "coco2017", "fruit"])
    p.add_argument("--root", default=".", help="where downloads/ and the prepared <name>/ go (default: .)")
    p.add_argument("--categories", nargs="+", default=None, help="coco2017: also write a subset of these categories")
    p.add_argument("--keep-archives", action="store_true", help="keep the archives after preparation")
    p.set_defaults(func=_download)

    p = sub.add_parser("convert", help="convert a dataset between VOC and COCO")
    p.add_argument("data", help="VOC root, COCO json, or COCO root with annotations/instances_<split>.json")
    p.add_argument("--to", choices=["voc", "coco"], required=True)
    p.add_argument("--output", required=True, help="output folder")
    p.add_argument("--format", choices=["voc", "coco"], default=None, help="source format (default: detect)")
    p.add_argument("--split", action="append", default=None,
                   help="a split to convert (repeat for several; default: every image, as split 'all' in COCO)")
    p.set_defaults(func=_convert)

    p = sub.add_parser("export", help="export a saved model to TorchScript or ONNX (+ a JSON sidecar)")
    p.add_argument("model", help="saved model directory")
    p.add_argument("--format", choices=["torchscript", "onnx"], default="torchscript")
    p.add_argument("--output", default=None, help="output file or directory (default: inside MODEL)")
    p.set_defaults(func=_export)
    return parser


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file=None, line: str | None = None) -> None:
    """A warning as a command shows it: ``warning: <message>`` on stderr, without Python's file,
    line number and source line (they name our code, not the user's input)."""
    print(f"warning: {message}", file=sys.stderr if file is None else file)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``detect-automl`` console script; returns the exit code."""
    from .errors import DetectAutoMLError

    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with warnings.catch_warnings():  # gives the caller's showwarning back (a test, a notebook)
        warnings.showwarning = _show_warning
        try:
            return args.func(args)
        except DetectAutoMLError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130


if __name__ == "__main__":
    sys.exit(main())
