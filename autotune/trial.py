"""One candidate end to end: sampled parameters → leaderboard row.

Stages run in a fixed order, each a function from one record to the next: build → train → export
→ compile → verify numerics → measure. A ``CandidateFailed`` from any stage becomes a ``failed``
row with its stage and reason; anything else is a bug and propagates.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as _dt
import functools
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autotune.config.device_profile import DeviceProfile
from autotune.config.search_space import TRAIN_KEYS, SearchSpace, metric_column
from autotune.data import DataSplits, load_data
from autotune.errors import CandidateFailed
from autotune.leaderboard import COLUMNS, SCHEMA_VERSION
from autotune.models import ModelFamily, build_model, resolve_family
from autotune.quiet import QuietLock
from autotune.records import CompiledArtifact, TrialConfig
from autotune.space import PARAM_PREFIXES, split_params

__all__ = [
    "Screening",
    "Task",
    "base_row",
    "evaluate",
    "load_trained_model",
    "make_trial_config",
    "measure_reference",
    "prepare_task",
    "retune",
    "structure_fixed",
    "violations",
    "worker_env",
]

log = logging.getLogger(__name__)

#: Called after each training epoch with (epoch, val_accuracy, val_loss).
EpochHook = Callable[[int, float, float], None]


@dataclass(frozen=True)
class Task:
    """What every trial of a run shares: the space, the profile, the data and the model family."""

    space: SearchSpace
    profile: DeviceProfile
    data: DataSplits
    family: ModelFamily
    others: tuple[DeviceProfile, ...] = ()  # a multi-device search's other devices


def prepare_task(space: SearchSpace, profile: DeviceProfile, *, others: tuple[DeviceProfile, ...] = ()) -> Task:
    """Load the data set and resolve the model family (once per worker)."""
    t = space.task
    data = load_data(
        t.data,
        val=t.split.val,
        test=t.split.test,
        seed=t.split.seed,
        input_shape=t.input_shape,
        num_classes=t.num_classes,
    )
    return Task(space=space, profile=profile, data=data, family=resolve_family(t.model), others=tuple(others))


def make_trial_config(params: Mapping[str, Any], space: SearchSpace, *, trial_id: str, seed: int) -> TrialConfig:
    """Fill defaults around the sampled ``params`` (keys ``'arch.x'`` / ``'train.y'``)."""
    constants = {
        f"{section}.{name}": spec
        for section, specs in (("arch", space.arch), ("train", space.train or {}))
        for name, spec in specs.items()
        if not hasattr(spec, "type")
    }
    params = {**constants, **params}
    train = None
    if space.trains:
        train = {**TRAIN_KEYS, **split_params(dict(params), "train")}
    arch = split_params(dict(params), "arch")
    arch["dropout"] = float(train["dropout"]) if train else 0.0
    compress = {}
    if space.compress:
        from autotune.compress import trial_settings

        compress = trial_settings(space, params)
    return TrialConfig(trial_id=trial_id, params=dict(params), arch=arch, train=train, seed=seed, compress=compress)


def violations(row: Mapping[str, Any], space: SearchSpace, profile: DeviceProfile) -> list[str]:
    """The hard constraints (space and device limits) that a measured row breaks."""
    bounds = {name: (c.min, c.max) for name, c in space.constraints.items()}
    if profile.limits.memory_bytes:
        lo, hi = bounds.get("peak_mem_bytes", (None, None))
        bounds["peak_mem_bytes"] = (lo, min(x for x in (hi, profile.limits.memory_bytes) if x is not None))
    if profile.limits.size_bytes:
        lo, hi = bounds.get("size_bytes", (None, None))
        bounds["size_bytes"] = (lo, min(x for x in (hi, profile.limits.size_bytes) if x is not None))
    out = []
    for name, (lo, hi) in bounds.items():
        v = row.get(metric_column(name))
        if v is None:
            continue
        if hi is not None and v > hi:
            out.append(f"{name}={v:.6g}>{hi:g}")
        if lo is not None and v < lo:
            out.append(f"{name}={v:.6g}<{lo:g}")
    return out


def worker_env(profile: DeviceProfile) -> dict[str, str]:
    """Environment a process needs before it imports TVM to measure on ``profile``.

    TVM sizes its thread pool once, at import. Thread binding is off: with it, TVM pins the
    calling thread to one core, which would also confine training in the same process.
    """
    return {"TVM_NUM_THREADS": str(profile.measure.threads), "TVM_BIND_THREADS": "0"}


def roofline_fraction(row: Mapping[str, Any], profile: DeviceProfile) -> float | None:
    """Achieved GFLOP/s (2 x MACs per inference over the latency) over the profile's fp32 peak;
    None without a measured ``peak`` or a latency."""
    macs, latency = row.get("macs"), row.get("latency_ms")
    if profile.peak is None or not macs or not latency or latency <= 0:
        return None
    return 2 * macs / (latency * 1e-3) / (profile.peak.fp32_gflops * 1e9)


def base_row(config: TrialConfig, task: Task, *, run: str, status: str, error: str | None = None) -> dict[str, Any]:
    """The row of a trial before (or without) any measurement: identity, parameters, status."""
    return {
        "schema_version": SCHEMA_VERSION,
        "run": run,
        "trial_id": config.trial_id,
        "status": status,
        "error": error,
        "device": task.profile.name,
        "seed": config.seed,
        "started_at": _now(),
        "finished_at": _now(),
        **config.params,
    }


def _tuning_request(task: Task, db: str | Path | None, trials: int, lock: QuietLock, seed: int) -> Any:
    from autotune.tuning import TuningRequest

    return TuningRequest(trials=trials, db_dir=str(db), lock=lock, seed=seed) if trials > 0 and db else None


def _compile(
    program: Any, task: Task, work: Path, request: Any, lock: QuietLock, deploy: tuple[str, str] = ("fp32", "tensor")
) -> CompiledArtifact:
    """Compile (and tune) at ``deploy = (precision, int8 weight granularity)``. ``compile_artifact``
    takes the lock itself (shared per phase; exclusive while tuning), so it must not be held here."""
    from autotune.compiler import compile_artifact

    kw = {"profile": task.profile, "out_dir": work, "input_shape": task.data.input_shape}
    kw |= {"precision": deploy[0], "weight_granularity": deploy[1]}
    if request is None:
        return compile_artifact(program, lock=lock, **kw)
    return compile_artifact(program, tuning=request, **kw)


def _deployment(cfg: TrialConfig, model: Any) -> tuple[str, str]:
    """(precision, int8 weight granularity) a trial's model is compiled at."""
    q = cfg.compress.get("quantize")
    if not q or not q.get("enabled", True):
        return "fp32", "tensor"
    return str(q["deploy"]), str(q["granularity"])


def _activation_bits(model: Any) -> int | None:
    from autotune.compress.fakequant import activation_bits

    return activation_bits(model)


def load_trained_model(row: Mapping[str, Any], task: Task, run_dir: str | Path) -> tuple[TrialConfig, Any]:
    """Re-create a finished trial's model (eval mode, not retrained): ``trials/<id>/weights.pt`` for the
    space's architecture, or ``trials/<id>/model.pt`` (the whole module) when compression changed it."""
    import torch

    params = {k: v for k, v in row.items() if k.startswith(PARAM_PREFIXES) and v is not None}
    cfg = make_trial_config(params, task.space, trial_id=str(row["trial_id"]), seed=int(row.get("seed") or 0))
    trial_dir = Path(run_dir) / "trials" / cfg.trial_id
    if (trial_dir / "model.pt").exists():  # written by this run's own workers
        return cfg, torch.load(trial_dir / "model.pt", weights_only=False).eval()
    model = build_model(task.family, cfg.arch, task.data.input_shape, task.data.num_classes)
    model.load_state_dict(torch.load(trial_dir / "weights.pt", weights_only=True))
    return cfg, model.eval()


def retune(
    row: Mapping[str, Any], task: Task, *, run_dir: str | Path, trials: int, tuning_db: str | Path
) -> dict[str, Any]:
    """Tune a finished trial's model with a larger budget, verify and re-measure it.

    Returns the columns to add to its row: ``latency_tuned_ms`` (with p90, CoV and interval),
    ``tuned_trials`` and ``tune_s`` (both added to the trial's), database hits and misses.

    Raises:
        CandidateFailed: tuning, compiling or the numerical check failed.
    """
    from autotune.exporter import export_program

    lock = QuietLock(None)
    cfg, model = load_trained_model(row, task, run_dir)
    program, exported, _ = export_program(model, task.data.input_shape)
    work = Path(run_dir) / "trials" / str(row["trial_id"]) / "tuned"
    deploy = _deployment(cfg, model)
    artifact = _compile(
        program,
        task,
        work,
        _tuning_request(task, tuning_db, trials, lock, int(row.get("seed") or 0)),
        lock,
        deploy,
    )
    numerics = _verify(artifact, exported, task, deploy, lock)
    m = _time(artifact, task, lock)
    return {
        "latency_tuned_ms": m.latency_ms,
        "latency_tuned_p90_ms": m.latency_p90_ms,
        "latency_tuned_cov": m.latency_cov,
        "tuned_max_abs_diff": numerics.max_abs_diff,
        "tuned_trials": int(row.get("tuned_trials") or 0) + artifact.tuned_trials,
        "tune_s": float(row.get("tune_s") or 0.0) + artifact.tune_s,
        "tune_db_hits": artifact.tune_db_hits,
        "tune_db_misses": artifact.tune_db_misses,
    }


def _compression(
    config: TrialConfig, task: Task, work: Path, cache_dir: Path, lock: QuietLock
) -> tuple[Any, list[tuple[Any, dict[str, Any]]]]:
    """The trial's compression context and plan (no passes: an empty plan; nothing is imported)."""
    from autotune.compress.base import CompressContext

    ctx = CompressContext(
        space=task.space,
        data=task.data,
        train=config.train,
        seed=config.seed,
        cache_dir=cache_dir,
        lock=lock,
    )
    if not config.compress:
        return ctx, []
    from autotune.compress.pipeline import plan_compression

    return ctx, plan_compression(config.compress)


def _compress(model: Any, plan: list[tuple[Any, dict[str, Any]]], ctx: Any, row: dict[str, Any]) -> Any:
    """Apply the passes; the row's accuracy, size and MAC columns then describe the compressed model
    and the ``*_uncompressed`` columns the trained model before compression."""
    import torch
    import torch_pruning as tp

    from autotune.compress.pipeline import compress_model
    from autotune.compress.prune import sparsity
    from autotune.train import accuracy

    t0 = time.perf_counter()
    waited0 = ctx.lock.waited_s
    row.update(accuracy_uncompressed=row.get("accuracy"), params_uncompressed=row["params"])
    row["macs_uncompressed"] = row["macs"]
    try:
        model = compress_model(model, plan, ctx)
    except CandidateFailed:
        raise
    except (RuntimeError, ValueError, IndexError, AssertionError) as err:  # torch-pruning, SVD, shape errors
        raise CandidateFailed("compress", f"{type(err).__name__}: {err}") from err
    data = ctx.data
    with torch.no_grad():
        macs, n_params = tp.utils.count_ops_and_params(model.eval(), torch.zeros((1, *data.input_shape)))
    row.update(ctx.report)
    row.update(params=int(n_params), macs=int(macs), sparsity=sparsity(model))
    if ctx.train is not None:
        with ctx.lock.shared():
            row["val_accuracy"], _ = accuracy(model, data.x_val, data.y_val)
            row["accuracy"], _ = accuracy(model, data.x_test, data.y_test)
    row["compress_s"] = time.perf_counter() - t0 - (ctx.lock.waited_s - waited0)
    return model


def _export_compile(model: Any, task: Task, work: Path, request: Any, lock: QuietLock) -> CompiledArtifact:
    """Export and compile a model at fp32 (the uncompressed, untrained and reference networks).

    Raises:
        CandidateFailed: the model cannot be imported or compiled.
    """
    from autotune.exporter import export_program

    with lock.shared():
        program, _, _ = export_program(model, task.data.input_shape)
    return _compile(program, task, work, request, lock)


def _verify(artifact: CompiledArtifact, exported: Any, task: Task, deploy: tuple[str, str], lock: QuietLock) -> Any:
    """Check the compiled model against its PyTorch model on held-out inputs, where it is deployed
    (on the device for an ``rpc`` profile), at the deployment precision's tolerance (a ``NumericsReport``).

    Raises:
        CandidateFailed: stage ``verify``: the outputs disagree, or the device fails.
    """
    from autotune.numerics import check_numerics, tolerance_for

    remote = None
    if task.profile.runner.kind == "rpc":
        from autotune.measure.rpc import run_remote

        remote = functools.partial(run_remote, artifact, task.profile.runner)
    tol = tolerance_for(task.profile, precision=deploy[0], act_bits=_activation_bits(exported))
    with lock.shared():
        return check_numerics(artifact, exported, task.data.x_test, profile=task.profile, run=remote, tolerance=tol)


def _time(artifact: CompiledArtifact, task: Task, lock: QuietLock) -> Any:
    """Time a compiled model on one test input with the profile's runner (a ``Measurement``)."""
    from autotune.measure import RUNNERS

    return RUNNERS.get(task.profile.runner.kind)(artifact, task.profile, task.data.x_test[:1], lock=lock)


#: The columns a multi-device search fills for each other device, as ``<column>@<profile name>``.
OTHER_DEVICE_COLUMNS = (
    "latency_ms", "latency_p90_ms", "latency_cov", "latency_ci_low_ms", "latency_ci_high_ms", "timing",
    "energy_mj", "energy_source", "idle_w", "max_abs_diff", "artifact_bytes", "compile_s", "verify_s", "measure_s",
)  # fmt: skip


def _on_other_device(
    program: Any, exported: Any, task: Task, other: DeviceProfile, work: Path, lock: QuietLock, deploy: tuple[str, str]
) -> dict[str, Any]:
    """Compile the deployed model for ``other`` (untuned), check it against PyTorch there and time it.

    Raises:
        CandidateFailed: any stage on that device, the reason prefixed ``on <name>:``.
    """
    sub = dataclasses.replace(task, profile=other, others=())
    try:
        artifact = _compile(program, sub, work, None, lock, deploy)
        numerics = _verify(artifact, exported, sub, deploy, lock)
        m = _time(artifact, sub, lock)
    except CandidateFailed as err:
        raise CandidateFailed(err.stage, f"on {other.name}: {err.reason}") from err
    cols = {**_columns(artifact), **_columns(numerics), **_columns(m), "timing": m.extra.get("timing", "local")}
    return {f"{k}@{other.name}": cols.get(k) for k in OTHER_DEVICE_COLUMNS}


def _uncompressed_latency(
    model: Any, task: Task, work: Path, request: Any, lock: QuietLock, latency_ms: float
) -> dict[str, Any]:
    """Compile and time the uncompressed model like the compressed one: ``latency_uncompressed_ms`` and
    ``speedup_vs_uncompressed`` (> 1: the compressed model is faster). A failure leaves them empty."""
    try:
        m = _time(_export_compile(model, task, work, request, lock), task, lock)
    except CandidateFailed as err:
        log.warning("the uncompressed model could not be timed: %s", err)
        return {}
    return {"latency_uncompressed_ms": m.latency_ms, "speedup_vs_uncompressed": m.latency_ms / latency_ms}


@dataclass(frozen=True)
class Screening:
    """What may stop a candidate before it is trained (``evaluate``'s screen).

    Attributes:
        constraint_first: compile and time the untrained network first when a hard constraint on a
            weight-independent metric exists and the predictor cannot already tell (see ``evaluate``).
        predictor: a fitted ``autotune.predictor.LatencyPredictor`` (or None): every candidate gets
            ``latency_pred_ms``; one confidently over a latency constraint is skipped.
        history: where measurements are appended for later predictors (``predictor.history_path``).
        key: the environment key stored with each measurement (``predictor.environment_key``).
        skip_sigmas: a candidate is skipped as predicted-infeasible when even ``pred·exp(-k·sigma)``
            breaks the latency constraint; it is timed untrained when the bound lies within
            ``min(exp((k-1)·sigma), 2)``× of ``pred``.
        seen: the smallest and largest comparable latency measured so far (None: none); decides
            whether to time an untrained network when there is no prediction.
        fit_s: seconds spent fitting ``predictor`` (added to the row's ``screen_s``).
    """

    constraint_first: bool = True
    predictor: Any = None
    history: Path | None = None
    key: Mapping[str, Any] | None = None
    skip_sigmas: float = 3.0
    seen: tuple[float, float] | None = None
    fit_s: float = 0.0


def structure_fixed(config: TrialConfig) -> bool:
    """True when nothing after training changes the deployed network's shape or precision (no
    structured pruning, low-rank factorization or quantization): its latency, size and MACs are then
    those of the untrained network."""
    c = config.compress
    on = {t: s for t, s in c.items() if s.get("enabled", True)}
    if "lowrank" in on or "quantize" in on:
        return False
    return not ("prune" in on and on["prune"].get("kind", "structured") == "structured")


def _weight_free_bounds(space: SearchSpace, profile: DeviceProfile) -> dict[str, tuple[float | None, float | None]]:
    """Hard constraints on metrics that do not depend on the weights (all but accuracy)."""
    from autotune.config.search_space import TRAINED_METRICS

    out = {n: (c.min, c.max) for n, c in space.constraints.items() if n not in TRAINED_METRICS and "@" not in n}
    for name, limit in (("peak_mem_bytes", profile.limits.memory_bytes), ("size_bytes", profile.limits.size_bytes)):
        if limit:
            lo, hi = out.get(name, (None, None))
            out[name] = (lo, limit if hi is None else min(hi, limit))
    return out


def _predicted_violation(pred: Any, space: SearchSpace, k: float) -> tuple[str | None, bool]:
    """(a violation the prediction makes near-certain: even at ``k`` sigmas, whether the prediction
    leaves one in doubt: the bound within ``k - 1`` sigmas of it, or within a factor 2)."""
    c = space.constraints.get("latency_ms")
    if pred is None or c is None:
        return None, True
    lo, hi = pred.bounds(k)
    if c.max is not None and lo > c.max:
        return f"latency_ms~{pred.latency_ms:.6g}>{c.max:g}", False
    if c.min is not None and hi < c.min:
        return f"latency_ms~{pred.latency_ms:.6g}<{c.min:g}", False
    factor = min(math.exp((k - 1) * pred.sigma), 2.0)  # a young predictor's wide sigma: as if none (2x)
    doubt = (c.max is not None and pred.latency_ms * factor > c.max) or (
        c.min is not None and pred.latency_ms / factor < c.min
    )
    return None, doubt


def _estimates(features: Mapping[str, float]) -> dict[str, float]:
    """Upper estimates of fp32 weight and peak memory bytes from the structure alone (weights plus
    every activation written, all live at once; TVM's memory plan reuses storage, so it needs less)."""
    written = sum(v for k, v in features.items() if k.startswith("out_"))
    return {"size_bytes": 4.0 * features["params"], "peak_mem_bytes": 4.0 * (features["params"] + written)}


def _in_doubt(
    bounds: Mapping[str, tuple[float | None, float | None]], features: Mapping[str, float], latency_doubt: bool
) -> bool:
    """Whether timing the untrained network could find a violation the cheap checks cannot rule out."""
    est = _estimates(features)
    for name, (lo, hi) in bounds.items():
        if name in ("macs", "params"):
            continue  # known exactly
        if name == "latency_ms":
            if latency_doubt:
                return True
        elif name in est and lo is None:
            if hi is None or est[name] > hi:
                return True
        else:
            return True  # energy, p90, artifact size: no cheap estimate
    return False


def _doubt_without_prediction(seen: tuple[float, float] | None, space: SearchSpace) -> bool:
    """Without a prediction: a latency bound is in doubt when nothing comparable was measured yet
    (the first candidate on a profile is timed untrained), or once a measurement (``seen``: the
    smallest and largest) came within a factor 2 of it. A bound far from every latency seen costs no
    untrained timing."""
    c = space.constraints.get("latency_ms")
    if c is None:
        return False
    if seen is None:
        return True
    return (c.max is not None and seen[1] > c.max / 2) or (c.min is not None and seen[0] < c.min * 2)


def _predict(
    screening: Screening, model: Any, input_shape: tuple[int, ...], precision: str, row: dict[str, Any]
) -> tuple[dict[str, float], Any]:
    """The model's structural features and the predictor's latency for it (``latency_pred_ms``)."""
    from autotune.predictor import structure_features

    features = structure_features(model, input_shape, precision=precision)
    pred = screening.predictor.predict(features) if screening.predictor is not None else None
    if pred is not None:
        row["latency_pred_ms"] = pred.latency_ms
    return features, pred


def _screen(
    model: Any,
    features: Mapping[str, float],
    pred: Any,
    row: dict[str, Any],
    task: Task,
    screening: Screening,
    work: Path,
    request: Any,
    lock: QuietLock,
    enter: Callable[[str], None],
) -> bool:
    """Screen an untrained candidate (see ``evaluate``); True when it is infeasible (row filled)."""
    from autotune.predictor import MIN_FOR_SKIP

    space, profile = task.space, task.profile
    bounds = _weight_free_bounds(space, profile)
    if not bounds:
        return False
    broken = [v for v in violations(row, space, profile) if v.split("=")[0] in ("macs", "params")]
    how, doubt = "constraint-first", _doubt_without_prediction(screening.seen, space)
    if not broken and pred is not None:
        sure, doubt = _predicted_violation(pred, space, screening.skip_sigmas)
        if sure and pred.samples >= MIN_FOR_SKIP:
            broken, how = [sure], "predicted"
        elif sure:
            doubt = True  # too few measurements to skip on a prediction: time it
    latency_doubt = doubt and "latency_ms" in space.constraints
    if not broken and screening.constraint_first and _in_doubt(bounds, features, latency_doubt):
        enter("constraint-first: compile untrained")
        artifact = _export_compile(model, task, work / "untrained", request, lock)
        enter("constraint-first: measure untrained")
        m = _time(artifact, task, lock)
        probe = {**_columns(artifact), **_columns(m), "size_bytes": artifact.weights_bytes}
        probe["timing"] = m.extra.get("timing", "local")
        _record(screening, features, {**row, **probe})
        broken = violations({**row, **probe}, space, profile)
        if broken:
            row.update(probe)
    if not broken:
        return False
    row.update(status="infeasible", screened=how, violations=";".join(broken))
    return True


def _record(screening: Screening | None, features: Mapping[str, float] | None, row: Mapping[str, Any]) -> None:
    if screening is None or screening.history is None or features is None or screening.key is None:
        return
    if not isinstance(row.get("latency_ms"), int | float) or row.get("timing") == "emulated":
        return  # emulated timings are never latency
    from autotune.predictor import record_measurement

    record_measurement(
        screening.history,
        screening.key,
        features,
        float(row["latency_ms"]),
        run=str(row.get("run") or ""),
        trial_id=str(row.get("trial_id") or ""),
    )


def reference_model(input_shape: tuple[int, ...], num_classes: int) -> Any:
    """The fixed network re-timed every few trials to detect drift: an MLP (512-512) over the
    flattened input, seeded weights, so every measurement of a run times the same computation."""
    import torch
    from torch import nn

    gen = torch.Generator().manual_seed(0)
    n_in = int(math.prod(input_shape))
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(n_in, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, num_classes)
    )
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return model.eval()


def measure_reference(task: Task, cache_dir: str | Path, lock: QuietLock) -> dict[str, Any]:
    """Time the reference network on the profile's device: ``reference_latency_ms``. It is compiled
    once per run (``<cache>/reference``, under an flock) and timed like a candidate. A failure leaves
    the column empty (drift detection is advisory)."""
    import fcntl
    import json

    ref = Path(cache_dir) / "reference"
    ref.mkdir(parents=True, exist_ok=True)
    try:
        with open(ref / ".lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            record = ref / "artifact.json"
            if record.exists():
                fields = json.loads(record.read_text())
                artifact = CompiledArtifact(**{**fields, "input_shape": tuple(fields["input_shape"])})
            else:
                model = reference_model(task.data.input_shape, task.data.num_classes)
                artifact = _export_compile(model, task, ref, None, lock)
                record.write_text(json.dumps(dataclasses.asdict(artifact)))
        m = _time(artifact, task, lock)
    except CandidateFailed as err:
        log.warning("the reference model could not be timed: %s", err)
        return {}
    return {"reference_latency_ms": m.latency_ms}


def _columns(record: Any) -> dict[str, Any]:
    """The fields of a stage record that are leaderboard columns (same names)."""
    return {k: v for k, v in dataclasses.asdict(record).items() if k in COLUMNS}


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def evaluate(
    config: TrialConfig,
    task: Task,
    *,
    run: str = "",
    work_dir: str | Path,
    lock: QuietLock | None = None,
    on_epoch: EpochHook | None = None,
    on_stage: Callable[[str], None] | None = None,
    tuning_db: str | Path | None = None,
    cache_dir: str | Path | None = None,
    screening: Screening | None = None,
) -> dict[str, Any]:
    """Build, train, compress, compile, verify and measure one candidate; return its leaderboard row.

    With ``screening``, a candidate whose deployed structure is fixed before training
    (``structure_fixed``) is screened against the hard constraints on weight-independent metrics
    first: MACs and parameters from the built model; latency from the predictor when it is sure
    (``status=infeasible``, ``screened=predicted``, no latency measured); otherwise, when a constraint
    could be broken, the untrained network is compiled and timed (``screened=constraint-first``, the
    measured figures in the row). A screened-out candidate is never trained (``train_s`` 0).

    A compressed candidate is checked against its compressed PyTorch model (for quantized
    activations, its fake-quantized twin, on the whole test set; see ``numerics.tolerance_for``), and
    the same architecture uncompressed is compiled the same way and timed for
    ``speedup_vs_uncompressed``.

    Args:
        work_dir: where the candidate's files go (``model.so``, ``weights.pt``).
        lock: the run's quiet-measurement lock (shared while working, exclusive while timing).
        on_epoch: called after every training epoch (Ray Tune reports; ASHA may stop the trial).
        on_stage: called with the stage's name as each stage starts (progress, failure reports).
        tuning_db: the profile's MetaSchedule database; with ``tuning.trials_per_candidate > 0`` the
            candidate is tuned into it (known workloads are reused, not re-measured).
        cache_dir: files every trial of the run shares (the distillation teacher); default
            ``<work_dir>/../../cache`` (the run directory's ``cache``).
    """
    import os
    import sys

    if "tvm" not in sys.modules:  # in-process use (the API); Ray workers already have it (tuner._init_ray)
        for k, v in worker_env(task.profile).items():
            os.environ.setdefault(k, v)
    import torch
    import torch_pruning as tp

    from autotune.exporter import export_program
    from autotune.measure.base import fingerprint
    from autotune.train import train

    lock = lock or QuietLock(None)
    waited_at_start = lock.waited_s
    space, profile, data = task.space, task.profile, task.data
    row = base_row(config, task, run=run, status="failed")
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    cache_dir = Path(cache_dir) if cache_dir is not None else work.parent.parent / "cache"
    stage = ""

    def enter(name: str) -> None:
        nonlocal stage
        stage = name
        if on_stage:
            on_stage(name)

    enter("build")
    t_build = time.perf_counter()
    try:
        torch.manual_seed(config.seed)
        try:
            model = build_model(task.family, config.arch, data.input_shape, data.num_classes)
        except (ValueError, TypeError, RuntimeError) as err:
            raise CandidateFailed("build", f"{type(err).__name__}: {err}") from err
        if not isinstance(model, torch.nn.Module):
            raise CandidateFailed("build", f"the model builder returned {type(model).__name__}, not a torch.nn.Module")
        with torch.no_grad():
            macs, n_params = tp.utils.count_ops_and_params(model.eval(), torch.zeros((1, *data.input_shape)))
        row.update(params=int(n_params), macs=int(macs), build_s=time.perf_counter() - t_build)
        ctx, plan = _compression(config, task, work, cache_dir, lock)
        request = _tuning_request(task, tuning_db, profile.tuning.trials_per_candidate, lock, config.seed)
        features = None
        if screening is not None and structure_fixed(config):
            t_screen, waited0 = time.perf_counter(), lock.waited_s
            features, pred = _predict(screening, model, data.input_shape, "fp32", row)
            out = _screen(model, features, pred, row, task, screening, work, request, lock, enter)
            row["screen_s"] = screening.fit_s + time.perf_counter() - t_screen - (lock.waited_s - waited0)
            if out:
                row.update(epochs=0, train_s=0.0, finished_at=_now(), quiet_wait_s=lock.waited_s - waited_at_start)
                row["roofline_fraction"] = roofline_fraction(row, profile)
                return row
        if plan:
            enter("compress: prepare")
            for step, settings in plan:
                step.prepare(settings, ctx)  # distillation: the run's teacher (trained once, cached)
        enter("train")
        if config.train is not None:
            trained = train(model, data, config.train, seed=config.seed, lock=lock, on_epoch=on_epoch, loss=ctx.loss)
            row.update(
                accuracy=trained.accuracy,
                val_accuracy=trained.val_accuracy,
                epochs=trained.epochs,
                train_s=trained.train_s,
            )
            model = trained.model
        else:
            row.update(epochs=0, train_s=0.0)
        torch.save(model.state_dict(), work / "weights.pt")
        uncompressed = None
        if plan:
            enter("compress")
            uncompressed = copy.deepcopy(model).eval()
            model = _compress(model, plan, ctx, row)
            torch.save(model, work / "model.pt")
        deploy = _deployment(config, model)
        if screening is not None and features is None:  # compressed: the deployed structure is known now
            features, _ = _predict(screening, model, data.input_shape, deploy[0], row)
        enter("export")
        with lock.shared():
            program, exported, export_s = export_program(model, data.input_shape)
        enter(f"compile (tuning {request.trials} trials)" if request else "compile")
        artifact = _compile(program, task, work, request, lock, deploy)
        row.update(_columns(artifact), size_bytes=artifact.weights_bytes, export_s=export_s)
        enter("verify")
        row.update(_columns(_verify(artifact, exported, task, deploy, lock)))
        enter("measure")
        m = _time(artifact, task, lock)
        row.update(_columns(m), timing=m.extra.get("timing", "local"))
        row.update(fingerprint(profile.runner.kind, profile.runner.key))
        _record(screening, features, row)
        for other in task.others:
            enter(f"on {other.name}")
            row.update(_on_other_device(program, exported, task, other, work / f"@{other.name}", lock, deploy))
        if uncompressed is not None:
            enter("measure uncompressed")
            row.update(_uncompressed_latency(uncompressed, task, work / "uncompressed", request, lock, m.latency_ms))
        broken = violations(row, space, profile)
        row["violations"] = ";".join(broken)
        row["status"] = "infeasible" if broken else "ok"
    except CandidateFailed as err:
        row["error"] = str(err)
        log.info("trial %s failed in %s: %s", config.trial_id, err.stage, err.reason)
    except (MemoryError, torch.OutOfMemoryError) as err:
        row["error"] = f"{stage}: out of memory: {err}"
    for k in ("accuracy", "val_accuracy"):
        v = row.get(k)
        if isinstance(v, float) and not math.isfinite(v):
            row[k] = None
    row.update(finished_at=_now(), quiet_wait_s=lock.waited_s - waited_at_start)
    row["roofline_fraction"] = roofline_fraction(row, profile)
    return row
