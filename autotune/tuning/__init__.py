"""Tuning: MetaSchedule into a per-profile database of records, a ledger of trial budgets, and locks.

One directory per device profile, kept across runs (``database_dir``)::

    database_workload.json        MetaSchedule's JSONDatabase: one workload (a PrimFunc) per line
    database_tuning_record.json   one measured schedule per line, naming its workload by line number
    ledger.json                   the target; per workload (structural hash): task name, trials tuned with;
                                  per model (its workloads' keys): the latency-guided budgets it was given
    .tune.lock, .data.lock        flock files (below)

**Hits and misses.** A small trial budget is split over a model's workloads in proportion to their FLOPs
(``allocate_trials``). A budget of at least ``GUIDED_MIN_ROUNDS`` rounds per workload is *latency-guided*
(``plan_guided``): every workload gets one round, which measures it, and the rest goes, in two stages,
in proportion to each workload's best measured latency times its calls, so the kernels that cost the
most time get the trials (a depthwise convolution has few FLOPs but can take a large share of the
latency). The ledger keeps those budgets per model, so a repeated request plans the same budgets.
A workload is a *hit* when the ledger shows it was tuned with at least its share, else a *miss*, tuned
with the difference (``plan_tuning``). The ledger credits a workload only once the database holds a
valid (measured, error-free) record of it. So a repeated identical tuning measures nothing, and a larger
budget (finalists) tops the workloads up.

**Concurrency.** Tuners take ``.tune.lock`` exclusively for their whole tuning, so they run one at a
time and each plans only once it holds the lock: two workers tuning the same model do the work once.
A tuner measures into a private staging database (``.staging-*``) and merges its new records into the
shared files while holding ``.data.lock`` exclusively (milliseconds); compiles that only read the
database hold it shared. A reader therefore never waits for a tuning nor sees a half-written line, and
no two processes ever append to the files at once, which would corrupt them (record lines refer to
workloads by line number). ``flock`` locks die with their process; a killed tuner leaves only its
staging directory behind.

Modules: ``database`` (the directory, ledger and locks; plain Python), ``plan`` (budgets, hits and
misses; plain Python), ``session`` (one tuning's MetaSchedule state), ``tune`` (``tune`` and
``apply_database``). Imports go one way: ``autotune.compiler`` calls this package, which imports
``autotune.measure`` (the runner plug-in gives MetaSchedule its runner) and never the compiler.
"""

from __future__ import annotations

from autotune.tuning.database import TuningDatabase, database_dir
from autotune.tuning.plan import (
    GUIDED_MIN_ROUNDS,
    GUIDED_STAGES,
    TRIALS_PER_ITER,
    TuningPlan,
    Workload,
    allocate_trials,
    guided,
    model_key,
    plan_guided,
    plan_tuning,
)
from autotune.tuning.tune import TuneReport, TuningRequest, apply_database, tune

__all__ = [
    "GUIDED_MIN_ROUNDS",
    "GUIDED_STAGES",
    "TRIALS_PER_ITER",
    "TuneReport",
    "TuningDatabase",
    "TuningPlan",
    "TuningRequest",
    "Workload",
    "allocate_trials",
    "apply_database",
    "database_dir",
    "guided",
    "model_key",
    "plan_guided",
    "plan_tuning",
    "tune",
]
