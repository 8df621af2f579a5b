"""Tuning bookkeeping without TVM: the profile section, budgets, hits and misses, the ledger, the locks."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

import autotune
from autotune.config.device_profile import Tuning
from autotune.errors import UserError
from autotune.tuning import (
    TuningDatabase,
    Workload,
    allocate_trials,
    database_dir,
    guided,
    model_key,
    plan_guided,
    plan_tuning,
)

PROFILE = """
name: p
target: {host: true}
power: {idle_w: 1, active_w: 2, source: datasheet}
"""

TARGET = '{"kind":"llvm","keys":["cpu"],"num-cores":2}'


def test_tuning_is_off_by_default(write_yaml):
    tuning = autotune.load_profile(write_yaml(PROFILE)).tuning
    assert tuning == Tuning()
    assert (tuning.trials_per_candidate, tuning.finalists, tuning.trials_per_finalist) == (0, 0, 0)
    assert tuning.database is None


def test_tuning_section_loads(write_yaml):
    text = PROFILE + "tuning: {trials_per_candidate: 32, finalists: 3, trials_per_finalist: 256, database: db}\n"
    tuning = autotune.load_profile(write_yaml(text)).tuning
    assert (tuning.trials_per_candidate, tuning.finalists, tuning.trials_per_finalist) == (32, 3, 256)
    assert tuning.database == "db"


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ("{trials_per_candidate: -1}", "tuning.trials_per_candidate"),
        ("{trials_per_candidate: many}", "tuning.trials_per_candidate"),
        ("{trails_per_candidate: 8}", "tuning.trails_per_candidate"),
        ("{finalists: 3}", "tuning"),
        ("{trials_per_finalist: 64}", "tuning"),
        ("{database: ''}", "tuning.database"),
    ],
)
def test_bad_tuning_section_names_the_key(write_yaml, section, key):
    with pytest.raises(UserError, match=key):
        autotune.load_profile(write_yaml(PROFILE + f"tuning: {section}\n"))


def test_tuning_measures_where_the_runner_runs(write_yaml):
    text = PROFILE.replace("{host: true}", "{kind: llvm, mtriple: aarch64-linux-gnu}") + "compiler: gcc\n"
    with pytest.raises(UserError, match="a cross-compiled target needs the rpc runner"):
        autotune.load_profile(write_yaml(text + "tuning: {trials_per_candidate: 8}\n"))
    assert autotune.load_profile(write_yaml(text)).tuning.trials_per_candidate == 0
    rpc = text + "runner: {kind: rpc, tracker: '127.0.0.1:9190', key: pi}\ntuning: {trials_per_candidate: 8}\n"
    assert autotune.load_profile(write_yaml(rpc)).tuning.trials_per_candidate == 8  # tuned on the device
    gpu = PROFILE.replace("{host: true}", "{kind: cuda, arch: sm_80}") + "tuning: {trials_per_candidate: 8}\n"
    with pytest.raises(UserError, match="tuning needs an llvm"):
        autotune.load_profile(write_yaml(gpu))


def test_database_dir(write_yaml, tmp_path):
    profile = autotune.load_profile(write_yaml(PROFILE))
    assert database_dir(profile, tmp_path / "results") == tmp_path / "results" / "tuning_db" / "p"
    mine = profile.model_copy(update={"tuning": Tuning(database="/data/tdb")})
    assert database_dir(mine, tmp_path) == Path("/data/tdb")


def test_allocate_trials_follows_flops_in_whole_rounds():
    out = allocate_trials(64, [600.0, 300.0, 100.0, 0.0], step=8)
    assert sum(out) == 64 and all(n % 8 == 0 for n in out)
    assert out[0] > out[1] > out[2] and out[3] == 0


def test_allocate_trials_edges():
    assert allocate_trials(0, [1.0, 2.0]) == [0, 0]
    assert allocate_trials(16, [0.0, 0.0]) == [0, 0]
    assert allocate_trials(5, [1.0, 3.0], step=8) == [0, 5]  # less than a round: the heaviest task
    assert allocate_trials(20, [1.0, 3.0], step=8) == [8, 12]  # the rest goes to the heaviest task
    assert allocate_trials(16, [1.0, 1.0, 1.0], step=8) == [8, 8, 0]  # ties: first come


WORKLOADS = [Workload("a", "conv_a", 700.0), Workload("b", "conv_b", 300.0), Workload("c", "reshape", 0.0)]


def test_plan_fresh_database_misses_everything_with_a_budget():
    plan = plan_tuning(WORKLOADS, 16, {})
    assert plan.budgets == {"a": 8, "b": 8} and plan.todo == {"a": 8, "b": 8}
    assert (plan.hits, plan.misses) == (0, 2)


def test_plan_same_budget_again_is_all_hits():
    plan = plan_tuning(WORKLOADS, 16, {"a": 8, "b": 8})
    assert plan.todo == {} and (plan.hits, plan.misses) == (2, 0)


def test_plan_larger_budget_tops_up():
    plan = plan_tuning(WORKLOADS, 32, {"a": 8, "b": 8})
    assert plan.budgets == {"a": 24, "b": 8}
    assert plan.todo == {"a": 16} and (plan.hits, plan.misses) == (1, 1)


def test_plan_zero_trials_tunes_nothing():
    plan = plan_tuning(WORKLOADS, 0, {})
    assert plan.budgets == {} and (plan.hits, plan.misses) == (0, 0)


def test_guided_needs_four_rounds_per_distinct_workload():
    assert guided(WORKLOADS, 96) and not guided(WORKLOADS, 95)
    assert guided(WORKLOADS + [WORKLOADS[0]], 96)  # a repeated workload is one task
    assert not guided([], 1000)


def test_plan_guided_gives_one_round_each_then_follows_latency_not_flops():
    # b has fewer FLOPs than a but takes three times as long per call: it gets the larger share
    plan = plan_guided(WORKLOADS, 96, {"a": 8, "b": 8, "c": 8}, {"a": 1e-3, "b": 3e-3, "c": 1e-4})
    assert sum(plan.budgets.values()) == 96 and all(n >= 8 and n % 8 == 0 for n in plan.budgets.values())
    assert plan.budgets["b"] > plan.budgets["a"] > plan.budgets["c"] == 8
    assert plan.todo == {k: n - 8 for k, n in plan.budgets.items() if n > 8}


def test_plan_guided_weighs_latency_by_calls():
    twice = [Workload("a", "conv_a", 1400.0, calls=2), Workload("b", "conv_b", 300.0)]
    plan = plan_guided(twice, 80, {}, {"a": 1e-3, "b": 1.5e-3})  # a: 2 ms per inference, b: 1.5 ms
    assert plan.budgets["a"] > plan.budgets["b"] and sum(plan.budgets.values()) == 80


def test_plan_guided_estimates_unmeasured_workloads_from_flops():
    # c has no valid schedule: it is estimated at a's FLOP rate (700 FLOPs in 1 ms), 1400 FLOPs → 2 ms
    ws = [Workload("a", "conv_a", 700.0), Workload("c", "conv_c", 1400.0)]
    plan = plan_guided(ws, 64, {}, {"a": 1e-3, "c": None})
    assert plan.budgets["c"] > plan.budgets["a"]
    assert plan_guided(ws, 64, {}, {}).budgets == plan.budgets  # nothing measured: FLOPs alone


def test_plan_guided_keeps_what_was_tuned_beyond_the_share():
    plan = plan_guided(WORKLOADS, 96, {"a": 200, "b": 8, "c": 8}, {"a": 1e-3, "b": 3e-3, "c": 1e-4})
    assert "a" not in plan.todo and plan.hits >= 1


def test_model_key_ignores_order_and_repeats_but_not_calls():
    a, b = WORKLOADS[:2]
    assert model_key([a, b]) == model_key([b, a, b]) != model_key([a])
    assert model_key([a, b]) != model_key([Workload("a", "conv_a", 700.0, calls=2), b])


def test_ledger_keeps_the_largest_guided_plan_per_model(tmp_path):
    db = TuningDatabase(tmp_path / "db")
    with db.writing():
        db.credit(TARGET, {"a": ("conv_a", 40)}, plan=("m", 96, {"a": 40, "b": 56}))
        db.credit(TARGET, {}, plan=("m", 64, {"a": 8, "b": 56}))  # smaller: the larger plan stays
    with db.reading():
        assert db.stored_plan("m") == (96, {"a": 40, "b": 56}) and db.stored_plan("other") is None
        assert db.tuned_trials(TARGET) == {"a": 40}


def test_ledger_keeps_the_largest_budget_per_workload(tmp_path):
    db = TuningDatabase(tmp_path / "db")
    with db.reading():
        assert db.tuned_trials(TARGET) == {}
    with db.writing():
        db.credit(TARGET, {"a": ("conv_a", 16), "b": ("conv_b", 8)})
        db.credit(TARGET, {"a": ("conv_a", 8)})
    with db.reading():
        assert db.tuned_trials(TARGET) == {"a": 16, "b": 8}
    assert [p.name for p in db.directory.iterdir() if p.suffix == ".tmp"] == []


def test_ledger_refuses_another_target(tmp_path):
    db = TuningDatabase(tmp_path)
    with db.writing():
        db.credit(TARGET, {"a": ("conv_a", 8)})
    with pytest.raises(UserError, match="made for target") as err:
        db.tuned_trials(TARGET.replace("2", "8"))
    assert "ledger.json" in str(err.value) and "hint" in str(err.value)


def test_record_count_counts_lines(tmp_path):
    db = TuningDatabase(tmp_path)
    assert db.record_count() == 0
    db.record_file.write_text('[0, ["r1"]]\n[0, ["r2"]]\n')
    assert db.record_count() == 2


def _can_lock(path: Path, op: int) -> bool:
    """Whether another open file description could take the lock now (flock: even in this process)."""
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, op | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def test_readers_share_writers_exclude(tmp_path):
    db = TuningDatabase(tmp_path)
    data = tmp_path / ".data.lock"
    with db.reading():
        assert _can_lock(data, fcntl.LOCK_SH) and not _can_lock(data, fcntl.LOCK_EX)
    with db.writing():
        assert not _can_lock(data, fcntl.LOCK_SH)
    assert _can_lock(data, fcntl.LOCK_EX)  # released


def test_one_tuner_at_a_time_without_blocking_readers(tmp_path):
    db = TuningDatabase(tmp_path)
    with db.tuning():
        assert not _can_lock(tmp_path / ".tune.lock", fcntl.LOCK_EX)
        with db.reading():  # a tuner reads and writes the data under its tuning lock
            pass
        assert _can_lock(tmp_path / ".data.lock", fcntl.LOCK_SH)
    assert _can_lock(tmp_path / ".tune.lock", fcntl.LOCK_EX)


def test_staging_is_private_and_removed(tmp_path):
    db = TuningDatabase(tmp_path)
    with db.staging() as staging:
        assert Path(staging).parent == tmp_path and Path(staging).name.startswith(".staging-")
    assert not Path(staging).exists()
