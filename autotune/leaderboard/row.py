"""``LeaderboardRow``: one trial's row, the last record of the chain, and the only writer of row keys.

A row is built by ``from_records`` from the trial's records (or by ``unfinished`` for a trial that
ended before it produced them: pruned by ASHA, lost with its process). It is a read-only mapping from
column name to value: ``row["latency_ms"]``, ``dict(row)`` for JSON. Column names and their order are
the schema's (``autotune.leaderboard.schema``); a column that the schema lacks is refused here, so a
new column is added there first.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from autotune.records import (
    CompiledArtifact,
    CompressedModel,
    Measurement,
    NumericsReport,
    TrainedModel,
    TrialConfig,
)

__all__ = ["BackendOutcome", "DeviceResult", "LeaderboardRow", "ScreenReport", "now", "roofline_fraction"]

#: The columns a multi-device search fills for each other device, as ``<column>@<profile name>``.
OTHER_DEVICE_COLUMNS = (
    "latency_ms", "latency_p90_ms", "latency_cov", "latency_ci_low_ms", "latency_ci_high_ms", "timing",
    "energy_mj", "energy_source", "idle_w", "max_abs_diff", "artifact_bytes", "compile_s", "verify_s", "measure_s",
)  # fmt: skip

#: The columns each of a profile's other backends fills, as ``<column>@<backend>``: the device
#: columns, the precision it ran at, and its own ``status`` (ok, failed, not on device) and ``error``.
BACKEND_COLUMNS = (*OTHER_DEVICE_COLUMNS, "deploy_precision", "status", "error")

_PARAM_PREFIXES = ("arch.", "train.", "compress.")


def now() -> str:
    """The time stamp written in ``started_at`` / ``finished_at`` (UTC, seconds)."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class DeviceResult:
    """One device's compile, check and timing of a candidate (the main device's, or another's)."""

    artifact: CompiledArtifact
    numerics: NumericsReport | None
    measurement: Measurement


@dataclass(frozen=True)
class BackendOutcome:
    """What one of a profile's other backends made of the candidate: its result when it was built,
    checked and timed (``status`` ok), else its ``status`` (failed, not on device) and ``error``."""

    result: DeviceResult | None
    status: str = "ok"
    error: str | None = None


@dataclass(frozen=True)
class ScreenReport:
    """What screening decided before training.

    ``screened`` is ``predicted`` or ``constraint-first`` when the candidate was stopped (then
    ``violations`` says why), else None; ``probe`` holds the untrained network's compile and timing
    when it was timed and found infeasible; ``latency_pred_ms`` the predictor's latency, if any, and
    ``latency_pred_model`` which predictor made it (``kernels``, ``network`` or ``blend``: a weighted
    geometric mean of both, ``autotune.blend``).
    """

    seconds: float | None
    latency_pred_ms: float | None = None
    latency_pred_model: str | None = None
    screened: str | None = None
    violations: tuple[str, ...] = ()
    probe: DeviceResult | None = None


def roofline_fraction(columns: Mapping[str, Any], peak_fp32_gflops: float | None) -> float | None:
    """Achieved GFLOP/s (2 x MACs per inference over the latency) over the device's fp32 peak; None
    without a measured peak or a latency."""
    macs, latency = columns.get("macs"), columns.get("latency_ms")
    if not peak_fp32_gflops or not macs or not latency or latency <= 0:
        return None
    return 2 * macs / (latency * 1e-3) / (peak_fp32_gflops * 1e9)


def _fields(record: Any, names: tuple[str, ...]) -> dict[str, Any]:
    """The fields of a record that are schema columns (same names)."""
    if record is None:
        return {}
    return {k: v for k, v in dataclasses.asdict(record).items() if k in names and k != "extra"}


def _device_columns(result: DeviceResult, names: tuple[str, ...]) -> dict[str, Any]:
    cols = {**_fields(result.artifact, names), **_fields(result.numerics, names)}
    cols |= _fields(result.measurement, names)
    cols["timing"] = result.measurement.timing
    return cols


def _backend_columns(first: str, main: DeviceResult, backends: Mapping[str, BackendOutcome]) -> dict[str, Any]:
    """``backend``, each other backend's ``<column>@<backend>``, and the fastest verified of them all."""
    cols: dict[str, Any] = {"backend": first}
    latency = {first: main.measurement.latency_ms}
    for name, outcome in backends.items():
        got: dict[str, Any] = {}
        if outcome.result is not None:
            got = _device_columns(outcome.result, BACKEND_COLUMNS)
            got["deploy_precision"] = outcome.result.artifact.deploy_precision
            latency[name] = outcome.result.measurement.latency_ms
        got |= {"status": outcome.status, "error": outcome.error}
        cols |= {f"{k}@{name}": got.get(k) for k in BACKEND_COLUMNS}
    best = min(latency, key=lambda n: latency[n])
    return cols | {"best_backend": best, "best_latency_ms": latency[best]}


def _finite(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


@dataclass(frozen=True)
class LeaderboardRow(Mapping[str, Any]):
    """One trial's leaderboard row: a read-only mapping of column → value (see the module docstring)."""

    _columns: Mapping[str, Any] = field(repr=False)

    def __getitem__(self, key: str) -> Any:
        return self._columns[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._columns)

    def __len__(self) -> int:
        return len(self._columns)

    @classmethod
    def _make(cls, columns: Mapping[str, Any]) -> LeaderboardRow:
        from autotune.leaderboard.schema import COLUMNS

        unknown = [k for k in columns if k not in COLUMNS and not k.startswith(_PARAM_PREFIXES) and "@" not in k]
        if unknown:
            raise ValueError(f"not leaderboard columns: {', '.join(unknown)} (add them to the schema first)")
        return cls(MappingProxyType({k: _finite(v) for k, v in columns.items()}))

    @classmethod
    def unfinished(
        cls,
        *,
        run: str,
        trial_id: str,
        device: str,
        seed: int,
        params: Mapping[str, Any],
        status: str,
        error: str | None,
        started_at: str | None = None,
        study_trial: int | None = None,
        node: str | None = None,
        val_accuracy: float | None = None,
        epochs: int | None = None,
    ) -> LeaderboardRow:
        """The row of a trial that ended without records (pruned by ASHA, stopped, its process lost)."""
        from autotune.leaderboard.schema import SCHEMA_VERSION

        finished = now()
        return cls._make(
            {
                "schema_version": SCHEMA_VERSION,
                "run": run,
                "trial_id": trial_id,
                "study_trial": study_trial,
                "status": status,
                "error": error,
                "device": device,
                "val_accuracy": val_accuracy,
                "epochs": epochs,
                "node": node,
                "seed": seed,
                "started_at": started_at or finished,
                "finished_at": finished,
                **params,
            }
        )

    @classmethod
    def from_records(
        cls,
        config: TrialConfig,
        *,
        run: str,
        device: str,
        started_at: str,
        status: str = "ok",
        error: str | None = None,
        structure: Mapping[str, int] | None = None,
        trained: TrainedModel | None = None,
        compressed: CompressedModel | None = None,
        pass_columns: Mapping[str, Any] | None = None,
        main: DeviceResult | None = None,
        others: Mapping[str, DeviceResult | None] | None = None,
        backends: Mapping[str, BackendOutcome] | None = None,
        backend: str = "tvm",
        uncompressed: Measurement | None = None,
        screen: ScreenReport | None = None,
        fingerprint: Mapping[str, Any] | None = None,
        reference_latency_ms: float | None = None,
        peak_fp32_gflops: float | None = None,
        violations: tuple[str, ...] = (),
        seconds: Mapping[str, float] | None = None,
        node: str | None = None,
    ) -> LeaderboardRow:
        """Build a trial's row from its records.

        Args:
            structure: the built model's ``macs`` and ``params`` (before training and compression).
            pass_columns: what the compression passes reported (``PassReport.columns`` and the
                columns of ``prepare``), merged in pipeline order.
            main: the compile, check and timing on the profile's device by its first backend
                (``backend``); ``others`` the same on a multi-device search's other devices
                (``<column>@<device>``; None: not reached); ``backends`` the profile's other backends
                (``<column>@<backend>``), compared with the first in ``best_backend``/``best_latency_ms``.
            uncompressed: the same architecture uncompressed, timed like the candidate.
            seconds: the stage timings that no record carries (``build_s``, ``export_s``,
                ``quiet_wait_s``, ``reference_s``), by column name.
        """
        from autotune.leaderboard.schema import COLUMNS, SCHEMA_VERSION

        cols: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "run": run,
            "trial_id": config.trial_id,
            "study_trial": config.study_trial,
            "status": status,
            "error": error,
            "device": device,
            "seed": config.seed,
            "started_at": started_at,
            "node": node,
        }
        cols |= dict(structure or {})
        if trained is not None:
            cols |= {"accuracy": trained.accuracy, "val_accuracy": trained.val_accuracy}
            cols |= {"epochs": trained.epochs, "train_s": trained.train_s}
        if compressed is not None:
            cols |= {"params": compressed.params, "macs": compressed.macs}
            if compressed.compressed:
                cols |= {
                    "accuracy_uncompressed": cols.get("accuracy"),
                    "params_uncompressed": compressed.params_before,
                    "macs_uncompressed": compressed.macs_before,
                    "accuracy": compressed.accuracy,
                    "val_accuracy": compressed.val_accuracy,
                    "sparsity": compressed.sparsity,
                    "compress_s": compressed.seconds,
                }
        cols |= dict(pass_columns or {})
        if screen is not None:
            cols |= {"screen_s": screen.seconds, "latency_pred_ms": screen.latency_pred_ms,
                     "latency_pred_model": screen.latency_pred_model}  # fmt: skip
            if screen.screened:
                cols |= {"screened": screen.screened, "epochs": 0, "train_s": 0.0}
            if screen.probe is not None:
                cols |= _device_columns(screen.probe, COLUMNS)
                cols["size_bytes"] = screen.probe.artifact.weights_bytes
        if main is not None:
            cols |= _device_columns(main, COLUMNS)
            cols["size_bytes"] = main.artifact.weights_bytes
        cols |= dict(fingerprint or {})
        for name, result in (others or {}).items():
            got = _device_columns(result, OTHER_DEVICE_COLUMNS) if result is not None else {}
            cols |= {f"{k}@{name}": got.get(k) for k in OTHER_DEVICE_COLUMNS}
        if main is not None:
            cols |= _backend_columns(backend, main, backends or {})
        if uncompressed is not None and main is not None:
            cols["latency_uncompressed_ms"] = uncompressed.latency_ms
            cols["speedup_vs_uncompressed"] = uncompressed.latency_ms / main.measurement.latency_ms
        if reference_latency_ms is not None:
            cols["reference_latency_ms"] = reference_latency_ms
        cols |= dict(seconds or {})
        if violations or status != "failed":
            cols["violations"] = ";".join(violations)
        cols["roofline_fraction"] = roofline_fraction(cols, peak_fp32_gflops)
        cols["finished_at"] = now()
        return cls._make({**cols, **config.params})

    def judged(self, violations: list[str] | tuple[str, ...]) -> LeaderboardRow:
        """This measured row with its verdict: ``infeasible`` when it breaks a hard constraint."""
        status = "infeasible" if violations else self["status"]
        return LeaderboardRow._make({**self._columns, "status": status, "violations": ";".join(violations)})
