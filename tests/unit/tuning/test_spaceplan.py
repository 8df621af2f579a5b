"""The space tuner's order of work: never-measured workloads first, heaviest first; then doubling
where the most time per trial is left."""

from __future__ import annotations

from autotune.spacetune.plan import estimated_s, next_todo
from autotune.spacetune.sample import SpaceWorkload


def _w(key: str, flops: float, calls: int) -> SpaceWorkload:
    return SpaceWorkload(key=key, name=key, flops=flops, calls=calls, models=1)


WORKLOADS = [_w("a", 1e6, 1), _w("b", 1e6, 10), _w("c", 4e6, 1), _w("d", 1e5, 1)]


def test_fresh_workloads_come_first_by_calls_times_estimated_time():
    todo = next_todo(WORKLOADS, {}, {}, size=2, max_trials=64)
    assert todo == {"b": 8, "c": 8}  # 10 calls x 1 MFLOP, then 1 call x 4 MFLOP
    assert next_todo(WORKLOADS, {}, {}, size=2, max_trials=64, skip={"b"}) == {"c": 8, "a": 8}


def test_measured_latency_replaces_the_flops_estimate():
    latency = {"a": 1e-3, "b": 1e-6, "c": 1e-6}  # a is slow for its FLOPs (a depthwise convolution)
    est = estimated_s(WORKLOADS, latency)
    assert est["a"] == 1e-3 and est["d"] > 0
    tuned = {"a": 8, "b": 8, "c": 8}
    todo = next_todo(WORKLOADS, tuned, latency, size=2, max_trials=64)
    assert todo == {"d": 8, "a": 8}  # d is still unmeasured; then a doubles


def test_doubling_stops_at_max_trials_and_everything_done_is_empty():
    tuned = {"a": 48, "b": 64, "c": 64, "d": 64}
    assert next_todo(WORKLOADS, tuned, {"a": 1e-3}, size=4, max_trials=64) == {"a": 16}
    assert next_todo(WORKLOADS, dict.fromkeys("abcd", 64), {}, size=4, max_trials=64) == {}
