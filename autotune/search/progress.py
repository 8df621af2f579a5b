"""What the progress display shows while a search runs, derived from the rows as trials end."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from autotune.config.search_space import metric_column

__all__ = ["Progress", "ProgressHook"]


@dataclass
class Progress:
    """The search's state for display; the driver's callback updates it as trials start and end."""

    total: int
    time_budget_s: float | None
    started: float = field(default_factory=time.time)
    running: dict[str, str] = field(default_factory=dict)  # trial id -> what it is doing
    done: int = 0
    failed: int = 0
    pruned: int = 0
    infeasible: int = 0
    best: dict[str, Any] | None = None
    objectives: dict[str, str] = field(default_factory=dict)
    predictor_hit_rate: float | None = None  # share of predictions within ±10 % of the measurement
    predictor_checked: int = 0  # rows with both a prediction and a measurement
    drift_warning: str | None = None

    @property
    def elapsed_s(self) -> float:
        return time.time() - self.started

    @property
    def remaining_s(self) -> float | None:
        return None if self.time_budget_s is None else max(0.0, self.time_budget_s - self.elapsed_s)

    def record(self, row: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], *, drift_threshold: float) -> None:
        """Count a finished trial's ``row``; ``rows`` is the whole leaderboard after it was added
        (with ``pareto_rank``, ``drift`` and ``drift_flag`` derived)."""
        from autotune.predictor import hit_rate

        self.done += 1
        status = row.get("status")
        self.failed += status == "failed"
        self.pruned += status == "pruned"
        self.infeasible += status == "infeasible"
        self.predictor_hit_rate, self.predictor_checked = hit_rate(list(rows))
        drifted = sorted(
            (r for r in rows if r.get("drift") is not None and abs(r["drift"]) > drift_threshold),
            key=lambda r: r.get("finished_at") or "",
        )
        if drifted:
            last = drifted[-1]
            self.drift_warning = (
                f"latency drift {last['drift']:+.0%}: the reference model timed {last['reference_latency_ms']:.4g} ms "
                f"in trial {last['trial_id']} ({len(drifted)} drifted re-timings; affected rows have drift_flag)"
            )
        front = [r for r in rows if r.get("pareto_rank") == 1]
        if front and self.objectives:
            first = next(iter(self.objectives))
            key = metric_column(first)
            rev = self.objectives[first] == "max"
            self.best = dict(sorted(front, key=lambda r: r.get(key) or 0, reverse=rev)[0])
        self.running.pop(str(row["trial_id"]), None)


#: Called with the progress after every change (the CLI redraws its live display).
ProgressHook = Callable[[Progress], None]
