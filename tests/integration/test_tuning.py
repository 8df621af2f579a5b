"""MetaSchedule tuning into a per-profile database: tuned code matches PyTorch, a repeat measures nothing,
concurrent tuners leave the database whole, and TVM errors fail the candidate."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import autotune
from autotune.compiler import compile_artifact, resolve_target
from autotune.errors import CandidateFailed
from autotune.exporter import export_program
from autotune.models import MODEL_FAMILIES, build_model
from autotune.numerics import check_numerics
from autotune.quiet import QuietLock
from autotune.tuning import TuningDatabase, TuningRequest
from autotune.tuning.session import Session

pytestmark = [pytest.mark.slow, pytest.mark.tvm]

SHAPE = (1, 8, 8)

#: One tuning in a fresh process: a tiny MobileNet of width argv[1] into the database argv[2].
TUNE_ONE = """
import dataclasses, json, sys
import torch
import autotune
from autotune.compiler import compile_artifact
from autotune.exporter import export_program
from autotune.models import MODEL_FAMILIES, build_model
from autotune.quiet import QuietLock
from autotune.tuning import TuningRequest

width, db, run, out = sys.argv[1:]
torch.manual_seed(0)
model = build_model(MODEL_FAMILIES.get("mobilenet"), {"stages": 1, "width_mult": float(width)}, (1, 8, 8), 10)
program, _, _ = export_program(model.eval(), (1, 8, 8))
profile = autotune.load_profile("tests/fixtures/host_fast.yaml")
request = TuningRequest(trials=8, db_dir=db, lock=QuietLock(run))
art = compile_artifact(program, profile=profile, out_dir=out, input_shape=(1, 8, 8), tuning=request)
print(json.dumps(dataclasses.asdict(art)))
"""


@pytest.fixture(scope="module", autouse=True)
def _tvm_threads():
    """Measure as a search worker does (``trial.worker_env``), for this process and its tuning workers."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TVM_NUM_THREADS", "1")
        mp.setenv("TVM_BIND_THREADS", "0")
        yield


@pytest.fixture
def profile(repo):
    return autotune.load_profile(repo / "tests/fixtures/host_fast.yaml")


def _tiny(width_mult: float):
    torch.manual_seed(0)
    model = build_model(MODEL_FAMILIES.get("mobilenet"), {"stages": 1, "width_mult": width_mult}, SHAPE, 10)
    program, exported, _ = export_program(model.eval(), SHAPE)
    return program, exported


def test_tuned_model_matches_pytorch_and_a_repeat_measures_nothing(tmp_path, profile):
    program, exported = _tiny(0.5)
    db = TuningDatabase(tmp_path / "db")
    lock = QuietLock(tmp_path / "run")
    request = TuningRequest(trials=16, db_dir=str(db.directory), lock=lock)

    cold = compile_artifact(program, profile=profile, out_dir=tmp_path / "cold", input_shape=SHAPE, tuning=request)
    assert (cold.tune_db_hits, cold.tune_db_misses) == (0, 2)  # 16 trials = two rounds of 8 on the two heaviest
    assert 0 < cold.tuned_trials <= 16 + 2 and cold.tune_s > 0  # trials, and each workload's default schedule
    records = db.record_count()
    assert records == cold.tuned_trials
    xs = np.random.default_rng(0).standard_normal((8, *SHAPE)).astype(np.float32)
    numerics = check_numerics(cold, exported, xs, profile=profile)
    assert numerics.max_abs_diff < 1e-4 and numerics.top1_agreement == 1.0

    warm = compile_artifact(program, profile=profile, out_dir=tmp_path / "warm", input_shape=SHAPE, tuning=request)
    assert (warm.tune_db_hits, warm.tune_db_misses, warm.tuned_trials) == (2, 0, 0)
    assert db.record_count() == records
    assert warm.artifact_bytes == cold.artifact_bytes  # the same schedules, applied from the database

    untuned = compile_artifact(program, profile=profile, out_dir=tmp_path / "untuned", input_shape=SHAPE)
    assert (untuned.tune_s, untuned.tuned_trials, untuned.tune_db_hits, untuned.tune_db_misses) == (0, 0, 0, 0)
    # the cold build took its tuned kernels from the database: each workload's best record, a tuned
    # schedule or its default one when no trial beat it (then the code equals the untuned build's)
    assert cold.tuned_share > 0 and untuned.tuned_share == 0

    free = compile_artifact(
        program,
        profile=profile,
        out_dir=tmp_path / "free",
        input_shape=SHAPE,
        tuning=TuningRequest(trials=0, db_dir=str(db.directory)),
    )
    assert free.tuned_trials == 0 and free.artifact_bytes == cold.artifact_bytes  # known schedules, no trials


def _record_means(db: TuningDatabase) -> dict[str, list[float]]:
    """Per workload key: the mean seconds of each of its records in the database."""
    keys = [json.loads(line)[0] for line in db.workload_file.read_text().splitlines() if line.strip()]
    means: dict[str, list[float]] = {}
    for line in db.record_file.read_text().splitlines():
        index, (_, run_secs, *_) = json.loads(line)
        if run_secs:
            means.setdefault(keys[index], []).append(sum(run_secs) / len(run_secs))
    return means


def test_large_budget_is_guided_by_measured_latency(tmp_path, profile, monkeypatch):
    """One round per workload, then the rest to the workload that took longest per inference; the plan is
    kept, so a repeat measures nothing and a larger budget only tops up."""
    import autotune.tuning.plan

    monkeypatch.setattr(autotune.tuning.plan, "GUIDED_MIN_ROUNDS", 1)  # guided from 1 round per workload: a short test
    seen: dict[str, float | None] = {}  # the latencies the last stage planned on
    real = Session.latency_s

    def spy(self, key):
        seen[key] = real(self, key)
        return seen[key]

    monkeypatch.setattr(Session, "latency_s", spy)
    program, exported = _tiny(0.5)  # 6 workloads, one called twice
    db = TuningDatabase(tmp_path / "db")
    request = TuningRequest(trials=56, db_dir=str(db.directory))
    cold = compile_artifact(program, profile=profile, out_dir=tmp_path / "cold", input_shape=SHAPE, tuning=request)
    # 56 trials and the 6 workloads' default schedules, each measured once (the floor tuning must beat)
    assert (cold.tune_db_hits, cold.tune_db_misses, cold.tuned_trials) == (0, 6, 62) == (0, 6, db.record_count())
    ledger = json.loads(db.ledger_file.read_text())
    (plan,) = ledger["plans"].values()
    assert plan["trials"] == 56 and sorted(plan["budgets"].values()) == [8, 8, 8, 8, 8, 16]
    calls = {k: 2 if v["task"] == "fused_conv2d1_add1_relu1" else 1 for k, v in ledger["workloads"].items()}
    heaviest = max(seen, key=lambda k: seen[k] * calls[k])
    assert plan["budgets"][heaviest] == 16  # the extra round went where the measured time per inference was
    means = _record_means(db)
    assert all(any(math.isclose(seen[k], m) for m in means[k]) for k in calls)  # measured, from the database
    xs = np.random.default_rng(0).standard_normal((8, *SHAPE)).astype(np.float32)
    assert check_numerics(cold, exported, xs, profile=profile).max_abs_diff < 1e-4

    warm = compile_artifact(program, profile=profile, out_dir=tmp_path / "warm", input_shape=SHAPE, tuning=request)
    assert (warm.tune_db_hits, warm.tune_db_misses, warm.tuned_trials) == (6, 0, 0)
    assert db.record_count() == 62
    smaller = TuningRequest(trials=48, db_dir=str(db.directory))  # covered by the larger plan
    less = compile_artifact(program, profile=profile, out_dir=tmp_path / "less", input_shape=SHAPE, tuning=smaller)
    assert (less.tuned_trials, less.tune_db_hits) == (0, 6)
    larger = TuningRequest(trials=64, db_dir=str(db.directory))
    top = compile_artifact(program, profile=profile, out_dir=tmp_path / "top", input_shape=SHAPE, tuning=larger)
    assert top.tuned_trials in (8, 16) and db.record_count() == 62 + top.tuned_trials  # 2 more rounds, 1 may be had
    plans = json.loads(db.ledger_file.read_text())["plans"]
    assert [p["trials"] for p in plans.values()] == [64] and sum(plans[next(iter(plans))]["budgets"].values()) >= 64


def test_concurrent_tunings_leave_the_database_whole(tmp_path, repo, profile):
    from tvm.s_tir import meta_schedule as ms

    db = TuningDatabase(tmp_path / "db")
    widths = ("0.5", "0.75", "0.5")  # two models, one of them twice: its workload is tuned once
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", TUNE_ONE, width, str(db.directory), str(tmp_path / "run"), str(tmp_path / str(i))],
            cwd=repo,
            env=os.environ.copy(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, width in enumerate(widths)
    ]
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err[-3000:]
    arts = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    assert arts[1]["tune_db_misses"] == 1 and arts[1]["tuned_trials"] > 0
    twice = sorted((a["tune_db_hits"], a["tune_db_misses"], a["tuned_trials"] > 0) for a in (arts[0], arts[2]))
    assert twice == [(0, 1, True), (1, 0, False)]  # the later one found the earlier one's records

    records = db.record_count()
    assert records == sum(a["tuned_trials"] for a in arts)
    database = ms.database.JSONDatabase(work_dir=str(db.directory), allow_missing=False)  # every line parses
    assert len(database) == records
    with db.reading():
        ledger = db.tuned_trials(str(resolve_target(profile)))
    assert len(ledger) == 2 and set(ledger.values()) == {8}

    for width in (0.5, 0.75):
        program, _ = _tiny(width)
        request = TuningRequest(trials=8, db_dir=str(db.directory))
        again = compile_artifact(
            program, profile=profile, out_dir=tmp_path / "again", input_shape=SHAPE, tuning=request
        )
        assert (again.tune_db_hits, again.tune_db_misses, again.tuned_trials) == (1, 0, 0)
    assert db.record_count() == records


@pytest.mark.parametrize("where", ["extract_tasks", "tune_tasks"])
def test_tvm_error_while_tuning_fails_the_candidate(tmp_path, profile, monkeypatch, where):
    import tvm
    from tvm.s_tir import meta_schedule as ms

    def boom(*args, **kwargs):
        raise tvm.error.InternalError("boom")

    monkeypatch.setattr(ms.relax_integration if where == "extract_tasks" else ms.tune, where, boom)
    program, _ = _tiny(0.5)
    db = TuningDatabase(tmp_path / "db")
    with pytest.raises(CandidateFailed, match="boom") as err:
        compile_artifact(
            program,
            profile=profile,
            out_dir=tmp_path,
            input_shape=SHAPE,
            tuning=TuningRequest(trials=8, db_dir=str(db.directory)),
        )
    assert err.value.stage == "tune"
    assert db.record_count() == 0 and not list(db.directory.glob(".staging-*"))
