"""The leaderboard's schema: its columns in order, the row statuses, and column-name helpers.

The column order is the public schema (see README, "Leaderboard columns"); ``SCHEMA_VERSION``
changes when it does. A column of another device of a multi-device search is written
``<column>@<device>`` (``latency_ms@rpi5``), and one of a profile's other backends
``<column>@<backend>`` (``latency_ms@onnxruntime``).
"""

from __future__ import annotations

__all__ = [
    "COLUMNS",
    "DETAIL_COLUMNS",
    "SCHEMA_VERSION",
    "STATUSES",
    "SUMMARY_COLUMNS",
    "TEXT_COLUMNS",
    "TIMED_COLUMNS",
    "TUNED_COLUMNS",
    "at_device",
    "split_device",
    "summary_columns",
]

#: 2: compression columns (deploy_precision ... compress_s); 3: screening, predictor, drift;
#: 4: quiet_wait_s, roofline_fraction, idle_w (energy_mj above idle); 5: latency_repeats;
#: 6: weight_clusters (the weight-clustering pass); 7: tuned_share; 8: backend, best_backend,
#: best_latency_ms (and ``<column>@<backend>`` for a profile's other backends); 9: latency_pred_model;
#: 10: int8_path; 11: reference_ratio, latency_window_ms (paired timing)
SCHEMA_VERSION = 11
STATUSES = ("ok", "infeasible", "pruned", "failed")

#: Fixed columns, in order; sampled parameters follow as ``arch.*``, ``compress.*`` and ``train.*`` (sorted).
COLUMNS: tuple[str, ...] = (
    "schema_version",
    "run",
    "trial_id",
    "study_trial",
    "status",
    "error",
    "device",
    "accuracy",
    "val_accuracy",
    "latency_ms",
    "latency_p90_ms",
    "latency_cov",
    "latency_ci_low_ms",
    "latency_ci_high_ms",
    "latency_repeats",
    "reference_ratio",
    "latency_window_ms",
    "timing",
    "backend",
    "best_backend",
    "best_latency_ms",
    "latency_pred_ms",
    "latency_pred_model",
    "screened",
    "energy_mj",
    "energy_source",
    "idle_w",
    "size_bytes",
    "artifact_bytes",
    "peak_mem_bytes",
    "peak_mem_source",
    "params",
    "macs",
    "roofline_fraction",
    "deploy_precision",
    "int8_ops",
    "int8_path",
    "compute_ops",
    "sparsity",
    "quant_bits",
    "lowrank_layers",
    "weight_clusters",
    "teacher_accuracy",
    "accuracy_uncompressed",
    "params_uncompressed",
    "macs_uncompressed",
    "latency_uncompressed_ms",
    "speedup_vs_uncompressed",
    "max_abs_diff",
    "top1_agreement",
    "pareto_rank",
    "violations",
    "epochs",
    "build_s",
    "screen_s",
    "train_s",
    "compress_s",
    "export_s",
    "import_s",
    "compile_s",
    "tune_s",
    "tuned_trials",
    "tune_db_hits",
    "tune_db_misses",
    "tuned_share",
    "latency_tuned_ms",
    "latency_tuned_p90_ms",
    "latency_tuned_cov",
    "tuned_max_abs_diff",
    "verify_s",
    "measure_s",
    "reference_s",
    "quiet_wait_s",
    "threads",
    "load_avg",
    "reference_latency_ms",
    "drift",
    "drift_flag",
    "cpu_model",
    "cpu_governor",
    "tvm_version",
    "torch_version",
    "node",
    "target",
    "seed",
    "started_at",
    "finished_at",
)


#: The columns a person looks at first (CLI tables); reports add ``DETAIL_COLUMNS``.
SUMMARY_COLUMNS: tuple[str, ...] = (
    "trial_id",
    "status",
    "pareto_rank",
    "accuracy",
    "val_accuracy",
    "latency_ms",
    "latency_tuned_ms",
    "latency_cov",
    "best_backend",
    "best_latency_ms",
    "energy_mj",
    "size_bytes",
    "macs",
    "deploy_precision",
    "speedup_vs_uncompressed",
)
DETAIL_COLUMNS: tuple[str, ...] = (
    "latency_p90_ms",
    "timing",
    "energy_source",
    "peak_mem_bytes",
    "params",
    "max_abs_diff",
    "latency_pred_ms",
    "screened",
    "drift_flag",
)


#: Columns that hold text even when a value looks like a number (Ray's hex trial id ``6191e151``
#: reads as 6.191e154; node ids and versions likewise).
TEXT_COLUMNS = frozenset(
    ("run", "trial_id", "status", "error", "device", "timing", "backend", "best_backend", "energy_source")
    + ("peak_mem_source", "int8_path")
    + ("deploy_precision", "latency_pred_model", "screened", "violations", "cpu_model", "cpu_governor", "tvm_version")
    + ("torch_version", "node", "target", "started_at", "finished_at")
)

#: Columns that a finalist's re-tuned measurement replaces for ranking.
TUNED_COLUMNS: dict[str, str] = {"latency_ms": "latency_tuned_ms", "latency_p90_ms": "latency_tuned_p90_ms"}

#: Objectives that come from a timing: an emulated device's timings are never ranked.
TIMED_COLUMNS = frozenset(("latency_ms", "latency_p90_ms", "energy_mj", "best_latency_ms"))


def summary_columns(rows: list[dict] | tuple[dict, ...], *, filled: bool = True) -> list[str]:
    """``SUMMARY_COLUMNS`` (``filled``: only those some row fills); ``best_backend`` and
    ``best_latency_ms`` only when the rows compare several backends (with one backend they repeat
    ``backend`` and ``latency_ms``)."""
    several = any(k.startswith("status@") for r in rows for k in r)
    return [c for c in SUMMARY_COLUMNS if (not filled or any(r.get(c) is not None for r in rows))
            and (several or c not in ("best_backend", "best_latency_ms"))]  # fmt: skip


def split_device(column: str) -> tuple[str, str]:
    """``'latency_ms@rpi5'`` -> ``('latency_ms', 'rpi5')``; a column of the first device has device ``''``."""
    base, _, device = column.partition("@")
    return base, device


def at_device(column: str, device: str) -> str:
    """The name of ``column`` measured on ``device`` (``''``: the first device, the column itself)."""
    return f"{column}@{device}" if device else column
