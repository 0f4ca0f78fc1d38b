"""COCO 2017 scale: how long and how much memory reading a train2017-sized instances file takes.

A user with COCO-sized data first meets ``Dataset(json, format="coco")``; every COCO user already
runs pycocotools' ``COCO(json)`` on such files, so that is the yardstick. The file is synthetic
(real COCO cannot be downloaded here) with train2017's counts and realistic statistics: 118,287
images of COCO's common sizes, ~707k boxes (the issue's figure for train2017) drawn per image from a
long-tailed count distribution (mean ~6, some images with 50+), box areas log-normal over COCO's small /
medium / large split, 80 categories, and (``--polygons``, as train2017 has them) one segmentation
polygon per box. Every image entry points to a hard link of one tiny JPEG, so disk stays small and
the figures measure annotation handling, not decoding.

Each measurement runs in a fresh process and reports wall seconds, the process's peak RSS and its
growth over the imports (detect_automl imports torch, ~0.6 GB, which pycocotools does not):

- ``pycocotools``: ``COCO(json)``
- ``dataset``: ``detect_automl.Dataset(json, format="coco")``
- ``pickle``: the Dataset's pickled size, and the seconds to pickle and unpickle it (what each
  Ray trial receives)
- ``inspect``: ``detect_automl.inspect(json)`` (image headers; warm file cache)
- ``loader``: a training DataLoader epoch over ``--loader-images`` records with 0, 2 and 4
  workers, images/s (tiny images: the per-record overhead, not decoding)

    python benchmarks/bench_coco_scale.py                      # generate (once) and measure all
    python benchmarks/bench_coco_scale.py --images 5000        # a quick, smaller run
    python benchmarks/bench_coco_scale.py --only dataset pycocotools

The generated files go to ``$DETECT_AUTOML_BENCH_OUTPUT/coco_scale`` (default runs/benchmarks/,
git-ignored); results print as a table and append to ``benchmarks/results/coco_scale.csv``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

TRAIN2017_IMAGES = 118_287
TRAIN2017_BOXES = 707_000
RESULTS = Path(__file__).resolve().parent / "results" / "coco_scale.csv"
MEASURES = ("pycocotools", "dataset", "pickle", "inspect", "loader")
_LINKS_PER_FILE = 50_000
_SIZES = [(640, 480), (480, 640), (640, 427), (427, 640), (640, 426), (500, 375), (640, 360), (612, 612)]


def generate(folder: Path, images: int, boxes: int, polygons: bool, seed: int = 0) -> Path:
    """Write ``folder/annotations/instances_train.json`` and ``folder/images/`` (hard links)."""
    rng = np.random.default_rng(seed)
    json_path = folder / "annotations" / "instances_train.json"
    if json_path.is_file():
        return json_path
    (folder / "annotations").mkdir(parents=True, exist_ok=True)
    image_dir = folder / "images"
    image_dir.mkdir(exist_ok=True)
    import cv2

    pixels = np.full((8, 8, 3), 127, np.uint8)
    # Boxes per image: a long-tailed (negative binomial) count with COCO's mean.
    counts = rng.negative_binomial(1.2, 1.2 / (1.2 + boxes / images), size=images)
    sizes = [_SIZES[k] for k in rng.integers(0, len(_SIZES), size=images)]
    entries, annotations, ann_id = [], [], 1
    for index in range(images):
        image_id = index + 1
        name = f"{image_id:012d}.jpg"
        link = image_dir / name
        if index % _LINKS_PER_FILE == 0:  # file systems cap the links to one file (ext4: 65,000)
            tiny = image_dir / f"tiny_{index // _LINKS_PER_FILE}.jpg"
            cv2.imwrite(str(tiny), pixels)
        if not link.exists():
            os.link(tiny, link)
        width, height = sizes[index]
        entries.append({"license": 1, "file_name": name, "coco_url": "", "height": height, "width": width,
                        "date_captured": "2013-11-14 17:02:52", "flickr_url": "", "id": image_id})
        n = int(counts[index])
        # Areas log-normal around COCO's median (~ 0.6 % of the image); aspect ratios around 1.
        area = np.exp(rng.normal(np.log(0.006 * width * height), 1.6, size=n)).clip(4, 0.9 * width * height)
        aspect = np.exp(rng.normal(0.0, 0.6, size=n))
        w = np.minimum(np.sqrt(area * aspect), width - 1)
        h = np.minimum(area / np.maximum(w, 1), height - 1)
        x = rng.uniform(0, width - w)
        y = rng.uniform(0, height - h)
        for k in range(n):
            ann = {"id": ann_id, "image_id": image_id, "category_id": int(rng.integers(1, 81)),
                   "iscrowd": 0, "area": round(float(w[k] * h[k] * 0.7), 2),
                   "bbox": [round(float(v), 2) for v in (x[k], y[k], w[k], h[k])]}
            if polygons:
                points = int(rng.integers(12, 52))  # ~32 on average: the file reaches train2017's ~450 MB
                angle = np.sort(rng.uniform(0, 2 * np.pi, size=points))
                px = x[k] + w[k] / 2 * (1 + np.cos(angle))
                py = y[k] + h[k] / 2 * (1 + np.sin(angle))
                ann["segmentation"] = [np.round(np.stack([px, py], 1).ravel(), 2).tolist()]
            annotations.append(ann)
            ann_id += 1
    categories = [{"supercategory": "thing", "id": k, "name": f"class_{k:02d}"} for k in range(1, 81)]
    data = {"info": {"description": "synthetic train2017-sized instances"}, "licenses": [],
            "images": entries, "annotations": annotations, "categories": categories}
    json_path.write_text(json.dumps(data, separators=(",", ":")))
    for tiny in image_dir.glob("tiny_*.jpg"):
        tiny.unlink()
    return json_path


def _peak_mb() -> float:
    """This process's peak RSS (VmHWM: unlike ru_maxrss, not inherited from the parent at fork)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux: kB on most systems


def measure(what: str, json_path: Path, loader_images: int) -> list[dict]:
    """One measurement, in this (fresh) process."""
    rows = []
    if what == "pycocotools":
        from pycocotools.coco import COCO

        base = _peak_mb()
        start = time.perf_counter()
        COCO(str(json_path))
        rows.append({"figure": "load s", "value": time.perf_counter() - start})
    else:
        import detect_automl as da

        base = _peak_mb()
        start = time.perf_counter()
        if what == "inspect":
            da.inspect(json_path, format="coco")
            rows.append({"figure": "inspect s", "value": time.perf_counter() - start})
        else:
            dataset = da.Dataset(json_path, format="coco")
            rows.append({"figure": "load s", "value": time.perf_counter() - start})
            if what == "pickle":
                import pickle

                start = time.perf_counter()
                payload = pickle.dumps(dataset, protocol=pickle.HIGHEST_PROTOCOL)
                rows.append({"figure": "pickle s", "value": time.perf_counter() - start})
                rows.append({"figure": "pickle MB", "value": len(payload) / 2**20})
                start = time.perf_counter()
                pickle.loads(payload)
                rows.append({"figure": "unpickle s", "value": time.perf_counter() - start})
            elif what == "loader":
                from detect_automl.data.loader import make_loader

                subset = dataset.subset(min(loader_images, len(dataset)))
                for workers in (0, 2, 4):
                    loader = make_loader(subset, batch_size=8, train=True, num_workers=workers)
                    start = time.perf_counter()
                    seen = sum(len(images) for images, _ in loader)
                    rows.append({"figure": f"loader images/s, {workers} workers",
                                 "value": seen / (time.perf_counter() - start)})
    rows.append({"figure": "peak RSS MB", "value": _peak_mb()})
    rows.append({"figure": "peak RSS growth MB", "value": _peak_mb() - base})  # over the imports (torch: ~0.6 GB)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=TRAIN2017_IMAGES, help="default: %(default)s (train2017)")
    parser.add_argument("--boxes", type=int, default=TRAIN2017_BOXES, help="mean total boxes (default: %(default)s)")
    parser.add_argument("--no-polygons", dest="polygons", action="store_false", help="leave out segmentation")
    parser.add_argument("--only", nargs="+", choices=MEASURES, default=list(MEASURES))
    parser.add_argument("--loader-images", type=int, default=2000,
                        help="records per loader epoch (default: %(default)s)")
    parser.add_argument("--label", default="", help="a note for the CSV (e.g. the commit measured)")
    parser.add_argument("--measure", choices=MEASURES, help=argparse.SUPPRESS)  # the child process's job
    parser.add_argument("--json", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.json, args.loader_images)))
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import BENCH_OUTPUT  # imports torch: not in the measuring processes

    folder = BENCH_OUTPUT / "coco_scale" / f"{args.images}_{args.boxes}{'_poly' if args.polygons else ''}"
    start = time.perf_counter()
    json_path = generate(folder, args.images, args.boxes, args.polygons)
    print(f"{json_path}: {json_path.stat().st_size / 2**20:.0f} MB (ready in {time.perf_counter() - start:.0f} s)")
    subprocess.run(["cat", str(json_path)], stdout=subprocess.DEVNULL, check=True)  # warm the file cache
    rows = []
    for what in args.only:
        out = subprocess.run([sys.executable, __file__, "--measure", what, "--json", str(json_path),
                              "--loader-images", str(args.loader_images)], capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"{what} failed:\n{out.stderr[-3000:]}")
        for row in json.loads(out.stdout.strip().splitlines()[-1]):
            rows.append({"measure": what, **row})
            print(f"{what:12s} {row['figure']:28s} {row['value']:10.2f}")
    RESULTS.parent.mkdir(exist_ok=True)
    new = not RESULTS.is_file()
    with RESULTS.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["date", "machine", "images", "boxes", "polygons", "json_mb", "label",
                                               "measure", "figure", "value"])
        if new:
            writer.writeheader()
        for row in rows:
            writer.writerow({"date": date.today().isoformat(),
                             "machine": f"{os.cpu_count()} cores {platform.machine()}",
                             "images": args.images, "boxes": args.boxes, "polygons": args.polygons,
                             "json_mb": round(json_path.stat().st_size / 2**20), "label": args.label,
                             "measure": row["measure"], "figure": row["figure"], "value": round(row["value"], 3)})


if __name__ == "__main__":
    main()
