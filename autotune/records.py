"""Typed records that flow one way through a trial.

``TrialConfig → TrainedModel → CompiledArtifact → (NumericsReport, Measurement) → LeaderboardRow``.
Records that cross a process boundary hold paths and plain values, never live TVM objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

__all__ = ["CompiledArtifact", "Measurement", "NumericsReport", "TrainedModel", "TrialConfig"]


@dataclass(frozen=True)
class TrialConfig:
    """One sampled candidate.

    Attributes:
        params: the sampled values, keyed ``'arch.<name>'`` / ``'train.<name>'``.
        arch: model-family parameters (defaults filled in, ``dropout`` included).
        train: training settings (defaults filled in), or None for a latency-only study.
        compress: each compression technique's settings (defaults filled in), by technique name.
    """

    trial_id: str
    params: dict[str, Any]
    arch: dict[str, Any]
    train: dict[str, Any] | None
    seed: int
    compress: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainedModel:
    """A trained (or, for latency-only studies, freshly initialised) model."""

    model: nn.Module
    val_accuracy: float | None
    accuracy: float | None  # held-out test accuracy
    epochs: int
    train_s: float
    lock_wait_s: float = 0.0


@dataclass(frozen=True)
class CompiledArtifact:
    """A model compiled by TVM and exported to a shared library on disk.

    ``int8_ops`` of ``compute_ops`` convolutions/matmuls run int8 arithmetic (``deploy_precision``).
    The ``tune*`` fields stay 0 for an untuned compile: ``tuned_trials`` schedules were measured by
    this compile, ``tune_db_hits``/``tune_db_misses`` count workloads found tuned / tuned now.
    """

    path: str
    target: str
    input_shape: tuple[int, ...]
    artifact_bytes: int
    weights_bytes: int
    peak_mem_bytes: int
    peak_mem_source: str
    export_s: float
    import_s: float
    compile_s: float
    tune_s: float = 0.0
    tuned_trials: int = 0
    tune_db_hits: int = 0
    tune_db_misses: int = 0
    deploy_precision: str = "fp32"
    int8_ops: int = 0
    compute_ops: int = 0


@dataclass(frozen=True)
class NumericsReport:
    """Compiled vs PyTorch outputs on held-out inputs."""

    max_abs_diff: float
    top1_agreement: float
    samples: int
    verify_s: float


@dataclass(frozen=True)
class Measurement:
    """Latency (from TVM's time evaluator) and energy per inference."""

    latency_ms: float
    latency_p90_ms: float
    latency_cov: float
    latency_ci_low_ms: float
    latency_ci_high_ms: float
    latency_repeats: int  # repeats timed: min_repeat up to repeat (ci_target)
    number: int
    threads: int
    energy_mj: float | None
    energy_source: str
    load_avg: float
    measure_s: float
    lock_wait_s: float = 0.0
    idle_w: float | None = None  # the idle power subtracted from the energy (measured, or the profile's)
    extra: dict[str, Any] = field(default_factory=dict)
