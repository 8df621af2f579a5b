"""Contract over the model-family registry: every family builds for sampled configs and runs."""

from __future__ import annotations

import copy

import optuna
import pytest
import torch

from autotune.config.search_space import SearchSpace
from autotune.models import MODEL_FAMILIES, build_model
from autotune.models.layers import fold_batchnorm
from autotune.space import sample_params, split_params

SPACES = {
    "mobilenet": {
        "stages": {"type": "int", "low": 1, "high": 4},
        "depth": {"type": "int", "low": 1, "high": 2, "per_stage": True},
        "width_mult": {"type": "float", "low": 0.5, "high": 1.0, "step": 0.25},
        "kernel": {"type": "categorical", "choices": [3, 5, 7], "per_stage": True},
        "expand": {"type": "categorical", "choices": [1, 4, 6]},
        "se": {"type": "categorical", "choices": [False, True], "per_stage": True},
        "act": {"type": "categorical", "choices": ["relu", "hardswish"]},
    },
    "mlp": {
        "layers": {"type": "int", "low": 0, "high": 3},
        "width": {"type": "int", "low": 8, "high": 64, "log": True},
        "batchnorm": {"type": "categorical", "choices": [False, True]},
        "act": {"type": "categorical", "choices": ["relu", "silu"]},
    },
}


def test_every_family_has_a_contract_space():
    assert set(MODEL_FAMILIES.names()) == set(SPACES)


@pytest.mark.parametrize("family", MODEL_FAMILIES.names())
@pytest.mark.parametrize("input_shape", [(1, 8, 8), (3, 32, 32)])
def test_family_builds_and_runs(family, input_shape):
    space = SearchSpace.model_validate(
        {"task": {"data": "digits", "model": family}, "arch": SPACES[family], "objectives": {"latency_ms": "min"}}
    )
    fam = MODEL_FAMILIES.get(family)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(4):
        params = split_params(sample_params(space, study.ask()), "arch")
        torch.manual_seed(0)
        model = build_model(fam, params, input_shape, 7)
        x = torch.randn(3, *input_shape)
        model.train()
        out = model(x)
        assert out.shape == (3, 7)
        out.sum().backward()
        model.eval()
        with torch.no_grad():
            ref = model(x)
            folded = copy.deepcopy(model)
            fold_batchnorm(folded)
            torch.testing.assert_close(folded(x), ref, atol=1e-4, rtol=1e-4)


def test_mobilenet_per_stage_values_shape_the_network():
    fam = MODEL_FAMILIES.get("mobilenet")
    m = build_model(fam, {"stages": 2, "kernel_0": 3, "kernel_1": 7, "depth_1": 2}, (1, 8, 8), 10)
    ks = [mod.kernel_size[0] for mod in m.stages.modules() if isinstance(mod, torch.nn.Conv2d) and mod.groups > 1]
    assert ks == [3, 7, 7]


def test_bad_family_parameter_value_raises():
    fam = MODEL_FAMILIES.get("mobilenet")
    with pytest.raises(ValueError, match="stages"):
        build_model(fam, {"stages": 9}, (1, 8, 8), 10)
