"""TPE whose random start-up counts trained trials only (imports Optuna: load it lazily).

Optuna's TPE samples at random until ``n_startup_trials`` trials have finished, counting trials
told PRUNED. A candidate screened out before training (``autotune.screening``) is told PRUNED with
its constraint values and no objective values, and costs seconds, so a search with a predictor
history could end TPE's start-up on screened trials alone: on digits (seed 1) the first seven
trials were all screened, TPE's first model had not one measured accuracy, its "good" group was
the least-violating screened candidate, and the search stayed beside the latency bound.
``MeasuredStartup`` samples at random until ``n_startup`` trials were trained: told COMPLETE
(objective values), or stopped early after training, which the adapter tells PRUNED and marks
with ``STOPPED_AT_EPOCH``. Counting COMPLETE trials alone kept a 3x32x32 search (seed 0) random
for 41 of its 57 trials, most of its wall time: there the early stopping (``ParetoASHA``) stops
about half the trained candidates, so COMPLETE trials come slowly. Without screening and early
stopping nothing changes but the count's definition.
"""

from __future__ import annotations

from typing import Any

from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

__all__ = ["STOPPED_AT_EPOCH", "MeasuredStartup", "trained"]

#: The user attribute of a trial stopped early after training: the last epoch it reported.
STOPPED_AT_EPOCH = "stopped_at_epoch"


def trained(trial: FrozenTrial) -> bool:
    """Whether ``trial`` was trained: told COMPLETE, or stopped early after at least one epoch."""
    return trial.state == TrialState.COMPLETE or (
        trial.state == TrialState.PRUNED and STOPPED_AT_EPOCH in trial.user_attrs
    )


class MeasuredStartup(BaseSampler):
    """``sampler`` once ``n_startup`` trials were trained; uniform random sampling before."""

    def __init__(self, sampler: BaseSampler, n_startup: int, seed: int | None = None) -> None:
        self.sampler, self.n_startup = sampler, n_startup
        self._random = RandomSampler(seed=seed)

    def started(self, study: Study) -> bool:
        """Whether enough trials were trained for the wrapped sampler to take over."""
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
        return sum(map(trained, done)) >= self.n_startup

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self.sampler.infer_relative_search_space(study, trial) if self.started(study) else {}

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if not search_space:
            return {}
        return self.sampler.sample_relative(study, trial, search_space)

    def sample_independent(
        self, study: Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        chosen = self.sampler if self.started(study) else self._random
        return chosen.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self.sampler.before_trial(study, trial)

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState, values: Any) -> None:
        self.sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.sampler.reseed_rng()
        self._random.reseed_rng()
