"""Contract over the model-family registry (``autotune.models.families``): every family builds for its
smallest spec and for sampled configs, runs forward to ``(batch, num_classes)``, and folds its BatchNorm."""

from __future__ import annotations

import copy
import sys

import optuna
import pytest
import torch

from autotune.config.search_space import SearchSpace
from autotune.errors import UserError
from autotune.models import MODEL_FAMILIES, build_model, resolve_family
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


#: The smallest network of each family (the contract builds it first).
SMALLEST = {
    "mobilenet": {"stages": 1, "depth": 1, "width_mult": 0.25, "kernel": 1, "expand": 1, "stem_channels": 8},
    "mlp": {"layers": 0, "width": 1},
}


def test_every_family_has_a_contract_space():
    assert set(MODEL_FAMILIES.names()) == set(SPACES) == set(SMALLEST)


@pytest.mark.parametrize("family", MODEL_FAMILIES.names())
@pytest.mark.parametrize(("input_shape", "classes"), [((1, 8, 8), 10), ((3, 32, 32), 2)])
def test_family_builds_its_smallest_spec(family, input_shape, classes):
    fam = MODEL_FAMILIES.get(family)
    assert fam.name == family and fam.description
    assert set(SMALLEST[family]) <= set(fam.params)
    assert set(fam.per_stage) <= set(fam.params) and set(fam.choices) <= set(fam.params)
    params = dict(SMALLEST[family])
    torch.manual_seed(0)
    model = build_model(fam, params, input_shape, classes)
    assert params == SMALLEST[family]  # the caller's parameters are left as they were
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(2, *input_shape)).shape == (2, classes)
    torch.manual_seed(0)
    again = build_model(fam, params, input_shape, classes)
    for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)  # deterministic for a seed


@pytest.mark.parametrize("family", MODEL_FAMILIES.names())
def test_family_defaults_build(family):
    fam = MODEL_FAMILIES.get(family)
    model = build_model(fam, {}, (1, 8, 8), 10).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 8, 8)).shape == (1, 10)


def test_a_plugin_builder_is_a_family(tmp_path, monkeypatch):
    (tmp_path / "contract_plugin_net.py").write_text(
        "from torch import nn\n\n"
        "def build(params, input_shape, num_classes):\n"
        "    return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    fam = resolve_family("contract_plugin_net:build")
    assert fam.extra_ok and fam.params == {}
    with torch.no_grad():
        assert build_model(fam, {"any": 1}, (1, 8, 8), 4)(torch.randn(2, 1, 8, 8)).shape == (2, 4)
    with pytest.raises(UserError, match="no attribute 'nope'") as err:
        build_model(resolve_family("contract_plugin_net:nope"), {}, (1, 8, 8), 4)
    assert err.value.key == "task.model"


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
