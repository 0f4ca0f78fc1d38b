"""Smoke test for the offline bundle: imports + a 2-trial local Ray Tune run.

Run:  bash .devbundle/setup.sh && PYTHONPATH=$PWD/.devbundle/site python3 .devbundle/smoke.py
"""
import os
import sys
import tempfile
import time

t0 = time.time()
import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler
import albumentations as A
import pycocotools.coco  # noqa: F401
from pycocotools import mask as _mask  # noqa: F401  (C extension)
import pydantic
import tensorboardX  # noqa: F401
import numpy as np

print(f"python {sys.version.split()[0]}; ray {ray.__version__} from {os.path.dirname(ray.__file__)}")
print(f"albumentations {A.__version__}; pydantic {pydantic.VERSION}")
try:
    import torch
    print(f"torch {torch.__version__}, cuda available: {torch.cuda.is_available()}")
except ImportError:
    print("torch not installed (fine for the proxy test)")

# albumentations actually transforms something (exercises albucore/simsimd/stringzilla/cv2)
img = (np.random.rand(64, 64, 3) * 255).astype(np.uint8)
out = A.Compose(
    [A.HorizontalFlip(p=1.0), A.RandomBrightnessContrast(p=1.0)],
    bbox_params=A.BboxParams(format="coco", label_fields=["labels"]),
)(image=img, bboxes=[[1, 2, 10, 20]], labels=[1])
assert out["image"].shape == img.shape and len(out["bboxes"]) == 1


def trainable(config):
    for i in range(3):
        tune.report({"x": 1, "it": i, "a": config["a"]})


ray.init(num_cpus=2, include_dashboard=False)
try:
    storage = tempfile.mkdtemp(prefix="smoke_ray_results_")
    tuner = tune.Tuner(
        trainable,
        param_space={"a": tune.grid_search([1, 2])},
        tune_config=tune.TuneConfig(
            metric="x", mode="max",
            scheduler=ASHAScheduler(max_t=3, grace_period=1),
        ),
        run_config=tune.RunConfig(name="smoke", storage_path=storage, verbose=0),
    )
    results = tuner.fit()
    assert len(results) == 2, len(results)
    assert not results.errors, results.errors
    assert all(r.metrics["x"] == 1 for r in results), [r.metrics for r in results]
finally:
    ray.shutdown()
print(f"OK ({time.time() - t0:.1f}s)")
