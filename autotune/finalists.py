"""Finalist re-tuning: a finished trial's model tuned with a larger budget, checked and timed again.

``retune_trial`` is the whole job for a fresh process: the search driver runs it as a Ray task on
its own node, so it tunes and times with the workers' environment (``task.worker_env``: TVM's
thread pool sized to the profile's ``measure.threads`` before TVM starts), as every trial was timed.
The driver's own process has TVM's unsized pool (no ``TVM_NUM_THREADS``): a finalist timed there,
and the tuning records measured from it, were not on the search's scale (a digits finalist 0.20 ms
against its 0.0076 ms untuned, Zen 3).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from autotune.compress.pipeline import deployment, plan_compression
from autotune.config.device_profile import DeviceProfile
from autotune.config.search_space import SearchSpace
from autotune.deploy import deploy, tuning_request
from autotune.errors import CandidateFailed
from autotune.quiet import QuietLock
from autotune.reference import install_pairing
from autotune.task import Task, load_trained_model, prepare_task

__all__ = ["retune", "retune_trial"]


def retune(
    row: Mapping[str, Any], task: Task, *, run_dir: str | Path, trials: int, tuning_db: str | Path
) -> dict[str, Any]:
    """Tune a finished trial's model with a larger budget, verify and re-measure it.

    Returns the columns to add to its row: ``latency_tuned_ms`` (with p90 and CoV),
    ``tuned_max_abs_diff``, ``tuned_trials`` and ``tune_s`` (both added to the trial's), database hits
    and misses.

    Raises:
        CandidateFailed: tuning, compiling or the numerical check failed.
    """
    from autotune.exporter import export_program

    lock = QuietLock(None)
    if task.profile.measure.paired:  # on the same scale as the search's latencies
        install_pairing(task, Path(run_dir) / "cache", lock, Path(run_dir).parent / ".predictor")
    cfg, model = load_trained_model(row, task, run_dir)
    program, exported, _ = export_program(model, task.data.input_shape)
    request = tuning_request(tuning_db, trials, lock, int(row.get("seed") or 0))
    work = Path(run_dir) / "trials" / str(row["trial_id"]) / "tuned"
    how = deployment(plan_compression(cfg.compress))
    result = deploy(program, exported, task.profile, task.data.x_test, out_dir=work, lock=lock, deployment=how,
                    request=request)  # fmt: skip
    m, artifact = result.measurement, result.artifact
    return {
        "latency_tuned_ms": m.latency_ms,
        "latency_tuned_p90_ms": m.latency_p90_ms,
        "latency_tuned_cov": m.latency_cov,
        "tuned_max_abs_diff": result.numerics.max_abs_diff if result.numerics else None,
        "tuned_trials": int(row.get("tuned_trials") or 0) + artifact.tuned_trials,
        "tune_s": float(row.get("tune_s") or 0.0) + artifact.tune_s,
        "tune_db_hits": artifact.tune_db_hits,
        "tune_db_misses": artifact.tune_db_misses,
    }


def retune_trial(
    row: Mapping[str, Any],
    space: SearchSpace,
    profile: DeviceProfile,
    *,
    run_dir: str | Path,
    trials: int,
    tuning_db: str | Path,
) -> dict[str, Any]:
    """``retune`` with the task prepared here (its data from the run's cache); a ``CandidateFailed``
    comes back as the row's ``error`` (the trial's own results stay).

    Raises:
        RuntimeError: this process lacks the workers' environment on a local profile (a bug of the
            caller: TVM's unsized pool hands every parallel loop to a pool thread, about 25x slower
            on a small model here).
    """
    import os

    from autotune.task import worker_env

    if profile.runner.kind == "local" and any(os.environ.get(k) != v for k, v in worker_env(profile).items()):
        raise RuntimeError(f"retune_trial needs {worker_env(profile)} set before TVM starts; run it in a worker")
    task = prepare_task(space, profile, cache_dir=Path(run_dir) / "cache")
    try:
        return retune(row, task, run_dir=run_dir, trials=trials, tuning_db=tuning_db)
    except CandidateFailed as err:
        return {"error": f"finalist re-tune failed: {err}"}
