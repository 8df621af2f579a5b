"""Warm start from an earlier run's leaderboard: front enqueued, finished trials as priors,
incompatible parameters dropped and counted."""

from __future__ import annotations

import pytest

import autotune
from autotune.leaderboard import write_csv
from autotune.space import distribution_of, param_specs
from autotune.warmstart import warm_start

SPACE = """
task: {data: digits, model: mobilenet}
arch:
  stages: {type: int, low: 1, high: 3}
  kernel: {type: categorical, choices: [3, 5], per_stage: true}
  se: {type: categorical, choices: [false, true]}
  stem_channels: 16
train:
  lr: {type: float, low: 0.001, high: 0.01, log: true}
  epochs: 5
objectives: {accuracy: max, latency_ms: min}
"""


def _row(i, rank, status="ok", **params):
    base = {"arch.stages": 2, "arch.kernel_0": 3, "arch.kernel_1": 5, "arch.se": True, "train.lr": 0.003}
    return {"trial_id": f"t{i}", "status": status, "pareto_rank": rank, "val_accuracy": 0.9 + i / 100,
            "latency_ms": 0.1 * (i + 1), **base, **params}  # fmt: skip


@pytest.fixture
def earlier(tmp_path):
    run = tmp_path / "earlier"
    run.mkdir()
    rows = [
        _row(0, 1),
        _row(1, 2, **{"arch.stages": 3, "arch.kernel_2": 3}),
        _row(2, 1, **{"arch.width_mult": 0.75}),  # a parameter the new space does not search
        _row(3, None, status="failed"),
        _row(4, 2, **{"train.lr": 0.5}),  # outside the new range
    ]
    write_csv(rows, run / "leaderboard.csv")
    return run


def test_front_is_enqueued_and_finished_trials_are_priors(write_yaml, earlier):
    space = autotune.load_space(write_yaml(SPACE))
    ws = warm_start(earlier, space)
    assert [p["arch.stages"] for p in ws.enqueue] == [2, 2]  # the two rank-1 rows
    assert "arch.width_mult" not in ws.enqueue[1]
    assert len(ws.priors) == 2  # t0 and t1 fit entirely; t2 lost a parameter, t4 a value; t3 failed
    assert ws.priors[0]["values"] == [0.9, pytest.approx(0.1)]
    assert set(ws.priors[1]["params"]) >= {"arch.kernel_2", "train.lr"}
    assert ws.dropped == {"arch.width_mult": 1, "train.lr": 1}


def test_distribution_checks_value_and_per_stage_keys(write_yaml):
    specs = param_specs(autotune.load_space(write_yaml(SPACE)))
    assert distribution_of(specs, "arch.kernel_1", 5) is not None
    assert distribution_of(specs, "arch.kernel_1", 7) is None
    assert distribution_of(specs, "arch.stages", 4) is None
    assert distribution_of(specs, "arch.nope", 1) is None
    assert distribution_of(specs, "train.lr", 0.002).log


def test_not_a_run_is_a_clear_error(tmp_path, write_yaml):
    space = autotune.load_space(write_yaml(SPACE))
    with pytest.raises(autotune.UserError, match="not a run directory"):
        warm_start(tmp_path, space)
