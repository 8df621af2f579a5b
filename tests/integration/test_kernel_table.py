"""The kernel table with real compiles: a candidate's kernels found before compiling are those it is
compiled into, each timed once from the candidate's own library and reused by the next candidate, and
a kernel-level prediction made inside a trial."""

from __future__ import annotations

import numpy as np
import pytest

import autotune
from autotune.blend import WEIGHTS, Blend, choose
from autotune.compiler import compile_artifact
from autotune.compiler.kernels import candidate_workloads
from autotune.compiler.workloads import read_workloads
from autotune.evaluate import evaluate
from autotune.exporter import export_program
from autotune.kernel_predictor import fit_kernels
from autotune.kernel_table import KernelTable, table_path
from autotune.measure import RUNNERS
from autotune.models import build_model
from autotune.predictor import (
    MIN_TO_PREDICT,
    LatencyPredictor,
    environment_key,
    history_path,
    load_history,
    structure_features,
)
from autotune.screening import Screening, predict, record
from autotune.task import make_trial_config, prepare_task

pytestmark = [pytest.mark.slow, pytest.mark.tvm]

ARCHS = [
    {"stages": s, "width_mult": w, "kernel_0": k0, "kernel_1": k1, "expand": 2, "se": se, "act": "relu"}
    for s, w, k0, k1, se in [
        (1, 0.5, 3, 3, False), (1, 0.5, 5, 3, False), (2, 0.5, 3, 3, False), (2, 0.5, 3, 5, False),
        (2, 0.75, 3, 3, False), (1, 0.75, 5, 3, True), (2, 0.75, 5, 5, True), (2, 0.5, 5, 5, True),
        (1, 0.5, 3, 3, True),
    ]
]  # fmt: skip


def test_kernels_are_timed_once_reused_and_predict_a_trial(tmp_path, repo):
    space = autotune.load_space(repo / "tests/fixtures/tiny_cnn.yaml")
    profile = autotune.load_profile(repo / "tests/fixtures/host_fast.yaml")
    task = prepare_task(space, profile)
    shape = task.data.input_shape
    key, hist, tpath = environment_key(profile), history_path(profile, tmp_path), table_path(profile, tmp_path)
    screening = Screening(history=hist, key=key, table=tpath)
    timed_before = 0
    for i, arch in enumerate([*ARCHS, ARCHS[0]]):
        model = build_model(task.family, arch, shape, task.data.num_classes).eval()
        program, _, _ = export_program(model, shape)
        predicted = candidate_workloads(program, profile)
        art = compile_artifact(program, profile=profile, out_dir=tmp_path / str(i), input_shape=shape)
        compiled = read_workloads(tmp_path / str(i))
        assert sorted((w.key, w.calls) for w in predicted) == sorted((w.key, w.calls) for w in compiled)
        assert all(w.flops >= 0 and w.bytes > 0 and w.kind for w in compiled)
        before = KernelTable.load(tpath, key)
        new = {w.key for w in before.missing(compiled)}
        latency = RUNNERS.get("local").measure(art, profile, task.data.x_test[:1]).latency_ms
        row = {"run": "t", "trial_id": str(i), "latency_ms": latency, "timing": "measured"}
        record(screening, structure_features(model, shape), row, artifact=art, profile=profile)
        after = KernelTable.load(tpath, key)
        assert set(after.entries) == set(before.entries) | new  # only the new kernels were timed
        described = {w.key: (w.kind, w.flops, w.bytes, w.args) for w in compiled}
        assert all(
            (e.kind, e.flops, e.bytes, e.args) == described[e.key] for e in after.entries.values() if e.key in new
        )
        timed_before += len(new)
    assert not new  # the last candidate repeats the first: nothing left to time
    recs = load_history(hist, key)
    assert len(recs) == len(ARCHS) + 1 and recs[-1]["new_kernels"] == 0
    assert sum(r["new_kernels"] for r in recs) == len(KernelTable.load(tpath, key)) == timed_before
    with open(tpath, "a") as f:
        f.write('{"key": "0123')  # a kill mid-line
    assert len(KernelTable.load(tpath, key)) == timed_before

    predictor = fit_kernels(hist, tpath, key)
    assert predictor.ready and predictor.samples_ == len(recs) >= MIN_TO_PREDICT
    cfg = make_trial_config(
        {f"arch.{k}": v for k, v in ARCHS[3].items()} | {"train.optimizer": "adam", "train.lr": 0.005},
        space,
        trial_id="p0",
        seed=0,
    )
    trial = Screening(predictor=None, kernels=predictor, history=hist, key=key, table=tpath, constraint_first=False)
    row = evaluate(cfg, task, work_dir=tmp_path / "p0", screening=trial)
    assert row["status"] == "ok" and row["latency_pred_model"] == "kernels"
    assert isinstance(row["latency_pred_ms"], float)  # predicted from the table, before training
    assert load_history(hist, key)[-1]["new_kernels"] == 0  # its kernels were all in the table

    recs = load_history(hist, key)  # a blend of both predictors, fitted on the same records
    network = LatencyPredictor().fit([r["features"] for r in recs], [r["latency_ms"] for r in recs])
    kernels = fit_kernels(hist, tpath, key, records=recs)
    both = np.isfinite(network.cv_log_ratios_) & np.isfinite(kernels.cv_log_ratios_)
    assert both.all() and len(both) == len(recs)  # every record scored by both, in the same order
    assert choose(network, kernels).weight in WEIGHTS
    blend = Blend(0.25, 0.05, network.sigma_, kernels.sigma_)
    model = build_model(task.family, ARCHS[4], shape, task.data.num_classes).eval()
    trial = Screening(predictor=network, kernels=kernels, blend=blend, key=key, constraint_first=False)
    features, pred = predict(trial, model, shape, "fp32", profile)
    program, _, _ = export_program(model, shape)
    alone = kernels.predict(candidate_workloads(program, profile)), network.predict(features)
    assert pred.source == "blend" and pred.sigma >= blend.sigma
    assert pred.latency_ms == pytest.approx(alone[0].latency_ms ** 0.25 * alone[1].latency_ms ** 0.75, rel=1e-9)
