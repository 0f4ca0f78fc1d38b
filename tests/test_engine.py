"""Engine: time-bounded training, schedule, divergence, evaluation on real images."""

from __future__ import annotations

import math
import time

import pytest
import torch
from torch import nn

from detect_automl.config import TrainConfig
from detect_automl.data.dataset import Dataset
from detect_automl.data.loader import make_loader
from detect_automl.engine import evaluate, train, train_one_epoch
from detect_automl.engine.train import ModelEma, _WarmupCosine
from detect_automl.errors import InputError, TrainingError
from detect_automl.models import build

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def raccoon(datasets_dir):
    return Dataset(datasets_dir / "raccoon", split="train").subset(6)


def test_warmup_then_cosine_schedule():
    param = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1.0)
    sched = _WarmupCosine(opt, total_steps=100, warmup_steps=10, min_ratio=0.01, start=0.0, deadline=None)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        sched.step()
    assert lrs[0] == pytest.approx(0.001)
    assert lrs[5] == pytest.approx(0.001 + 0.999 * 0.5)
    assert max(lrs) == pytest.approx(1.0) and lrs.index(max(lrs)) == 10
    assert lrs[55] == pytest.approx(0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * 45 / 90)))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # monotone decay after warm-up
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01)


def test_schedule_follows_the_clock_when_a_deadline_is_set():
    param = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1.0)
    start = time.monotonic()
    sched = _WarmupCosine(opt, total_steps=10_000, warmup_steps=0, min_ratio=0.0, start=start - 50,
                          deadline=start + 50)
    sched.step()  # 1 step of 10 000, but half the time is gone: the schedule is half done
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5, abs=0.02)


def test_train_stops_cleanly_at_the_deadline(raccoon):
    model = build("ssdlite320_mobilenet_v3_large", 1)
    loader = make_loader(raccoon, 2, train=True, augment=0.5)
    config = TrainConfig(pretrained=None, epochs=50, batch_size=2, warmup_steps=2)
    start = time.monotonic()
    result = train(model, loader, config, CPU, deadline=start + 6.0, progress=False)
    elapsed = time.monotonic() - start
    assert result.stopped == "time_limit"
    assert 1 <= len(result.history) < 50
    assert elapsed < 6.0 + 2.0  # one step at most past the deadline estimate
    assert all(math.isfinite(r["loss"]) for r in result.history)
    assert result.best_state is not None and set(result.best_state) == set(model.state_dict())


def test_train_keeps_the_best_epoch_by_val_map(raccoon):
    model = build("ssdlite320_mobilenet_v3_large", 1)
    loader = make_loader(raccoon, 2, train=True, augment=0.0)
    val_loader = make_loader(raccoon.subset(2), 2, train=False)
    config = TrainConfig(pretrained=None, epochs=2, batch_size=2, warmup_steps=1)
    seen = []
    result = train(model, loader, config, CPU, val_loader=val_loader, class_names=raccoon.classes,
                   on_epoch=lambda record, m: seen.append(record), progress=False)
    assert [r["epoch"] for r in seen] == [1, 2] and seen == result.history
    improved = (seen[1]["val_map"], seen[1]["val_map_50"]) > (seen[0]["val_map"], seen[0]["val_map_50"])
    assert seen[0]["is_best"] and seen[1]["is_best"] == improved
    best = max(result.history, key=lambda r: (r["val_map"], r["val_map_50"]))
    assert result.best_metrics["map"] == best["val_map"]
    # The kept weights are that epoch's: re-evaluating them gives the same mAP.
    model.load_state_dict(result.best_state)
    again = evaluate(model, val_loader, raccoon.classes, CPU)
    assert again["map"] == pytest.approx(best["val_map"], abs=1e-9)


def test_model_ema_averages_weights_and_buffers_with_a_ramped_decay():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ema = ModelEma(model, decay=0.3)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    expected = None
    for step in range(1, 6):
        model(torch.randn(8, 3)).square().sum().backward()
        opt.step()
        opt.zero_grad()
        ema.update(model)
        current = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if expected is None:
            expected = current  # the first update copies
        else:
            decay = min(0.3, (1 + step) / (10 + step))  # the ramp (0.25), then the cap (0.3)
            expected = {k: (v * decay + current[k] * (1 - decay) if v.is_floating_point() else current[k])
                        for k, v in expected.items()}
    averaged = ema.module.state_dict()
    for key, value in expected.items():
        assert torch.allclose(averaged[key], value, atol=1e-6), key
    assert not torch.equal(averaged["0.weight"], model.state_dict()["0.weight"])
    assert averaged["1.num_batches_tracked"] == 5  # integer buffers follow the model
    assert averaged["1.running_mean"].abs().sum() > 0  # BatchNorm statistics are averaged too


def test_train_validates_and_keeps_the_moving_average(raccoon):
    model = build("ssdlite320_mobilenet_v3_large", 1)
    loader = make_loader(raccoon, 2, train=True, augment=0.0)
    val_loader = make_loader(raccoon.subset(2), 2, train=False)
    config = TrainConfig(pretrained=None, epochs=1, batch_size=2, warmup_steps=1, ema_decay=0.9)
    passed = []
    result = train(model, loader, config, CPU, val_loader=val_loader, class_names=raccoon.classes,
                   on_epoch=lambda record, m: passed.append(m), progress=False)
    kept = passed[0]
    assert kept is not model  # the average, not the raw weights, is reported and checkpointed
    assert all(torch.equal(result.best_state[k], v) for k, v in kept.state_dict().items())
    raw = model.state_dict()
    assert any(not torch.equal(result.best_state[k], raw[k]) for k in raw if raw[k].is_floating_point())
    assert result.best_metrics["map"] == pytest.approx(evaluate(kept, val_loader, raccoon.classes, CPU)["map"],
                                                       abs=1e-9)


class _Diverging(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))

    def forward(self, images, targets):
        return {"loss_classifier": self.w * float("nan"), "loss_box_reg": self.w}


def test_nan_loss_raises_training_error(raccoon):
    loader = make_loader(raccoon.subset(2), 2, train=True, augment=0.0)
    opt = torch.optim.SGD(_Diverging().parameters(), lr=0.1)
    with pytest.raises(TrainingError, match="loss diverged at step 1.*loss_classifier=nan"):
        train_one_epoch(_Diverging(), opt, loader, CPU)


def test_config_validation_names_the_bad_value():
    with pytest.raises(InputError, match="optimizer must be 'sgd' or 'adamw'"):
        TrainConfig(optimizer="adam")
    with pytest.raises(InputError, match=r"ema_decay must be in \[0, 1\), got 1.0"):
        TrainConfig(ema_decay=1.0)
    with pytest.raises(InputError, match=r"unknown hyperparameters \['learning_rate'\]"):
        TrainConfig.from_dict({"learning_rate": 0.1})


@pytest.mark.parametrize("name", ["ssdlite320_mobilenet_v3_large", "fasterrcnn_mobilenet_v3_large_320_fpn",
                                  "retinanet_resnet50_fpn"])
def test_images_without_boxes_train(raccoon, name):
    """A negative image (boxes of shape (0, 4)) in a batch trains, it does not crash (vision#1598)."""
    from detect_automl.data.records import ImageRecord

    negative = ImageRecord(raccoon[0].path, image_id="negative")
    data = Dataset.from_records([negative, raccoon[1]], raccoon.classes)
    loader = make_loader(data, 2, train=True, augment=0.0)
    images, targets = next(iter(loader))
    assert sorted(t["boxes"].shape[0] for t in targets)[0] == 0
    model = build(name, 1)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    stats = train_one_epoch(model, opt, loader, CPU)
    assert stats["steps"] == 1 and math.isfinite(stats["loss"])
