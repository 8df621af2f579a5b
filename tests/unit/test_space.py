"""Define-by-run sampling: conditions, per-stage parameters, constants."""

from __future__ import annotations

import optuna
import pytest

import autotune
from autotune.space import sample_params, split_params
from autotune.task import make_trial_config

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture
def space(write_yaml):
    return autotune.load_space(
        write_yaml(
            """
            task: {data: digits, model: mobilenet}
            arch:
              stages: {type: int, low: 1, high: 4}
              kernel: {type: categorical, choices: [3, 5, 7], per_stage: true}
              width_mult: {type: float, low: 0.5, high: 1.5, step: 0.25}
              expand: 4
            train:
              momentum: {type: float, low: 0.5, high: 0.9, when: {optimizer: [momentum, nesterov]}}
              optimizer: {type: categorical, choices: [momentum, nesterov, adam]}
              lr: {type: float, low: 0.0001, high: 0.1, log: true}
              epochs: 3
            objectives: {accuracy: max, latency_ms: min}
            """
        )
    )


def _samples(space, n=40):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    out = []
    for _ in range(n):
        trial = study.ask()
        out.append(sample_params(space, trial))
        study.tell(trial, 0.0)
    return out


def test_condition_activates_only_with_its_value(space):
    seen = set()
    for p in _samples(space):
        opt = p["train.optimizer"]
        seen.add(opt)
        assert ("train.momentum" in p) == (opt in ("momentum", "nesterov"))
        if "train.momentum" in p:
            assert 0.5 <= p["train.momentum"] <= 0.9
    assert seen == {"momentum", "nesterov", "adam"}


def test_per_stage_parameter_has_one_value_per_stage(space):
    for p in _samples(space):
        stages = p["arch.stages"]
        kernels = [k for k in p if k.startswith("arch.kernel_")]
        assert len(kernels) == stages
        assert all(p[k] in (3, 5, 7) for k in kernels)


def test_ranges_steps_and_constants(space):
    for p in _samples(space):
        assert p["arch.width_mult"] in (0.5, 0.75, 1.0, 1.25, 1.5)
        assert 1e-4 <= p["train.lr"] <= 0.1
        assert p["arch.expand"] == 4 and p["train.epochs"] == 3


def test_trial_config_fills_defaults(space):
    p = _samples(space, 1)[0]
    cfg = make_trial_config(p, space, trial_id="t", seed=3)
    assert cfg.train["batch_size"] == 64  # default
    assert cfg.train["epochs"] == 3  # the space's constant
    assert cfg.arch["stages"] == p["arch.stages"]
    assert "dropout" in cfg.arch
    assert split_params(p, "arch")["stages"] == p["arch.stages"]
