"""Online latency predictor per device profile: latency from a candidate's structure, before it is trained.

Features come from one forward pass of the (untrained) PyTorch model with hooks on its leaf modules,
summed per operator kind: for convolutions per kind and kernel size (``conv3``, ``pw1``, ``dw5``...)
the count, MACs, elements read and written, and the MACs of layers whose output channels are not a
multiple of 8 (vector remainders); for linear layers count and MACs; for other modules (activations,
pooling) count and elements written by class name; plus the deployment precision. The model is a
learned per-operator cost, ``latency ≈ b + Σ cᵢ·featureᵢ`` (ridge, fitted to relative error: each
sample weighted by 1/latency²; every cost ``cᵢ ≥ 0``, so more work never predicts less time and a fit
on a few measurements cannot extrapolate to a near-zero latency), times a gradient-boosted
correction of its log residual once there are ``MIN_FOR_BOOST`` measurements. Its uncertainty
``sigma`` is the RMS of 5-fold cross-validated log-ratios ``log(pred/measured)``.

Measurements of every run on a profile are appended to ``<results>/.predictor/<profile>.jsonl``
(one JSON line each, under an flock), so the next run starts with a fitted predictor. Rows from
another CPU, TVM version, target, tuning budget or thread count are not used (``environment_key``).
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from autotune.config.device_profile import DeviceProfile

__all__ = [
    "LatencyPredictor",
    "Prediction",
    "environment_key",
    "fit_history",
    "history_path",
    "hit_rate",
    "load_history",
    "record_measurement",
    "structure_features",
]

#: Version of the feature definition; history rows of another version are ignored.
FEATURE_VERSION = 2

#: Below this many measurements no prediction is made; predictions skip no candidate before
#: ``MIN_FOR_SKIP`` measurements; the boosted correction starts at ``MIN_FOR_BOOST``.
MIN_TO_PREDICT = 8
MIN_FOR_SKIP = 30
MIN_FOR_BOOST = 30


def structure_features(model: nn.Module, input_shape: Sequence[int], precision: str = "fp32") -> dict[str, float]:
    """Structural features of ``model`` for one input of ``input_shape`` (batch 1); see the module doc."""
    import torch
    from torch import nn

    f: dict[str, float] = {"params": 0.0, "fp16": float(precision == "fp16"), "int8": float(precision == "int8")}
    hooks = []

    def add(key: str, value: float) -> None:
        f[key] = f.get(key, 0.0) + value

    def hook(module: nn.Module, inputs: tuple, output: Any) -> None:
        out = float(output.numel()) if isinstance(output, torch.Tensor) else 0.0
        first = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
        read = float(first.numel()) if first is not None else 0.0
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1]
            kind = "dw" if module.groups > 1 else ("pw" if k == 1 else "conv")
            tag = f"{kind}{module.kernel_size[0]}"
            macs = out * k * module.in_channels / module.groups
            add(f"n_{tag}", 1.0)
            add(f"macs_{tag}", macs)
            add(f"out_{tag}", out)
            add(f"in_{tag}", read)
            add(f"ragged_{tag}", macs if module.out_channels % 8 else 0.0)
        elif isinstance(module, nn.Linear):
            add("n_linear", 1.0)
            add("macs_linear", out * module.in_features)
        elif not isinstance(module, nn.Identity | nn.Dropout | nn.BatchNorm2d | nn.BatchNorm1d):
            name = type(module).__name__.lower()  # BatchNorm folds into the convolution at compile time
            add(f"n_{name}", 1.0)
            add(f"out_{name}", out)

    was_training = model.training
    model.eval()
    for m in model.modules():
        if not list(m.children()):
            hooks.append(m.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(torch.zeros((1, *input_shape)))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    f["params"] = float(sum(p.numel() for p in model.parameters()))
    return f


@dataclass(frozen=True)
class Prediction:
    """A predicted latency with a multiplicative uncertainty: the truth is likely within
    ``latency_ms · exp(±k·sigma)`` (``sigma`` a log-ratio standard deviation). ``source``: the
    predictor that made it, ``network`` (this module) or ``kernels`` (``autotune.kernel_predictor``)."""

    latency_ms: float
    sigma: float
    samples: int
    source: str = "network"

    def bounds(self, k: float = 3.0) -> tuple[float, float]:
        return self.latency_ms * math.exp(-k * self.sigma), self.latency_ms * math.exp(k * self.sigma)


class LatencyPredictor:
    """Per-operator costs (ridge on relative error) with a boosted log correction; see the module doc."""

    def __init__(self, alpha: float = 1e-4) -> None:
        self.alpha = alpha
        self.names_: list[str] = []
        self.sigma_: float = math.inf
        self.cv_log_ratios_: Any = None  # see ``fit``
        self.samples_: int = 0
        self.range_: tuple[float, float] | None = None  # smallest and largest latency measured
        self._model: tuple[Any, Any, Any] | None = None

    def _matrix(self, features: Iterable[Mapping[str, float]]) -> Any:
        """One row per candidate, and a last column flagging fp32: with every precision flagged, the
        non-negative costs can still make a lower precision the cheaper one."""
        import numpy as np

        rows = [
            [float(x.get(n, 0.0)) for n in self.names_] + [1.0 - float(x.get("fp16", 0.0)) - float(x.get("int8", 0.0))]
            for x in features
        ]
        return np.asarray(rows, dtype=np.float64)

    def _fit_once(self, x: Any, y: Any) -> tuple[Any, Any, Any]:
        import numpy as np
        from sklearn.ensemble import GradientBoostingRegressor
        from sklearn.linear_model import Ridge

        scale = np.maximum(np.abs(x).max(axis=0), 1e-12)
        ridge = Ridge(alpha=self.alpha, positive=True).fit(x / scale, y, sample_weight=1.0 / np.square(y))
        boost = None
        if len(y) >= MIN_FOR_BOOST:
            base = np.maximum(ridge.predict(x / scale), 1e-6)
            boost = GradientBoostingRegressor(
                n_estimators=60, max_depth=2, learning_rate=0.15, subsample=0.8, random_state=0
            ).fit(np.log1p(np.maximum(x, 0)), np.log(y / base))
        return scale, ridge, boost

    @staticmethod
    def _apply(model: tuple[Any, Any, Any], x: Any) -> Any:
        import numpy as np

        scale, ridge, boost = model
        pred = np.maximum(ridge.predict(x / scale), 1e-6)
        if boost is not None:
            pred = pred * np.exp(boost.predict(np.log1p(np.maximum(x, 0))))
        return pred

    def fit(self, features: Sequence[Mapping[str, float]], latency_ms: Sequence[float]) -> LatencyPredictor:
        """Fit on measured candidates; ``sigma_`` comes from 5-fold cross-validation, whose log-ratio of
        each input sample is ``cv_log_ratios_`` (nan for a sample not used)."""
        import numpy as np

        y = np.asarray(latency_ms, dtype=np.float64)
        keep = [i for i, v in enumerate(y) if math.isfinite(v) and v > 0]
        feats = [features[i] for i in keep]
        y = y[keep]
        self.samples_ = len(y)
        self.range_ = (float(y.min()), float(y.max())) if len(y) else None
        self.names_ = sorted({k for f in feats for k in f})
        if self.samples_ < MIN_TO_PREDICT:
            self._model = None
            return self
        x = self._matrix(feats)
        self._model = self._fit_once(x, y)
        folds = np.arange(self.samples_) % 5
        np.random.default_rng(0).shuffle(folds)
        errs = np.zeros(self.samples_)
        for k in range(5):
            test = folds == k
            errs[test] = np.log(self._apply(self._fit_once(x[~test], y[~test]), x[test]) / y[test])
        self.sigma_ = float(math.sqrt(np.mean(np.square(errs))))  # bias and spread together
        self.cv_log_ratios_ = np.full(len(latency_ms), np.nan)
        self.cv_log_ratios_[keep] = errs
        return self

    @property
    def ready(self) -> bool:
        return self._model is not None

    def predict(self, features: Mapping[str, float]) -> Prediction | None:
        """The predicted latency, or None before ``MIN_TO_PREDICT`` measurements. An operator kind
        never measured adds nothing to the prediction and widens ``sigma`` (doubled)."""
        if self._model is None:
            return None
        value = float(self._apply(self._model, self._matrix([features]))[0])
        unseen = any(v and k not in self.names_ for k, v in features.items())
        return Prediction(latency_ms=value, sigma=self.sigma_ * (2.0 if unseen else 1.0), samples=self.samples_)


# --------------------------------------------------------------------------- history per profile


def history_path(profile: DeviceProfile, results_dir: str | os.PathLike[str]) -> Path:
    """Where the measurements of every run on ``profile`` accumulate."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", profile.name)
    return Path(results_dir) / ".predictor" / f"{safe}.jsonl"


def environment_key(profile: DeviceProfile) -> dict[str, Any]:
    """What must match for two measurements to be comparable: the profile (its target, tuning budget
    and runner), the CPU that timed it (local runner), the TVM version, the code the build generates
    (``BUILD_VERSION``) and the feature definition."""
    from autotune.compiler.build import BUILD_VERSION
    from autotune.measure import RUNNERS

    fp = RUNNERS.get(profile.runner.kind).fingerprint(profile)
    return {
        "feature_version": FEATURE_VERSION,
        "build_version": BUILD_VERSION,
        "profile": profile.name,
        "target": json.dumps(profile.target, sort_keys=True),
        "threads": profile.measure.threads,
        "cpu_model": fp["cpu_model"],
        "tvm_version": fp["tvm_version"],
        "tuned_trials_per_candidate": profile.tuning.trials_per_candidate,
        "default_schedules": profile.tuning.default_schedules,  # untuned kernels: scheduled or scalar
        # latency on the reference's calibrated scale; 2: kernel-table timings paired too (True: not)
        **({"paired": 2} if profile.measure.paired else {}),
    }


def record_measurement(
    path: str | os.PathLike[str],
    key: Mapping[str, Any],
    features: Mapping[str, float],
    latency_ms: float,
    *,
    run: str = "",
    trial_id: str = "",
    kernels: Sequence[Mapping[str, Any]] | None = None,
    new_kernels: int | None = None,
) -> None:
    """Append one measured candidate to the history (``key``: its ``environment_key``). ``kernels``:
    its workloads (``autotune.compiler.workloads.Workload`` as dicts), for the kernel-level predictor;
    ``new_kernels``: how many of them the kernel table lacked and timed."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    rec = {**key, "run": run, "trial_id": trial_id, "features": dict(features), "latency_ms": float(latency_ms)}
    if kernels is not None:
        rec |= {"kernels": [dict(k) for k in kernels], "new_kernels": new_kernels}
    line = json.dumps(rec)
    with open(p, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def load_history(path: str | os.PathLike[str], key: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The measurements in ``path`` taken in the environment ``key`` (see ``environment_key``)."""
    p = Path(path)
    if not p.exists():
        return []
    with open(p) as f:
        fcntl.flock(f, fcntl.LOCK_SH)
        lines = f.read().splitlines()
    out = []
    for line in lines:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a crash
        if isinstance(rec, dict) and all(rec.get(k) == v for k, v in key.items()):
            out.append(rec)
    return out


#: Most recent comparable measurements a predictor is fitted on.
MAX_HISTORY = 2000


def fit_history(path: str | os.PathLike[str], key: Mapping[str, Any]) -> LatencyPredictor:
    """A predictor fitted on the comparable history of ``path`` (the latest ``MAX_HISTORY``
    measurements; unfitted when there are none)."""
    recs = load_history(path, key)[-MAX_HISTORY:]
    return LatencyPredictor().fit([r["features"] for r in recs], [r["latency_ms"] for r in recs])


def hit_rate(rows: Iterable[Mapping[str, Any]], within: float = 0.10) -> tuple[float | None, int]:
    """Share of rows whose ``latency_pred_ms`` is within ±``within`` of ``latency_ms``, and how many
    rows had both."""
    pairs = [
        (r["latency_pred_ms"], r["latency_ms"])
        for r in rows
        if isinstance(r.get("latency_pred_ms"), int | float) and isinstance(r.get("latency_ms"), int | float)
    ]
    if not pairs:
        return None, 0
    hits = sum(abs(p / m - 1.0) <= within for p, m in pairs if m > 0)
    return hits / len(pairs), len(pairs)
