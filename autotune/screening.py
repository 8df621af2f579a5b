"""Screening: stop a candidate before it is trained when it surely breaks a hard constraint.

Only for a candidate whose deployed structure is fixed before training (no pass ``changes_structure``):
its latency, size, memory and MACs are then those of the untrained network. MACs and parameters are
checked exactly; latency by the predictor when it is sure (``screened = predicted``, nothing timed);
otherwise, when a constraint could be broken, the untrained network is compiled and timed
(``screened = constraint-first``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autotune.config.search_space import SearchSpace
from autotune.constraints import Bounds, violations, weight_free_bounds
from autotune.leaderboard.row import DeviceResult, ScreenReport
from autotune.quiet import QuietLock

if TYPE_CHECKING:
    from torch import nn

    from autotune.config.device_profile import DeviceProfile
    from autotune.task import Task

__all__ = ["Screening", "predict", "prediction_report", "record", "screen"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Screening:
    """What may stop a candidate before it is trained (``screen``).

    Attributes:
        constraint_first: compile and time the untrained network first when a hard constraint on a
            weight-independent metric exists and the predictor cannot already tell.
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
        kernels: a fitted ``autotune.kernel_predictor.KernelPredictor`` that predicts better than
            ``predictor`` (cross-validated) and is used instead (``latency_pred_model = kernels``),
            or blended with it by ``blend``.
        blend: an ``autotune.blend.Blend`` of ``predictor`` and ``kernels`` (None: ``kernels`` alone).
        table: the profile's kernel table (``kernel_table.table_path``), or None; filled with the
            new kernels of every candidate timed on a ``local`` profile.
        tuning_db: the profile's tuning database (which kernels a candidate gets tuned).
    """

    constraint_first: bool = True
    predictor: Any = None
    history: Path | None = None
    key: Mapping[str, Any] | None = None
    skip_sigmas: float = 3.0
    seen: tuple[float, float] | None = None
    fit_s: float = 0.0
    kernels: Any = None
    blend: Any = None
    table: Path | None = None
    tuning_db: str | None = None


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


def _in_doubt(bounds: Bounds, features: Mapping[str, float], latency_doubt: bool) -> bool:
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


def prediction_report(pred: Any, seconds: float | None = None, **kw: Any) -> ScreenReport:
    """The ``ScreenReport`` of a prediction (``predict``'s second value, or None): for a candidate
    screening could not judge before training (compression changed it), all there is to report."""
    if pred is None:
        return ScreenReport(seconds=seconds, **kw)
    return ScreenReport(seconds=seconds, latency_pred_ms=pred.latency_ms, latency_pred_model=pred.source, **kw)


def predict(
    screening: Screening,
    model: nn.Module,
    input_shape: tuple[int, ...],
    precision: str,
    profile: DeviceProfile,
    lock: QuietLock | None = None,
    program: Any = None,
) -> tuple[dict[str, float], Any]:
    """The model's structural features and the predicted latency for it (None without a predictor):
    the kernel-level predictor's (blended with the network-level one's by ``screening.blend``) when
    the screening has one (the model's exported ``program``, or the model exported now, is fused to
    find its kernels, holding ``lock`` shared as a compile does), else the network-level one's."""
    from autotune.predictor import structure_features

    features = structure_features(model, input_shape, precision=precision)
    if screening.kernels is not None:
        from autotune.compiler.kernels import candidate_workloads
        from autotune.errors import CandidateFailed
        from autotune.exporter import export_program

        try:
            with (lock or QuietLock(None)).shared():
                if program is None:
                    program, _, _ = export_program(model, input_shape)
                workloads = candidate_workloads(program, profile, precision=precision, db_dir=screening.tuning_db)
        except CandidateFailed:  # the deployment will fail in its own stage, with its reason
            return features, None
        kernels = screening.kernels.predict(workloads)
        if screening.blend is None:
            return features, kernels
        network = screening.predictor.predict(features) if screening.predictor is not None else None
        return features, screening.blend.predict(network, kernels)
    pred = screening.predictor.predict(features) if screening.predictor is not None else None
    return features, pred


def record(
    screening: Screening | None,
    features: Mapping[str, float] | None,
    row: Mapping[str, Any],
    *,
    artifact: Any = None,
    profile: DeviceProfile | None = None,
    lock: QuietLock | None = None,
) -> None:
    """Append a measured latency to the predictor's history (emulated timings are never latency).

    With the measured TVM ``artifact`` on a ``local`` profile, its kernels the kernel table lacks are
    timed alone from its library and added (``autotune.kernel_table``), and its workloads stored
    with the measurement.
    """
    if screening is None or screening.history is None or features is None or screening.key is None:
        return
    if not isinstance(row.get("latency_ms"), int | float) or row.get("timing") == "emulated":
        return
    from autotune.predictor import record_measurement

    kernels, new = _fill_table(screening, artifact, profile, lock)
    record_measurement(
        screening.history,
        screening.key,
        features,
        float(row["latency_ms"]),
        run=str(row.get("run") or ""),
        trial_id=str(row.get("trial_id") or ""),
        kernels=kernels,
        new_kernels=new,
    )


def _fill_table(
    screening: Screening, artifact: Any, profile: DeviceProfile | None, lock: QuietLock | None
) -> tuple[list[dict[str, Any]] | None, int | None]:
    """Time the artifact's kernels the table lacks (see ``record``; on the profile's device): its
    workloads as dicts and how many were new, or (None, None) when there is no table or workload list."""
    if screening.table is None or artifact is None or profile is None:
        return None, None
    from autotune.compiler.workloads import read_workloads
    from autotune.kernel_table import KernelTable

    workloads = read_workloads(Path(artifact.path).parent)
    if not workloads:
        return None, None
    table = KernelTable.load(screening.table, screening.key)
    try:
        new = table.fill(artifact.path, workloads, profile, lock)
    except Exception:  # TVMError: a kernel the library does not export; the row does not depend on it
        log.warning("the kernel table could not time %s's kernels", artifact.path, exc_info=True)
        return None, None
    return [dataclasses.asdict(w) for w in workloads], new


def screen(
    model: nn.Module,
    structure: Mapping[str, float],
    task: Task,
    screening: Screening,
    *,
    probe: Callable[[], DeviceResult],
    identity: Mapping[str, Any],
    lock: QuietLock,
) -> tuple[ScreenReport, dict[str, float]]:
    """Screen an untrained candidate: a ``ScreenReport`` (``screened`` set when it is infeasible) and
    the model's structural features (for the predictor's history).

    Args:
        structure: the built model's exact ``macs`` and ``params``.
        probe: compiles and times the untrained network (called only when a constraint is in doubt).
        identity: the row's ``run`` and ``trial_id``, stored with the probe's measurement.
        lock: the quiet-measurement lock; time waiting for it is not screening time.
    """
    from autotune.predictor import MIN_FOR_SKIP

    t0, waited0 = time.perf_counter(), lock.waited_s
    space, profile = task.space, task.profile
    features, pred = predict(screening, model, task.data.input_shape, "fp32", profile, lock)

    def report(**kw: Any) -> tuple[ScreenReport, dict[str, float]]:
        seconds = screening.fit_s + time.perf_counter() - t0 - (lock.waited_s - waited0)
        return prediction_report(pred, seconds, **kw), features

    bounds = weight_free_bounds(space, profile)
    if not bounds:
        return report()
    broken = [v for v in violations(structure, space, profile) if v.split("=")[0] in ("macs", "params")]
    how, doubt = "constraint-first", _doubt_without_prediction(screening.seen, space)
    if not broken and pred is not None:
        sure, doubt = _predicted_violation(pred, space, screening.skip_sigmas)
        if sure and pred.samples >= MIN_FOR_SKIP:
            broken, how = [sure], "predicted"
        elif sure:
            doubt = True  # too few measurements to skip on a prediction: time it
    latency_doubt = doubt and "latency_ms" in space.constraints
    probed: DeviceResult | None = None
    if not broken and screening.constraint_first and _in_doubt(bounds, features, latency_doubt):
        probed = probe()
        m, a = probed.measurement, probed.artifact
        measured = {**structure, **dataclasses.asdict(a), **dataclasses.asdict(m), "size_bytes": a.weights_bytes}
        record(screening, features, {**identity, **measured}, artifact=a, profile=profile, lock=lock)
        broken = violations(measured, space, profile)
    if not broken:
        return report()
    return report(screened=how, violations=tuple(broken), probe=probed)
