"""Early stopping for a search that trades accuracy against latency.

Ray Tune's ASHA compares a trial's validation loss with every trial that reached the same epoch,
which in a multi-objective search stops the fast, slightly less accurate networks that make up
the fast end of the Pareto front. With ``max_t`` one past the last epoch its rungs also landed on
the last epoch, so it stopped fully trained networks before they were measured (on digits, one
network at 0.97-0.98 validation accuracy in each of three 24-trial runs).

``ParetoASHA`` keeps ASHA's asynchronous halving with one rung, at half the epochs, but judges a
trial only against the trials that are **no slower** (MO-ASHA's idea, Schmucker et al. 2021, in
its simplest form): it stops when its loss is above the median of theirs, so no trial on the
rung's Pareto front of (loss, cost) is ever stopped. A trial at its last planned epoch is not
judged; one that has learned nothing by the rung (validation accuracy at or under the task's
``learned`` floor, ``autotune.constraints``) stops. The cost is what the trial reported before
training: the predicted latency when both trials have one, else the MACs; a space whose only
objective is accuracy is judged as by plain ASHA (``by_cost=False``).

Ray Tune does not save a scheduler's state, so a resumed run gives it the rung's judgements of its
finished trials again (``judged_before``: from their rows and training curves).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ray.tune.schedulers import FIFOScheduler, TrialScheduler

__all__ = ["Cost", "ParetoASHA", "judged_before", "learned_nothing", "no_slower", "should_stop"]


@dataclass(frozen=True)
class Cost:
    """What a trial costs to run, as known before training."""

    latency_pred_ms: float | None = None
    macs: float | None = None

    @classmethod
    def of(cls, result: dict[str, Any]) -> Cost:
        return cls(result.get("cost_latency_pred_ms"), result.get("cost_macs"))


def no_slower(other: Cost, own: Cost) -> bool:
    """Whether ``other`` is at most as costly as ``own``: by predicted latency when both have one,
    else by MACs; with neither, every trial counts (plain ASHA)."""
    if other.latency_pred_ms is not None and own.latency_pred_ms is not None:
        return other.latency_pred_ms <= own.latency_pred_ms
    if other.macs is not None and own.macs is not None:
        return other.macs <= own.macs
    return True


def should_stop(loss: float, cost: Cost, recorded: dict[str, tuple[float, Cost]]) -> bool:
    """ASHA's rule (stop above the median loss) among the recorded trials no slower than this one."""
    losses = [other_loss for other_loss, other in recorded.values() if no_slower(other, cost)]
    return bool(losses) and loss > statistics.median(losses)


def learned_nothing(result: dict[str, Any]) -> bool:
    """Whether an epoch's report is at or under the task's ``learned`` floor."""
    floor, accuracy = result.get("accuracy_floor"), result.get("val_accuracy")
    return floor is not None and accuracy is not None and accuracy <= floor


class ParetoASHA(FIFOScheduler):
    """Asynchronous successive halving with one rung at epoch ``rung``, latency-aware (module doc).

    It reads the epoch reports of ``autotune.search.trainable``: ``epoch``, ``score`` (the validation
    loss), ``val_accuracy``, ``accuracy_floor``, ``epochs_planned``, ``cost_macs`` and, when the
    trial was screened, ``cost_latency_pred_ms``.
    """

    _supports_buffered_results = False  # judge each epoch as it is reported, like ASHA

    def __init__(self, rung: int, *, by_cost: bool = True, metric: str = "score", time_attr: str = "epoch") -> None:
        super().__init__()
        self.rung, self.by_cost, self._metric, self._time_attr = rung, by_cost, metric, time_attr
        self.recorded: dict[str, tuple[float, Cost]] = {}
        self.stopped = 0

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        epoch, loss = result.get(self._time_attr), result.get(self._metric)
        if epoch is None or loss is None or epoch < self.rung or trial.trial_id in self.recorded:
            return TrialScheduler.CONTINUE
        if epoch >= result.get("epochs_planned", math.inf):  # trained: stopping saves nothing
            return TrialScheduler.CONTINUE
        cost, loss = Cost.of(result) if self.by_cost else Cost(), float(loss)
        loss = math.inf if math.isnan(loss) else loss  # diverged
        stop = learned_nothing(result) or should_stop(loss, cost, self.recorded)
        self.recorded[trial.trial_id] = (loss, cost)
        self.stopped += stop
        return TrialScheduler.STOP if stop else TrialScheduler.CONTINUE

    def remember(self, judged: Mapping[str, tuple[float, Cost]]) -> None:
        """Take the judgements of trials an earlier run of the search made (``judged_before``)."""
        self.recorded.update(judged)

    def debug_string(self) -> str:
        return f"ParetoASHA: rung at epoch {self.rung}, {len(self.recorded)} judged, {self.stopped} stopped"


def judged_before(
    rows: Iterable[Mapping[str, Any]], curves: Callable[[str], list[dict[str, float]]], rung: int
) -> dict[str, tuple[float, Cost]]:
    """What ``ParetoASHA`` recorded for the finished trials of an earlier run, rebuilt: each row's
    validation loss at epoch ``rung`` (``curves(trial_id)``: its recorded epochs) and its cost as the
    trial reported it (the MACs of the network before compression, the predicted latency when it was
    screened). Trials that did not reach the rung, or planned no epoch after it, were not judged."""
    judged = {}
    for row in rows:
        planned = _number(row.get("train.epochs"))
        point = next((p for p in curves(str(row["trial_id"])) if p.get("epoch") == rung), None)
        loss = _number(point.get("val_loss")) if point is not None else None
        if planned is None or planned <= rung or loss is None:
            continue
        macs = _number(row.get("macs_uncompressed")) or _number(row.get("macs"))
        judged[str(row["trial_id"])] = (math.inf if math.isnan(loss) else loss,
                                        Cost(_number(row.get("latency_pred_ms")), macs))  # fmt: skip
    return judged


def _number(value: Any) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None
