"""Typed records that flow one way through a trial.

``TrialConfig → TrainedModel → CompressedModel (one PassReport per pass) → CompiledArtifact →
(NumericsReport, Measurement) → LeaderboardRow`` (``autotune.leaderboard.row``). Each stage makes
the next record and never changes the one it was given. Records that cross a process boundary hold
paths and plain values, never live TVM objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "KERNELS_LIBRARY",
    "CompiledArtifact",
    "CompressedModel",
    "Deployment",
    "Measurement",
    "NumericsReport",
    "PassReport",
    "TrainedModel",
    "TrialConfig",
]


@dataclass(frozen=True)
class TrialConfig:
    """One sampled candidate.

    Attributes:
        params: the sampled values, keyed ``'arch.<name>'`` / ``'train.<name>'``.
        arch: model-family parameters (defaults filled in, ``dropout`` included).
        train: training settings (defaults filled in), or None for a latency-only study.
        compress: each compression technique's resolved settings (defaults filled in), by technique name.
    """

    trial_id: str
    params: dict[str, Any]
    arch: dict[str, Any]
    train: dict[str, Any] | None
    seed: int
    compress: dict[str, dict[str, Any]] = field(default_factory=dict)
    study_trial: int | None = None  # the Optuna trial number, in a search


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
class Deployment:
    """How a model is compiled: its arithmetic precision and, for int8, how weight scales are shared."""

    precision: str = "fp32"  # fp32 | fp16 | int8
    weight_granularity: str = "tensor"  # tensor | channel


@dataclass(frozen=True)
class PassReport:
    """What one compression pass did: the leaderboard columns it fills and the seconds it took
    (fine-tuning included, time spent waiting for the quiet-measurement lock excluded)."""

    name: str
    columns: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass(frozen=True)
class CompressedModel:
    """The model a trial deploys, after its compression passes (the trained model when it has none).

    ``accuracy`` / ``val_accuracy`` are re-measured on the compressed model; ``params`` and ``macs``
    count it, ``*_before`` the trained model it came from.
    """

    model: nn.Module
    deployment: Deployment
    reports: tuple[PassReport, ...]
    params: int
    macs: int
    params_before: int
    macs_before: int
    accuracy: float | None
    val_accuracy: float | None
    sparsity: float
    seconds: float

    @property
    def compressed(self) -> bool:
        return bool(self.reports)

    @property
    def columns(self) -> dict[str, Any]:
        """The leaderboard columns its passes reported, later passes last."""
        return {k: v for report in self.reports for k, v in report.columns.items()}


#: Beside an RPC profile's ``model.so``: the model's kernels alone, each exported by name (an RPC
#: session cannot reach the kernels the model's own library imports), for the device's kernel table.
KERNELS_LIBRARY = "kernels.so"


@dataclass(frozen=True)
class CompiledArtifact:
    """A model compiled by TVM and exported to a shared library on disk.

    ``int8_ops`` of ``compute_ops`` convolutions/matmuls run int8 arithmetic (``deploy_precision``);
    ``int8_path`` says how: ``vnni``, ``avx2`` or ``dotprod`` (some on the dot-product kernels) or
    ``generic`` ("" for float).
    The ``tune*`` fields stay 0 for an untuned compile: ``tuned_trials`` schedules were measured by
    this compile, ``tune_db_hits``/``tune_db_misses`` count workloads found tuned / tuned now.
    ``tuned_share`` is the share of the fused kernels scheduled from the tuning database (the rest
    have default schedules).
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
    tuned_share: float = 0.0
    deploy_precision: str = "fp32"
    int8_ops: int = 0
    compute_ops: int = 0
    int8_path: str = ""


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
    timing: str = "local"  # where it was timed: local, device (an RPC device) or emulated (set by the runner)
    reference_ratio: float | None = None  # paired timing (measure.paired): median candidate / reference ratio
    latency_window_ms: float | None = None  # paired: the candidate's own median over the paired rounds
    extra: dict[str, Any] = field(default_factory=dict)
