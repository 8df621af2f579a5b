"""The thin Optuna ↔ Ray Tune adapter: ``OptunaSearch`` samples define-by-run and is told the truth.

Stock ``OptunaSearch`` tells early-stopped trials COMPLETE with partial metrics and leaves trials
with NaN results RUNNING; ``make_searcher``'s subclass closes every trial with its real state and
stores the constraint values the sampler reads first.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from typing import Any

from autotune.config.search_space import SearchSpace
from autotune.search.study import STUDY_NAME, make_sampler, storage
from autotune.space import sample_params

__all__ = ["define_by_run", "make_searcher"]


def define_by_run(trial: Any, space: SearchSpace) -> dict[str, Any]:
    """Sample one candidate's parameters; ``study_trial`` is the Optuna trial number (seeds, drift)."""
    number = getattr(getattr(trial, "ot_trial", trial), "number", None)  # Tune wraps the Optuna trial
    return {**sample_params(space, trial), "study_trial": number}


def make_searcher(space: SearchSpace, run_dir: Path, seed: int, sampler_name: str = "tpe") -> Any:
    """An ``OptunaSearch`` on the run's study, minimising/maximising ``obj/<objective>`` results.

    The trainable's last result holds ``final``, ``status``, ``violation_amounts`` (JSON) and the
    ``obj/<name>`` values: ``ok``/``infeasible`` rows with finite values are told COMPLETE, an
    ``infeasible`` row without them PRUNED (TPE reads the constraints of pruned trials), other final
    rows FAIL; a trial without a final result was stopped early (PRUNED, marked ``STOPPED_AT_EPOCH``
    when it was trained, which ends TPE's start-up like a COMPLETE trial) or errored (FAIL). Each
    suggestion holds the run's quiet lock shared (``autotune.quiet``), as training does.
    """
    from optuna.trial import TrialState
    from ray.tune.search.optuna import OptunaSearch

    from autotune.quiet import QuietLock, quiet_dir
    from autotune.search.samplers import STOPPED_AT_EPOCH

    class RobustOptunaSearch(OptunaSearch):
        """OptunaSearch that tells Optuna the truth about every trial (see ``make_searcher``)."""

        quiet = QuietLock(quiet_dir(run_dir))

        def suggest(self, trial_id: str) -> dict | None:
            # TPE's sampling takes about a second of the driver's CPU; held shared, it waits for a
            # candidate's timing on this machine instead of running beside it
            with self.quiet.shared():
                return super().suggest(trial_id)

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            if trial_id in self._completed_trials or trial_id not in self._ot_trials:
                return
            ot_trial = self._ot_trials[trial_id]
            result = result or {}
            done = self._ot_study.get_trials(deepcopy=False)[ot_trial.number].state.is_finished()
            if done:  # closed by an earlier run's sweep; nothing to tell
                self._completed_trials.add(trial_id)
                return
            if result.get("final") and not error:
                ot_trial.set_user_attr("status", result.get("status"))
                for name, amount in json.loads(result.get("violation_amounts") or "{}").items():
                    ot_trial.set_constraint(name, amount)
                vals = [result.get(m) for m in self.metric]
                if result.get("status") in ("ok", "infeasible") and all(
                    isinstance(v, int | float) and math.isfinite(v) for v in vals
                ):
                    self._ot_study.tell(ot_trial, vals)
                elif result.get("status") == "infeasible":
                    # screened out before training: no objective values, but its constraint values
                    # are set, and TPE reads those of pruned trials (the infeasible group)
                    self._ot_study.tell(ot_trial, state=TrialState.PRUNED)
                else:
                    self._ot_study.tell(ot_trial, state=TrialState.FAIL)
            else:
                if not error and result.get("epoch") is not None:  # stopped early after training
                    ot_trial.set_user_attr(STOPPED_AT_EPOCH, int(result["epoch"]))
                self._ot_study.tell(ot_trial, state=TrialState.FAIL if error else TrialState.PRUNED)
            self._completed_trials.add(trial_id)

    names = list(space.objectives)
    return RobustOptunaSearch(
        functools.partial(define_by_run, space=space),
        metric=[f"obj/{n}" for n in names],
        mode=[space.objectives[n] for n in names],
        sampler=make_sampler(sampler_name, seed),
        storage=storage(run_dir),
        study_name=STUDY_NAME,
    )
