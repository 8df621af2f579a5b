"""The public Python API: composition only. The CLI and notebooks call these functions.

Each function puts together the modules that own the work: ``catalog`` (shipped spaces and profiles
by name), ``validate`` (a space checked in full, once), ``preflight`` (the checks that need torch or
TVM), ``runs`` (run directories), ``reporting`` and ``bundle`` (what a finished run produces) and
``devices`` (calibration).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from autotune import validate
from autotune.catalog import (
    PACKAGE_ROOT,
    kernels_donor,
    list_profiles,
    list_spaces,
    resolve_profile_path,
    resolve_space_path,
)
from autotune.config import load as _load
from autotune.config.device_profile import DeviceProfile
from autotune.config.search_space import SearchSpace
from autotune.errors import UserError
from autotune.runs import read_run, run_name_dir
from autotune.search.settings import RunConfig
from autotune.validate import check_space

log = logging.getLogger(__name__)

__all__ = [
    "PACKAGE_ROOT",
    "calibrate_device",
    "check",
    "check_space",
    "evaluate",
    "export",
    "profile",
    "report",
    "list_profiles",
    "list_spaces",
    "load_profile",
    "load_space",
    "resolve_profile_path",
    "resolve_space_path",
    "run_name_dir",
    "search",
    "tune",
]


def load_space(path: str | Path | None = None) -> SearchSpace:
    """Load and fully validate a search space (a path or a shipped name)."""
    return validate.load_space(resolve_space_path(path))


def load_profile(path: str | Path | None = None) -> DeviceProfile:
    """Load and validate a device profile (a path or a shipped name)."""
    return _load.load_profile(resolve_profile_path(path))


def check(space: str | Path | None = None, device: str | Path | None = None) -> tuple[SearchSpace, DeviceProfile]:
    """Validate a space and a profile without doing any work (the profile's backends are known and
    installed here). Raises ``UserError``."""
    from autotune.backends import check_backends

    sp, prof = load_space(space), load_profile(device)
    check_backends(prof, file=str(resolve_profile_path(device)))
    kernels_donor(prof, file=str(resolve_profile_path(device)))
    return sp, prof


def search(
    space: str | Path | None = None,
    device: str | Path | Sequence[str | Path] | None = None,
    *,
    name: str | None = None,
    results_dir: str | Path = "results",
    trials: int = RunConfig.trials,
    time_budget_s: float | None = RunConfig.time_budget_s,
    concurrency: int | None = RunConfig.concurrency,
    seed: int = RunConfig.seed,
    address: str | None = None,
    resume: bool = False,
    early_stopping: bool = RunConfig.early_stopping,
    cpus_per_trial: float = RunConfig.cpus_per_trial,
    gpus_per_trial: float = RunConfig.gpus_per_trial,
    trial_timeout_s: float | None = RunConfig.trial_timeout_s,
    trial_memory_bytes: int | None = RunConfig.trial_memory_bytes,
    enqueue: Sequence[Mapping[str, Any]] = (),
    warm_start: str | Path | None = None,
    sampler: str = RunConfig.sampler,
    predictor: bool = RunConfig.predictor,
    constraint_first: bool = RunConfig.constraint_first,
    reference_every: int = RunConfig.reference_every,
    on_progress: Any = None,
    rebuild_study: bool = False,
) -> list[dict[str, Any]]:
    """Run a search and return its leaderboard rows (dicts, columns as in ``leaderboard.csv``).

    The run options (``trials`` ... ``reference_every``) are ``autotune.search.RunConfig``'s fields,
    with its defaults. With ``resume=True`` the run's own copies of the space and profile are used.
    Each trial runs in a forked child process; one that runs past ``trial_timeout_s`` or whose
    resident memory passes ``trial_memory_bytes`` is killed and recorded as failed with the reason
    (None: no limit). A trial that raises a ``UserError`` gets the row error ``user error: ...``; any
    other exception is a bug of autotune's: ``internal error: <type>: ...``, with the traceback in
    the trial's ``traceback.txt``.
    ``enqueue`` lists parameter sets (``{'arch.stages': 2, ...}``) the study evaluates first.
    ``warm_start`` names an earlier run: its Pareto front is evaluated first and its finished
    trials are prior observations of the new study (see ``autotune.warmstart``).
    ``sampler`` is ``tpe`` (multi-objective TPE, constraint-aware; the default), ``nsga2`` or
    ``random``. ``predictor`` and ``constraint_first`` screen candidates before training (see
    ``autotune.screening``); every ``reference_every`` trials the reference model is re-timed
    to detect drift (0: never).
    A resumed run keeps the settings it started with (``run.json``); only ``address`` may change.
    One driver at a time may run a run directory: another is refused with the holder's PID and host.
    A resumed run whose ``study.db`` cannot be opened is refused unless ``rebuild_study``: then the
    study is rebuilt from ``trials.jsonl`` (one finished trial per leaderboard row) and the old one
    kept beside it.
    ``device`` may list several profiles: every candidate is then compiled, checked and timed on each;
    the first device's figures fill the usual columns, the others' ``<column>@<profile name>`` (see
    ``autotune.search.launch.check_devices``), and objectives or constraints may name a device
    (``latency_ms@rpi5``).

    Raises:
        UserError: a bad option, space or profile, a run that already exists (without ``resume``),
            an unreachable cluster.
    """
    from autotune.search import search as _search

    config = RunConfig.from_args(locals())
    return _search(
        space,
        device,
        config,
        name=name,
        results_dir=results_dir,
        address=address,
        resume=resume,
        enqueue=enqueue,
        warm_start=warm_start,
        on_progress=on_progress,
        on_finish=report,
        rebuild_study=rebuild_study,
        on_update=functools.partial(report, live=True),
    )


def tune(
    space: str | Path | None,
    device: str | Path | None,
    budget: str | float,
    *,
    results_dir: str | Path = "results",
    address: str | None = None,
    samples: int = 16,
    seed: int = 0,
    max_trials: int = 256,
    on_chunk: Any = None,
) -> Any:
    """Tune a search space's kernels into the device profile's tuning database (``autotune tune``).

    ``samples`` architectures of the space are built and their fused workloads tuned, most costly
    first, for ``budget`` (seconds, or a duration such as ``'2h'``) in all: a later ``tune`` with a
    larger budget goes on where this one stopped; with the same budget it measures nothing. With
    ``address`` the work is spread over the Ray cluster's nodes. A search with this profile and
    ``results_dir`` then compiles its candidates from the database. Returns a
    ``autotune.spacetune.SpaceTuneReport``.

    Raises:
        UserError: a bad budget, space or profile, a database made for another target, a space
            where no sampled architecture compiles; all before anything is measured.
    """
    from autotune.preflight import preflight
    from autotune.search.settings import parse_duration
    from autotune.spacetune import tune_space

    if isinstance(budget, str):
        try:
            budget = parse_duration(budget)
        except argparse.ArgumentTypeError as err:
            raise UserError(str(err), key="--budget") from None
    space_path, profile_path = resolve_space_path(space), resolve_profile_path(device)
    sp, prof = validate.load_space(space_path), _load.load_profile(profile_path)
    preflight(sp, prof, profile_file=str(profile_path), space_file=str(space_path))
    return tune_space(sp, prof, float(budget), results_dir=results_dir, address=address, samples=samples, seed=seed,
                      max_trials=max_trials, space_file=str(space_path), on_chunk=on_chunk)  # fmt: skip


def profile(run_dir: str | Path, trial_id: str, device: str | Path | None = None) -> Any:
    """Where a finished trial's time goes, kernel by kernel, on its device (or ``device``): an
    ``autotune.profiling.KernelProfile`` (also kept in ``trials/<id>/kernel_profile.json``).

    Measures on this machine with the profile's threads: call it before TVM is imported in the
    process (the CLI does), else TVM's thread pool keeps the size it started with.

    Raises:
        UserError: no such trial or no model for it, a profile that does not measure here.
    """
    import sys

    from autotune.profiling import profile_trial
    from autotune.task import worker_env

    prof = load_profile(device) if device else read_run(run_dir)[2]
    if "tvm" not in sys.modules:
        for k, v in worker_env(prof).items():
            os.environ.setdefault(k, v)
    return profile_trial(run_dir, trial_id, device)


def calibrate_device(
    name: str,
    *,
    threads: int | None = None,
    base: str | Path | None = None,
    out: str | Path | None = None,
    force: bool = False,
) -> Path:
    """Measure this machine's peaks (and power, with a meter) and write profile ``name``.

    Args:
        threads: threads to measure with; default the base profile's ``measure.threads``.
        base: the profile the new one starts from (default ``host``: this CPU, detected).
        out: where to write it (default ``device_profiles/<name>.yaml`` under the working directory).
        force: overwrite an existing file.

    Raises:
        UserError: a bad name, a base that does not load, or ``out`` exists (without ``force``).
    """
    from autotune.devices.calibrate import calibrate, check_name, write_profile

    check_name(name)
    base_path = resolve_profile_path(base)
    base_profile = load_profile(base_path)
    if base_profile.runner.kind != "local":
        raise UserError("calibrate measures this machine: the base profile must use the local runner", key="--base")
    path = Path(out) if out else Path("device_profiles") / f"{name}.yaml"
    if path.exists() and not force:
        raise UserError(f"{path} already exists", hint="pass --force to overwrite it, or --out another file")
    n = threads or base_profile.measure.threads
    if n < 1:
        raise UserError(f"threads must be at least 1, got {n}", key="--threads")
    import sys

    if "tvm" not in sys.modules:  # the FMA kernel runs on TVM's pool: size it before TVM starts
        os.environ.setdefault("TVM_NUM_THREADS", str(n))
    log.info("calibrating with %d thread%s (about 10 s) ...", n, "s" * (n > 1))
    cal = calibrate(n, meter_kind=base_profile.meter)
    return write_profile(name, _load.read_yaml(base_path), cal, path)


def report(run_dir: str | Path, *, live: bool = False) -> Path:
    """(Re)write ``pareto.png`` and ``report.html`` of a run; return the report's path. ``live``: the
    run is going on (the page says so and reloads itself)."""
    import platform

    from autotune.reporting import write_report

    run, space, profile, rows = read_run(run_dir)
    started = min((str(r["started_at"]) for r in rows if r.get("started_at")), default="")
    finished = max((str(r["finished_at"]) for r in rows if r.get("finished_at")), default="")
    targets = sorted({str(r["target"]) for r in rows if r.get("target")})
    facts = {
        "run": run.name,
        "search space": f"{space.name or ''} — {space.description}",
        "device profile": f"{profile.name} — {profile.description}",
        "target": "; ".join(targets) or json.dumps(profile.target),
        "trials": len(rows),
        "first trial started / last finished (UTC)": f"{started} / {finished}",
        "energy source": ", ".join(sorted({str(r["energy_source"]) for r in rows if r.get("energy_source")})) or "–",
        "host": f"{platform.node()} ({platform.machine()}, {platform.python_version()})",
        "leaderboard": str(run / "leaderboard.csv"),
    }
    from autotune.predictor import hit_rate

    rate, checked = hit_rate(rows)
    if checked:
        facts["latency predictor"] = f"{rate:.0%} of {checked} predictions within ±10 % of the measured latency"
        models = Counter(str(r["latency_pred_model"]) for r in rows if r.get("latency_pred_model"))
        facts["latency predictor"] += " (" + ", ".join(f"{n} by {m}" for m, n in sorted(models.items())) + ")"
    table = kernel_table_facts(run.parent, profile, run.name)
    if table:
        facts["kernel table"] = table
    screened = Counter(str(r["screened"]) for r in rows if r.get("screened"))
    if screened:
        facts["screened out before training"] = ", ".join(f"{n} {how}" for how, n in sorted(screened.items()))
    return write_report(run, rows, objectives=space.objectives, title=f"autotune run {run.name}", facts=facts,
                        live=live)  # fmt: skip


def kernel_table_facts(results_dir: Path, profile: DeviceProfile, run: str) -> str | None:
    """The profile's kernel table in one line: its size, and how many of this run's kernels it
    already had when they were measured (None without a table)."""
    from autotune.kernel_table import KernelTable, table_path
    from autotune.predictor import environment_key, history_path, load_history

    path = table_path(profile, results_dir)
    if not path.exists():
        return None
    key = environment_key(profile)
    recs = [
        r for r in load_history(history_path(profile, results_dir), key) if r.get("run") == run and r.get("kernels")
    ]
    size = f"{len(KernelTable.load(path, key))} kernels timed on this profile"
    total = sum(len(r["kernels"]) for r in recs)
    if not total:
        return size
    reused = 1 - sum(int(r.get("new_kernels") or 0) for r in recs) / total
    return f"{size}; {reused:.0%} of this run's {total} kernels were already in it"


def export(run_dir: str | Path, trial_id: str, out: str | Path | None = None) -> Path:
    """Write a deployable bundle of one trial (ONNX, TVM library, parameters, README); return its folder."""
    from autotune.bundle import export_bundle
    from autotune.task import prepare_task

    run, space, profile, rows = read_run(run_dir)
    row = next((r for r in rows if str(r["trial_id"]) == str(trial_id)), None)
    if row is None:
        raise UserError(f"no trial {trial_id!r} in {run / 'leaderboard.csv'}", key="TRIAL_ID")
    dest = Path(out) if out else run / "export" / str(trial_id)
    export_bundle(run, row, prepare_task(space, profile), dest)
    return dest


def evaluate(
    params: Mapping[str, Any],
    profile: str | Path | DeviceProfile | None = None,
    *,
    space: str | Path | SearchSpace | None = None,
    work_dir: str | Path | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Evaluate one candidate in this process and return its leaderboard row.

    Args:
        params: sampled values keyed ``'arch.<name>'`` / ``'train.<name>'`` / ``'compress.<technique>.<name>'``;
            the space's constants and autotune's defaults fill the rest.
        work_dir: the candidate's files (default: a temporary directory); a distillation teacher is
            cached in its ``cache`` subdirectory.
    """
    import sys

    from autotune.task import make_trial_config, prepare_task, worker_env

    sp = space if isinstance(space, SearchSpace) else load_space(space)
    prof = profile if isinstance(profile, DeviceProfile) else load_profile(profile)
    if "tvm" not in sys.modules:  # TVM sizes its thread pool at import: the profile's threads (a search's
        for k, v in worker_env(prof).items():  # workers get them from the driver)
            os.environ.setdefault(k, v)
    from autotune.evaluate import evaluate as _evaluate

    task = prepare_task(sp, prof)
    cfg = make_trial_config(params, sp, trial_id="evaluate", seed=seed, passes=task.passes)
    if work_dir is None:
        with tempfile.TemporaryDirectory(prefix="autotune-") as tmp:
            return dict(_evaluate(cfg, task, work_dir=tmp, cache_dir=Path(tmp) / "cache"))
    return dict(_evaluate(cfg, task, work_dir=work_dir, cache_dir=Path(work_dir) / "cache"))
