"""Presets and search spaces: plain values and Ray Tune domains."""

from __future__ import annotations

import pytest
from ray import tune

from detect_automl.config import TrainConfig
from detect_automl.errors import InputError
from detect_automl.models import list_models
from detect_automl.tune.space import is_searched, list_presets, preset_config, preset_space, to_tune_domains


@pytest.mark.parametrize("gpu", [False, True])
@pytest.mark.parametrize("name", ["fast", "medium_quality", "best_quality"])
def test_presets_give_valid_configs_and_spaces(name, gpu):
    config = preset_config(name, gpu)
    assert config.model in list_models()
    space = preset_space(name, gpu)
    assert {"lr", "batch_size"} <= set(space)
    for model in space.get("model", []):
        assert model in list_models()
    if not gpu:  # on CPU only SSDlite learns in minutes
        assert config.model == "ssdlite320_mobilenet_v3_large" and "model" not in space
    domains = to_tune_domains(space)
    assert set(domains) == set(space)


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(InputError, match="unknown preset 'huge'.*best_quality, fast, medium_quality"):
        preset_config("huge", False)
    assert list_presets() == ["best_quality", "fast", "medium_quality"]


def test_plain_values_become_ray_tune_domains():
    domains = to_tune_domains({
        "batch_size": [4, 8], "epochs": range(5, 8), "lr": ("loguniform", 1e-4, 1e-2),
        "augment": ("uniform", 0.0, 1.0), "warmup_steps": ("randint", 10, 20),
        "optimizer": tune.choice(["sgd"]), "seed": {"grid_search": [0, 1]},
    })
    assert domains["batch_size"].categories == [4, 8] and domains["epochs"].categories == [5, 6, 7]
    assert (domains["lr"].lower, domains["lr"].upper) == (1e-4, 1e-2)
    assert "LogUniform" in type(domains["lr"].get_sampler()).__name__
    assert type(domains["augment"].get_sampler()).__name__.strip("_") == "Uniform"
    assert (domains["warmup_steps"].lower, domains["warmup_steps"].upper) == (10, 20)
    assert domains["optimizer"].categories == ["sgd"] and domains["seed"] == {"grid_search": [0, 1]}


def test_searched_versus_fixed_values():
    assert all(is_searched(v) for v in ([1, 2], range(3), ("uniform", 0, 1), {"grid_search": [1]},
                                        tune.loguniform(1e-4, 1e-2)))
    assert not any(is_searched(v) for v in (0.001, "adamw", 8, None, (1, 2)))


@pytest.mark.parametrize("bad", [("loguniform", 0.0, 1.0), ("uniform", 2.0, 1.0), []])
def test_bad_ranges_are_named(bad):
    with pytest.raises(InputError, match="search space 'lr'"):
        to_tune_domains({"lr": bad})


def test_the_preset_default_is_the_first_point_when_it_lies_in_the_space():
    from detect_automl.config import TrainConfig
    from detect_automl.tune.space import default_point

    config = TrainConfig(lr=1e-3, batch_size=4, augment=0.5, weight_decay=1e-4)
    space = {"lr": ("loguniform", 3e-4, 3e-3), "batch_size": [4, 8], "augment": ("uniform", 0.0, 0.6)}
    assert default_point(space, config) == {"lr": 1e-3, "batch_size": 4, "augment": 0.5}
    assert default_point({**space, "batch_size": [8, 16]}, config) is None  # 4 is not a choice
    assert default_point({"lr": tune.loguniform(1e-4, 1e-2)}, config) is None  # opaque domain: no guess
    for gpu in (False, True):  # every preset's default is one of its own points
        for name in list_presets():
            assert default_point(preset_space(name, gpu), preset_config(name, gpu)) is not None, (name, gpu)


def test_a_preset_registered_with_the_old_one_argument_signature_still_serves_both_regimes(monkeypatch):
    from detect_automl.tune import space

    monkeypatch.setattr(space, "PRESETS", dict(space.PRESETS))  # leave the real registry as it was

    def tiny(gpu):
        return TrainConfig(model="ssdlite320_mobilenet_v3_large", batch_size=8 if gpu else 2)

    with pytest.warns(FutureWarning, match=r"preset 'tiny': presets take \(gpu, pretrained\) now"):
        space.register_preset("tiny")(tiny)
    assert preset_config("tiny", True, pretrained=True).batch_size == 8
    assert preset_config("tiny", False).batch_size == 2

    @space.register_preset("tiny2")
    def tiny2(gpu, pretrained):
        return TrainConfig(lr=1e-4 if pretrained else 1e-3)

    assert (preset_config("tiny2", False, True).lr, preset_config("tiny2", False).lr) == (1e-4, 1e-3)
