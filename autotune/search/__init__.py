"""The search: Ray Tune runs the trials, Optuna samples them, every trial becomes a leaderboard row.

- ``settings``: ``RunConfig``, the run options the CLI, the API and ``run.json`` share.
- ``study``: the Optuna study (``SAMPLERS``, storage, priors, re-queue, zombie sweep).
- ``adapter``: the define-by-run ``OptunaSearch`` that tells Optuna each trial's real state.
- ``trainable``: the Ray worker's trial (``evaluate`` in a sandboxed child).
- ``callback``: the driver's recorder of rows; ``progress``: what the display shows.
- ``driver``: Ray start-up, the Tuner (new or resumed), finalists; ``launch``: the run directory.

Importing this package imports neither Ray nor Optuna (they load when a search runs).
"""

from __future__ import annotations

from autotune.search.driver import SearchRun, run_search
from autotune.search.launch import search
from autotune.search.progress import Progress, ProgressHook
from autotune.search.settings import RunConfig
from autotune.search.study import SAMPLERS

__all__ = ["SAMPLERS", "Progress", "ProgressHook", "RunConfig", "SearchRun", "run_search", "search"]
