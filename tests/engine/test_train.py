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
from detect_automl.engine.optim import ModelEma, WarmupCosine
from detect_automl.errors import InputError, TrainingError
from detect_automl.models import build

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def raccoon(datasets_dir):
    return Dataset(datasets_dir / "raccoon", split="train").subset(6)


def test_warmup_then_cosine_schedule():
    param = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1.0)
    sched = WarmupCosine(opt, total_steps=100, warmup_steps=10, min_ratio=0.01, start=0.0, deadline=None)
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
    sched = WarmupCosine(opt, total_steps=10_000, warmup_steps=0, min_ratio=0.0, start=start - 50,
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


def test_a_run_planned_by_time_anneals_to_its_deadline_and_warms_up_within_it(raccoon):
    model = build("ssdlite320_mobilenet_v3_large", 1)
    loader = make_loader(raccoon, 2, train=True, augment=0.0)
    val_loader = make_loader(raccoon.subset(2), 2, train=False)
    # 500 warm-up steps would outlast the run: the warm-up takes at most 5 % of its time instead.
    config = TrainConfig(pretrained=None, epochs=None, batch_size=2, warmup_steps=500, lr=1e-3, min_lr_ratio=0.01)
    start = time.monotonic()
    result = train(model, loader, config, CPU, val_loader=val_loader, class_names=raccoon.classes,
                   deadline=start + 10.0, progress=False)
    elapsed = time.monotonic() - start
    assert result.stopped == "time_limit" and 9.0 < elapsed < 10.5, elapsed  # the whole budget, not an epoch cap
    lrs = [r["lr"] for r in result.history]
    assert max(lrs) > 0.5e-3  # warmed up well within the run
    assert lrs[-1] < 0.15e-3  # and annealed near the floor (1e-5) when its time ended
    with pytest.raises(InputError, match="epochs=None"):
        train(model, loader, config, CPU, progress=False)


def test_patience_stops_a_run_whose_val_map_no_longer_improves(raccoon):
    model = build("ssdlite320_mobilenet_v3_large", 1)
    loader = make_loader(raccoon.subset(2), 2, train=True, augment=0.0)
    val_loader = make_loader(raccoon.subset(2), 2, train=False)
    # A learning rate too small to move the weights: a real plateau.
    config = TrainConfig(pretrained=None, epochs=None, batch_size=2, warmup_steps=0, lr=1e-12, patience=3)
    start = time.monotonic()
    result = train(model, loader, config, CPU, val_loader=val_loader, class_names=raccoon.classes,
                   deadline=start + 12.0, progress=False)
    assert result.stopped == "converged" and result.history[-1]["converged"]
    assert time.monotonic() - start < 11.0
    # Counted only in the second half of the schedule: at least 3 validations after it.
    assert len(result.history) >= 4


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
                   on_epoch=lambda record, state: passed.append(state.kept), progress=False)
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
    model = build(name, 1, image_size=320)  # the resolution is not what is tested: a smaller one is 4x faster
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    stats = train_one_epoch(model, opt, loader, CPU)
    assert stats["steps"] == 1 and math.isfinite(stats["loss"])


@pytest.mark.parametrize("capability, expected", [((7, 5), torch.float16), ((8, 0), torch.bfloat16),
                                                  ((9, 0), torch.bfloat16), ((6, 1), torch.float16)])
def test_amp_is_fp16_unless_the_gpu_computes_bf16_natively(monkeypatch, capability, expected):
    from detect_automl.engine import amp_dtype

    # A T4 (7.5) "supports" bf16 through emulation since torch 2.4; it must get fp16 + a scaler.
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert amp_dtype(torch.device("cuda"), True) == expected
    assert amp_dtype(torch.device("cuda"), False) is None
    assert amp_dtype(CPU, True) is None


def test_validation_runs_in_fp32_while_training_autocasts(raccoon, monkeypatch):
    import detect_automl.engine.state as state_module

    monkeypatch.setattr(state_module, "amp_dtype", lambda device, enabled=True: torch.bfloat16)  # CPU autocast
    model = build("ssdlite320_mobilenet_v3_large", 1)
    seen = {True: set(), False: set()}
    model.register_forward_pre_hook(lambda m, args: seen[m.training].add(torch.is_autocast_enabled("cpu")))
    loader = make_loader(raccoon.subset(2), 2, train=True, augment=0.0)
    val_loader = make_loader(raccoon.subset(2), 2, train=False)
    config = TrainConfig(pretrained=None, epochs=1, batch_size=2, warmup_steps=1, ema_decay=0.0)
    train(model, loader, config, CPU, val_loader=val_loader, class_names=raccoon.classes, progress=False)
    assert seen[True] == {True} and seen[False] == {False}


def test_boxes_decode_in_fp32_under_bf16_autocast():
    from torchvision.models.detection._utils import BoxCoder

    detector = build("fasterrcnn_mobilenet_v3_large_320_fpn", 2)
    coders = [m.box_coder for m in detector.modules() if hasattr(m, "box_coder")]
    assert len(coders) == 2  # the RPN's and the RoI heads'
    anchors = torch.tensor([[700.0, 650.0, 790.0, 799.0], [5.0, 7.0, 40.0, 33.0]])
    codes = torch.randn(2, 4) * 0.1
    exact = BoxCoder(coders[0].weights).decode_single(codes, anchors)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        rounded = BoxCoder(coders[0].weights).decode_single(codes.bfloat16(), anchors)  # torchvision's own
        ours = coders[0].decode_single(codes.bfloat16(), anchors)
    assert ours.dtype == torch.float32
    assert (rounded.float() - exact).abs().max() >= 1.0  # bf16 has 4 px steps at 700 px
    assert (ours - exact).abs().max() < 0.1  # only the codes' own rounding is left


class _SlowInEval(nn.Module):
    """A detector that takes ``seconds`` per image in eval mode (a large or slow validation set)."""

    def __init__(self, detector, seconds: float) -> None:
        super().__init__()
        self.detector, self.seconds = detector, seconds

    def forward(self, images, targets=None):
        if not self.training:
            time.sleep(self.seconds * len(images))
        return self.detector(images, targets)


def test_a_validation_that_cannot_finish_scores_a_seeded_subset_or_nothing(raccoon):
    model = _SlowInEval(build("ssdlite320_mobilenet_v3_large", 1), 1.0)
    loader = make_loader(raccoon, 1, train=False)
    start = time.monotonic()
    metrics = evaluate(model, loader, raccoon.classes, CPU, deadline=start + 3.5, seconds_per_image=1.0)
    assert time.monotonic() - start < 3.5 + 0.5  # at most the estimate's error past the deadline
    assert 1 <= metrics["num_images"] < 6 and metrics["num_images_total"] == 6
    # The same images each time (seeded), not just the loader's first ones.
    again = evaluate(model, loader, raccoon.classes, CPU, deadline=time.monotonic() + 3.5, seconds_per_image=1.0)
    assert again["num_images"] == metrics["num_images"] and again["map"] == metrics["map"]
    # Not even one image fits: no validation at all, rather than a late one.
    assert evaluate(model, loader, raccoon.classes, CPU, deadline=time.monotonic() + 0.5,
                    seconds_per_image=1.0) is None


def test_training_keeps_time_for_a_slow_validation(raccoon):
    model = _SlowInEval(build("ssdlite320_mobilenet_v3_large", 1), 1.0)  # 6 s per validation
    loader = make_loader(raccoon, 2, train=True, augment=0.0)
    val_loader = make_loader(raccoon, 2, train=False)
    config = TrainConfig(pretrained=None, epochs=50, batch_size=2, warmup_steps=1)
    start = time.monotonic()
    result = train(model, loader, config, CPU, val_loader=val_loader, class_names=raccoon.classes,
                   deadline=start + 20.0, progress=False)
    elapsed = time.monotonic() - start
    assert result.stopped == "time_limit" and elapsed < 20.0 + 1.0, elapsed
    assert "val_map" in result.history[-1] and result.best_metrics  # the last epoch was validated


def test_a_checkpoint_continues_the_run_where_it_stopped(raccoon):
    from detect_automl.engine import TrainState

    loader = make_loader(raccoon, 2, train=True, augment=0.0)
    val_loader = make_loader(raccoon.subset(2), 2, train=False)
    config = TrainConfig(pretrained=None, epochs=4, batch_size=2, warmup_steps=2)
    saved = []
    first = train(build("ssdlite320_mobilenet_v3_large", 1), loader, config, CPU, val_loader=val_loader,
                  class_names=raccoon.classes, progress=False,
                  on_epoch=lambda record, state: saved.append((record, state.checkpoint(),
                                                               state.optimizer.param_groups[0]["lr"])))
    record, checkpoint, lr_then = saved[1]  # as if the run had stopped after epoch 2
    checkpoint = torch.load(_roundtrip(checkpoint), weights_only=True)  # what a Ray checkpoint holds
    best_then = max(first.history[:2], key=lambda r: (r["val_map"], r["val_map_50"]))

    state = TrainState(build("ssdlite320_mobilenet_v3_large", 1), config, CPU)
    state.restore(checkpoint)
    assert (state.epoch, state.steps) == (2, 2 * len(loader))
    assert state.ema.updates == 2 * len(loader) and state.optimizer.state_dict()["state"]
    assert state.result.best_metrics["map"] == best_then["val_map"]
    for key, value in checkpoint["state_dict"].items():
        assert torch.equal(state.kept.state_dict()[key], value)
    seen = []
    second = train(state.model, loader, config, CPU, val_loader=val_loader, class_names=raccoon.classes,
                   state=state, progress=False, on_epoch=lambda r, s: seen.append(s.optimizer.param_groups[0]["lr"]))
    assert [r["epoch"] for r in second.history] == [3, 4]  # no epoch twice
    assert seen[0] < lr_then  # on down the cosine: no second warm-up
    improved = [r for r in second.history if r["is_best"]]
    assert all((r["val_map"], r["val_map_50"]) > (best_then["val_map"], best_then["val_map_50"]) for r in improved)


def _roundtrip(obj):
    import io

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return buffer


def test_a_cpu_run_trains_channels_last_and_its_weights_load_into_a_plain_model():
    """On a CPU the model and its average train channels-last (oneDNN's faster layout); the
    weights they hand on load into a freshly built, contiguous detector that predicts the same."""
    from detect_automl.engine import TrainState

    torch.manual_seed(0)
    state = TrainState(build("ssdlite320_mobilenet_v3_large", 1), TrainConfig(pretrained=None), CPU)
    for model in (state.model, state.kept):
        dense = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d) and m.weight.shape[1] > 1
                 and m.weight.shape[-1] > 1]
        assert dense and all(w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
                             for w in dense)
    plain = build("ssdlite320_mobilenet_v3_large", 1)
    plain.load_state_dict(torch.load(_roundtrip(state.kept.state_dict()), weights_only=True))
    image = torch.rand(3, 200, 240)
    ours, theirs = state.kept.predict([image])[0], plain.predict([image])[0]
    assert torch.allclose(ours["scores"][:20], theirs["scores"][:20], atol=1e-4)
