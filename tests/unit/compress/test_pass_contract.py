"""The compression-pass contract, run against every entry of ``PASSES``: a new pass is tested the day
it is registered. Each pass, at its default settings on a small model, keeps the output shape,
leaves the model it is given untouched, is deterministic for a seed, reports only leaderboard
columns, and answers the questions the pipeline asks it (``changes_structure``, ``deployment``)."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import SMALL_MOBILENET as ARCH

from autotune.compress import PASSES, CompressContext
from autotune.compress.base import Prepared
from autotune.config.search_space import SearchSpace
from autotune.data import load_data
from autotune.leaderboard import COLUMNS
from autotune.models import build_model, resolve_family
from autotune.quiet import QuietLock
from autotune.records import Deployment, PassReport

#: Settings a pass needs beyond its defaults (a key without a default, or one of a pair).
REQUIRED = {"distill": {"teacher": {}}, "lowrank": {"rank_ratio": 0.5}}


@pytest.fixture(scope="module")
def digits():
    return load_data("digits", val=0.2, test=0.2, seed=0)


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(resolve_family("mobilenet"), ARCH, (1, 8, 8), 10).eval()


def _settings(name: str):
    cls = PASSES.get(name)
    return cls.Settings.model_validate({**cls.Settings.defaults(), **REQUIRED.get(name, {})})


def _ctx(digits, tmp_path) -> CompressContext:
    space = SearchSpace.model_validate(
        {"task": {"data": "digits", "model": "mobilenet"}, "arch": ARCH, "objectives": {"accuracy": "max"}}
    )
    return CompressContext(space=space, data=digits, train=None, seed=0, cache_dir=tmp_path, lock=QuietLock(None))


@pytest.mark.parametrize("name", PASSES.names())
def test_pass_keeps_shape_leaves_input_untouched_and_is_deterministic(name, digits, tmp_path):
    step, settings = PASSES.get(name)(), _settings(name)
    ctx = _ctx(digits, tmp_path)
    model = _model()
    before = copy.deepcopy(model.state_dict())
    x = torch.from_numpy(digits.x_test[:4])
    with torch.no_grad():
        want = model(x)

    out, report = step.apply(model, settings, ctx)
    again, _ = step.apply(model, settings, ctx)

    assert out is not model
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "apply changed its input"
    with torch.no_grad():
        got, got_again = out.eval()(x), again.eval()(x)
    assert got.shape == want.shape
    assert torch.equal(got, got_again), "not deterministic for a seed"
    assert isinstance(report, PassReport) and report.name == name
    assert set(report.columns) <= set(COLUMNS), "a pass reports leaderboard columns only"


@pytest.mark.parametrize("name", PASSES.names())
def test_pass_answers_the_pipeline(name):
    step, settings = PASSES.get(name)(), _settings(name)
    assert isinstance(step.changes_structure(settings), bool)
    d = step.deployment(settings)
    assert d is None or isinstance(d, Deployment)
    assert isinstance(PASSES.get(name).order, int)


def test_prepare_defaults_to_nothing():
    step = PASSES.get("prune")()
    assert step.prepare(_settings("prune"), None) == Prepared()
