"""Which workloads of a space to tune next: rank by calls × estimated time, measure every workload
once, then spend the rest where it saves the most. Plain Python, no TVM."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from autotune.spacetune.sample import SpaceWorkload
from autotune.tuning.plan import TRIALS_PER_ITER

__all__ = ["estimated_s", "next_todo"]


def estimated_s(workloads: Sequence[SpaceWorkload], latency_s: Mapping[str, float | None]) -> dict[str, float]:
    """Each workload's time per call: its best measured latency, else its FLOPs at the mean FLOP rate
    of the measured ones (at 1 GFLOP/s before any is measured: then only the order matters)."""
    known = [(w, latency_s[w.key]) for w in workloads if latency_s.get(w.key)]
    rate = sum(w.flops for w, _ in known) / sum(t for _, t in known) if known else 1e9  # type: ignore[misc]
    rate = rate if rate > 0 else 1e9
    return {w.key: latency_s.get(w.key) or max(w.flops, 1.0) / rate for w in workloads}


def next_todo(
    workloads: Sequence[SpaceWorkload],
    tuned: Mapping[str, int],
    latency_s: Mapping[str, float | None],
    *,
    size: int,
    max_trials: int,
    skip: Collection[str] = (),
) -> dict[str, int]:
    """Up to ``size`` workloads to tune now (key → trials to add), none of them in ``skip``.

    Workloads never measured come first (one round of ``TRIALS_PER_ITER`` each), heaviest first:
    calls in the sample × estimated time per call. Then the workload with the most time per trial
    already spent (calls × best latency / trials) gets as many trials again as it has (doubling),
    up to ``max_trials``.
    """
    est = estimated_s(workloads, latency_s)
    open_ = [w for w in workloads if w.key not in skip and tuned.get(w.key, 0) < max_trials]
    fresh = sorted((w for w in open_ if tuned.get(w.key, 0) < TRIALS_PER_ITER), key=lambda w: -w.calls * est[w.key])
    todo = {w.key: TRIALS_PER_ITER - tuned.get(w.key, 0) for w in fresh[:size]}
    if len(todo) < size:
        seen = [w for w in open_ if w.key not in todo and tuned.get(w.key, 0) >= TRIALS_PER_ITER]
        seen.sort(key=lambda w: -w.calls * est[w.key] / tuned[w.key])
        for w in seen[: size - len(todo)]:
            n = tuned[w.key]
            todo[w.key] = min(n, max_trials - n)
    return todo
