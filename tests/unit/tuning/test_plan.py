"""Tuning plans without TVM: budgets split by FLOPs or measured latency, hits and misses, model keys."""

from __future__ import annotations

from autotune.tuning import Workload, allocate_trials, guided, model_key, plan_guided, plan_tuning


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
