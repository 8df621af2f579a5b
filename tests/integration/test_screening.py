"""Screening before training with real compiles and timings: constraint-first, predicted skips, drift
re-timing, and what Optuna is told."""

from __future__ import annotations

import optuna
import pytest
import torch

import autotune
from autotune.evaluate import evaluate
from autotune.kernel_table import KernelTable, table_path
from autotune.models import build_model
from autotune.predictor import (
    environment_key,
    fit_history,
    history_path,
    load_history,
    record_measurement,
    structure_features,
)
from autotune.screening import Screening
from autotune.task import make_trial_config, prepare_task

pytestmark = [pytest.mark.slow, pytest.mark.tvm]


def _tight_space(repo, tmp_path, latency_max: float):
    text = (repo / "tests/fixtures/tiny_cnn.yaml").read_text()
    text = text.replace("constraints: {latency_ms: {max: 50}}", f"constraints: {{latency_ms: {{max: {latency_max}}}}}")
    path = tmp_path / "tight.yaml"
    path.write_text(text)
    return path


@pytest.mark.ray
def test_a_constraint_no_candidate_meets_trains_nothing(tmp_path, repo):
    space = _tight_space(repo, tmp_path, 0.0001)  # 0.1 µs: no network meets it
    results = tmp_path / "results"
    rows = autotune.search(
        space, repo / "tests/fixtures/host_fast.yaml", name="tight", results_dir=results, trials=3,
        concurrency=1, reference_every=1,
    )  # fmt: skip
    assert len(rows) == 3
    for row in rows:
        assert row["status"] == "infeasible" and row["screened"] == "constraint-first", row
        assert row["train_s"] == 0 and row["epochs"] == 0 and row.get("accuracy") is None
        # the row names its own measured latency as the violation (no threshold on a timing here)
        assert row["violations"] == f"latency_ms={row['latency_ms']:.6g}>0.0001"
        assert row["reference_latency_ms"] > 0 and row["drift"] is not None
    assert rows[0]["drift"] == 0  # the first re-timing is the baseline
    # Optuna learned the constraint: PRUNED (no objective values) with a positive violation
    study = optuna.load_study(study_name="autotune", storage=f"sqlite:///{results / 'tight' / 'study.db'}")
    assert [t.state.name for t in study.trials] == ["PRUNED"] * 3
    assert all(t.constraints["latency_ms"] > 0 for t in study.trials)
    # the untrained timings went to the profile's predictor history
    profile = autotune.load_profile(repo / "tests/fixtures/host_fast.yaml")
    hist = history_path(profile, results)
    assert hist.exists() and len(hist.read_text().splitlines()) == 3
    # ... with their kernels, timed into the profile's kernel table (a profile with no history)
    recs = load_history(hist, environment_key(profile))
    assert all(r["kernels"] and r["new_kernels"] is not None for r in recs)
    table = KernelTable.load(table_path(profile, results), environment_key(profile))
    assert len(table) == sum(r["new_kernels"] for r in recs) > 0
    assert {k["key"] for r in recs for k in r["kernels"]} == set(table.entries)


def test_a_confident_prediction_skips_the_candidate(tmp_path, repo):
    space = autotune.load_space(_tight_space(repo, tmp_path, 0.5))
    profile = autotune.load_profile(repo / "tests/fixtures/host_fast.yaml")
    task = prepare_task(space, profile)
    key = environment_key(profile)
    hist = history_path(profile, tmp_path)
    # a history in which every network of this shape took 100 ms (e.g. a much slower device)
    torch.manual_seed(0)
    arch = {"stages": 1, "width_mult": 0.5, "kernel_0": 3, "expand": 2, "se": False, "act": "relu"}
    for i in range(40):
        model = build_model(task.family, {**arch, "stages": 1 + i % 2, "kernel_1": 3}, (1, 8, 8), 10)
        record_measurement(hist, key, structure_features(model, (1, 8, 8)), 100.0 + i)
    predictor = fit_history(hist, key)
    assert predictor.ready and predictor.samples_ == 40
    params = {f"arch.{k}": v for k, v in arch.items()} | {"train.optimizer": "adam", "train.lr": 0.005}
    cfg = make_trial_config(params, space, trial_id="p0", seed=0)
    row = evaluate(cfg, task, work_dir=tmp_path / "p0", screening=Screening(predictor=predictor, history=hist, key=key))
    assert row["status"] == "infeasible" and row["screened"] == "predicted"
    assert row["latency_pred_ms"] > 50 and row.get("latency_ms") is None
    assert row["train_s"] == 0 and row["violations"].startswith("latency_ms~")
    assert not (tmp_path / "p0" / "weights.pt").exists()  # never trained

    # without screening the same candidate is trained, compiled and timed, and meets the 0.5 ms bound
    plain = evaluate(cfg, task, work_dir=tmp_path / "p1")
    assert plain["status"] == "ok" and plain["train_s"] > 0 and not plain["violations"]
    assert "latency_pred_ms" not in plain
