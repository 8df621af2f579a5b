"""TPE whose random start-up counts measured trials only (imports Optuna: load it lazily).

Optuna's TPE samples at random until ``n_startup_trials`` trials have finished, counting trials
told PRUNED. A candidate screened out before training (``autotune.screening``) is told PRUNED with
its constraint values and no objective values, and costs seconds, so a search with a predictor
history could end TPE's start-up on screened trials alone: on digits (seed 1) the first seven
trials were all screened, TPE's first model had not one measured accuracy, its "good" group was
the least-violating screened candidate, and the search stayed beside the latency bound.
``MeasuredStartup`` samples at random until the study has ``n_startup`` COMPLETE trials (objective
values told), then hands every call to the wrapped sampler. Without screening nothing changes
but the count's definition.
"""

from __future__ import annotations

from typing import Any

from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

__all__ = ["MeasuredStartup"]


class MeasuredStartup(BaseSampler):
    """``sampler`` once ``n_startup`` trials have objective values; uniform random sampling before."""

    def __init__(self, sampler: BaseSampler, n_startup: int, seed: int | None = None) -> None:
        self.sampler, self.n_startup = sampler, n_startup
        self._random = RandomSampler(seed=seed)

    def started(self, study: Study) -> bool:
        """Whether enough trials were measured for the wrapped sampler to take over."""
        return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) >= self.n_startup

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
