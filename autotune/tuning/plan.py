"""Tuning plans: how a model's trial budget is split over its workloads, and which are hits or misses.

A small budget is split in proportion to FLOPs (``allocate_trials``, ``plan_tuning``); a budget of at
least ``GUIDED_MIN_ROUNDS`` rounds per workload is latency-guided (``plan_guided``). See ``autotune.tuning``.
Plain Python, no TVM.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "GUIDED_MIN_ROUNDS",
    "GUIDED_STAGES",
    "TRIALS_PER_ITER",
    "TuningPlan",
    "Workload",
    "allocate_trials",
    "guided",
    "model_key",
    "plan_guided",
    "plan_tuning",
]

#: MetaSchedule trials measured per task and round; budgets are split in whole rounds.
TRIALS_PER_ITER = 8
#: Budgets of at least this many rounds per workload are latency-guided (``plan_guided``).
GUIDED_MIN_ROUNDS = 4
#: The shares of a latency-guided budget planned after the first round, each on the latencies then.
GUIDED_STAGES = (0.5, 1.0)


@dataclass(frozen=True)
class Workload:
    """One tuning task of a model.

    Attributes:
        key: MetaSchedule's structural hash of the PrimFunc (as in ``database_workload.json``).
        name: the task name, for logs and the ledger.
        flops: floating-point operations per inference (one call's FLOPs times the calls).
        calls: calls per inference.
    """

    key: str
    name: str
    flops: float
    calls: int = 1


@dataclass(frozen=True)
class TuningPlan:
    """Budgets of one tuning.

    Attributes:
        budgets: workload key → trials it should be tuned with (workloads with a budget only).
        todo: the misses: workload key → trials still to measure.
    """

    budgets: dict[str, int]
    todo: dict[str, int]

    @classmethod
    def from_budgets(cls, budgets: Mapping[str, int], tuned: Mapping[str, int]) -> TuningPlan:
        """The plan for ``budgets`` when the ledger already has ``tuned``: the misses are the shortfall."""
        todo = {k: n - tuned.get(k, 0) for k, n in budgets.items() if tuned.get(k, 0) < n}
        return cls(budgets=dict(budgets), todo=todo)

    @property
    def hits(self) -> int:
        return len(self.budgets) - len(self.todo)

    @property
    def misses(self) -> int:
        return len(self.todo)


def allocate_trials(trials: int, weights: Sequence[float], *, step: int = TRIALS_PER_ITER) -> list[int]:
    """Split ``trials`` over tasks in proportion to ``weights`` (FLOPs), in whole rounds of ``step``.

    Rounds go to the largest shares (largest remainder); trials short of a round go to the heaviest
    task. A task of weight 0 gets nothing, so does every task when all weights are 0.
    """
    out = [0] * len(weights)
    total = sum(weights)
    if trials <= 0 or total <= 0:
        return out
    rounds, rest = divmod(trials, step)
    quotas = [rounds * w / total for w in weights]
    whole = [math.floor(q) for q in quotas]
    by_remainder = sorted(range(len(weights)), key=lambda i: whole[i] - quotas[i])
    for i in by_remainder[: rounds - sum(whole)]:
        whole[i] += 1
    out = [n * step for n in whole]
    out[max(range(len(weights)), key=lambda i: weights[i])] += rest
    return out


def _plan(workloads: Sequence[Workload], allocation: Sequence[int], tuned: Mapping[str, int]) -> TuningPlan:
    budgets: dict[str, int] = {}
    for w, n in zip(workloads, allocation, strict=True):
        if n > 0:
            budgets[w.key] = max(n, budgets.get(w.key, 0))
    return TuningPlan.from_budgets(budgets, tuned)


def guided(workloads: Sequence[Workload], trials: int, *, step: int = TRIALS_PER_ITER) -> bool:
    """Whether ``trials`` is large enough for a latency-guided plan of these workloads."""
    return bool(workloads) and trials >= GUIDED_MIN_ROUNDS * step * len({w.key for w in workloads})


def plan_guided(
    workloads: Sequence[Workload],
    trials: int,
    tuned: Mapping[str, int],
    latency_s: Mapping[str, float | None],
    *,
    step: int = TRIALS_PER_ITER,
) -> TuningPlan:
    """One round per workload, the rest of ``trials`` in proportion to latency × calls.

    ``latency_s`` is each workload's best measured latency per call. A workload without one (no valid
    schedule yet) is estimated from its FLOPs at the measured workloads' mean FLOP rate (or, when none
    is measured, weighted by FLOPs alone).
    """
    unique = list({w.key: w for w in workloads}.values())
    known = [(w, latency_s[w.key]) for w in unique if latency_s.get(w.key)]
    rate = sum(w.flops for w, _ in known) / sum(lat * w.calls for w, lat in known) if known else 0.0
    weights = []
    for w in unique:
        lat = latency_s.get(w.key)
        if lat:
            weights.append(lat * w.calls)
        elif rate > 0:
            weights.append(w.flops / rate)
        else:
            weights.append(w.flops)
    if sum(weights) <= 0:
        weights = [1.0] * len(unique)
    rest = max(0, trials - step * len(unique))
    allocation = [step + n for n in allocate_trials(rest, weights, step=step)]
    return _plan(unique, allocation, tuned)


def model_key(workloads: Sequence[Workload]) -> str:
    """A model's identity for the ledger's plans: its workloads' keys and calls."""
    parts = sorted({f"{w.key}x{w.calls}" for w in workloads})
    return hashlib.sha256(",".join(parts).encode()).hexdigest()[:20]


def plan_tuning(workloads: Sequence[Workload], trials: int, tuned: Mapping[str, int]) -> TuningPlan:
    """Allocate ``trials`` over ``workloads`` and subtract what the ledger (``tuned``) already has.

    A workload that occurs twice in ``workloads`` keeps its larger budget.
    """
    return _plan(workloads, allocate_trials(trials, [w.flops for w in workloads]), tuned)
