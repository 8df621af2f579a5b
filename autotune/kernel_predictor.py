"""Latency at kernel level: a candidate's latency is the sum of its fused kernels' times, each from
the profile's kernel table (``autotune.kernel_table``), plus the runtime's own per-call work.

    latency ≈ Σ_kind s_kind · Σ_{k of that kind} calls_k · t_k  +  c · Σ_k calls_k  +  b

``t_k`` is the kernel's time alone from the table; a kernel not in it yet is estimated by a model of
the table (a ridge in logs of FLOPs, bytes and shapes with the kind, and a boosted correction once
the table is large), and that estimate's share of the sum widens the prediction's uncertainty. ``s_kind`` (one per
operator kind: a kernel in a network runs a little slower or faster than alone), ``c`` (the Relax
VM's work per call) and ``b`` are fitted to measured candidates by least squares on relative error,
pulled towards ``s = 1`` so that a handful of measurements is enough.

A new device learns from another profile's table (``KernelPredictor(table, donor=other)``, the
profile's ``predictor.kernels_from``), in the spirit of HELP's few-shot device adaptation. Once its
own table shares ``RATIO_AT`` kernels with the donor's (its first measured candidates fill it), a
kernel only the donor holds takes the donor's time times a model of this device's time over the
donor's, learnt from those shared kernels (the same ridge and boosting as the fallback model, on the
log ratio: a device with narrower vectors slows some shapes more than others). Before that, the
donor's kernels count in columns of their own, scaled per kind by separate scales fitted to ≤ 20 of
its own measurements. ``sigma_`` is the RMS of 5-fold cross-validated log-ratios, the same
measure the network-level predictor reports, so the better of the two is kept per profile.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from autotune.compiler.workloads import Workload, from_dict
from autotune.kernel_table import KernelTable, TableEntry
from autotune.predictor import MAX_HISTORY, MIN_TO_PREDICT, Prediction, load_history

__all__ = ["KernelPredictor", "KernelTimeModel", "fit_kernels"]

#: Operator kinds with their own scale (``autotune.compiler.workloads.kernel_kind``, int8 folded in).
KINDS = ("conv", "dwconv", "pwconv", "matmul", "pool", "reduce", "elementwise")

#: Pull of each kind's scale towards its prior, in relative-error units per measurement.
RIDGE = 1e-3

#: Kernels both tables must hold before a donor's times are mapped kernel by kernel.
RATIO_AT = 8


def _kind(kind: str) -> str:
    base = kind.removesuffix("_int8")
    return base if base in KINDS else "elementwise"


def _features(kind: str, flops: float, nbytes: float, args: Sequence[Any] = ()) -> list[float]:
    """A kernel's description for the fallback model: sizes in logs, the kind, and for convolutions and
    matmuls the shapes that decide vectorisation (channels, their remainder modulo 16, spatial size)."""
    shapes = [tuple(a[0]) for a in args]
    weight = next((s for s in shapes[1:] if len(s) in (2, 4)), ())
    out = shapes[-1] if shapes else ()
    w = [*weight, 1, 1, 1, 1][:4]
    spatial = math.prod(out[2:]) if len(out) == 4 else 1
    return [
        math.log1p(flops),
        math.log1p(nbytes),
        math.log1p(flops) - math.log1p(nbytes),
        *(float(_kind(kind) == k) for k in KINDS),
        float("int8" in kind),
        *(math.log1p(float(v)) for v in w),
        float(w[0] % 16),
        float(w[1] % 16),
        math.log1p(float(spatial)),
    ]


class KernelTimeModel:
    """Seconds of a kernel not in the table, from its description (see the module doc): a ridge in
    logs (it extrapolates to kernels larger than any timed, as log time is near-linear in log size)
    with a gradient-boosted correction of its residual once the table has ``BOOST_AT`` kernels.
    ``values``: what to learn instead of each entry's seconds (positive; a ratio for the donor's map)."""

    BOOST_AT = 40

    def __init__(self, entries: Sequence[TableEntry], values: Sequence[float] | None = None) -> None:
        self.size = len(entries)
        self.sigma = math.inf
        self._model: Any = None
        if self.size < 4:
            return
        x = np.asarray([_features(e.kind, e.flops, e.bytes, e.args) for e in entries])
        y = np.log(np.asarray([e.seconds for e in entries] if values is None else values, dtype=float))
        self._model = self._fit(x, y)
        folds = np.arange(self.size) % 5
        np.random.default_rng(0).shuffle(folds)
        errs = [self._apply(self._fit(x[folds != k], y[folds != k]), x[folds == k]) - y[folds == k] for k in range(5)]
        self.sigma = float(np.sqrt(np.mean(np.square(np.concatenate(errs)))))

    def _fit(self, x: np.ndarray, y: np.ndarray) -> tuple[Any, Any]:
        from sklearn.ensemble import GradientBoostingRegressor
        from sklearn.linear_model import Ridge
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        ridge = make_pipeline(StandardScaler(), Ridge(alpha=1.0)).fit(x, y)
        if len(y) < self.BOOST_AT:
            return ridge, None
        boost = GradientBoostingRegressor(n_estimators=150, max_depth=3, learning_rate=0.1, min_samples_leaf=2,
                                          random_state=0)  # fmt: skip
        return ridge, boost.fit(x, y - ridge.predict(x))

    @staticmethod
    def _apply(model: tuple[Any, Any], x: np.ndarray) -> np.ndarray:
        ridge, boost = model
        return ridge.predict(x) + (boost.predict(x) if boost is not None else 0.0)

    def seconds(self, w: Workload | Mapping[str, Any]) -> float | None:
        """The estimated seconds of one call, or value (None while the table is too small to learn from)."""
        if self._model is None:
            return None
        w = _as_workload(w)
        return float(np.exp(self._apply(self._model, np.asarray([_features(w.kind, w.flops, w.bytes, w.args)]))[0]))


def _as_workload(w: Workload | Mapping[str, Any]) -> Workload:
    if isinstance(w, Workload):
        return w
    return from_dict({"name": "", "args": (), **w})


class KernelPredictor:
    """The sum of a candidate's kernel times with fitted per-kind scales and per-call overhead.

    ``donor``: another profile's kernel table, for a device whose own table lacks kernels. With
    ``RATIO_AT`` kernels in both tables, a kernel found only there takes its time there times
    ``ratio_model``'s estimate of this device's time over the donor's (counted as this device's
    time, its error widening the prediction like an estimated kernel's). With fewer, it counts in
    its own per-kind columns, whose scales (this device against that one) are pulled towards
    ``prior`` instead of 1 (see ``fit``) and vary linearly with the kernel's log arithmetic
    intensity (FLOPs per byte: a device with narrower vectors slows compute-bound kernels more than
    memory-bound ones), that slope pulled towards 0.
    """

    def __init__(self, table: KernelTable, donor: KernelTable | None = None) -> None:
        self.table, self.donor = table, donor
        self.model = KernelTimeModel(list(table.entries.values()))
        self.donor_model = KernelTimeModel(list(donor.entries.values())) if donor is not None else None
        shared = [e for k, e in table.entries.items() if donor is not None and k in donor.entries]
        self.ratio_model: KernelTimeModel | None = None
        if donor is not None and len(shared) >= RATIO_AT:
            self.ratio_model = KernelTimeModel(shared, [e.seconds / donor.entries[e.key].seconds for e in shared])
        self.coef_: np.ndarray | None = None
        self.sigma_: float = math.inf
        self.cv_log_ratios_: np.ndarray | None = None  # see ``fit``
        self.samples_: int = 0

    def _time(self, w: Workload) -> tuple[float | None, int, float]:
        """A kernel's seconds, its column offset (0: this device's, ``len(KINDS)``: the donor's) and
        the log error of the time (0 when timed, a model's CV error when estimated)."""
        own = self.table.entries.get(w.key)
        if own is not None:
            return own.seconds, 0, 0.0
        given = self.donor.entries.get(w.key) if self.donor is not None else None
        if given is not None and self.ratio_model is not None:
            return given.seconds * float(self.ratio_model.seconds(w) or 1.0), 0, self.ratio_model.sigma
        if given is not None:
            return given.seconds, len(KINDS), 0.0
        if self.model.size >= 4 or self.donor_model is None:
            return self.model.seconds(w), 0, self.model.sigma
        return self.donor_model.seconds(w), len(KINDS), self.donor_model.sigma

    def _row(self, workloads: Sequence[Workload]) -> tuple[np.ndarray, float] | None:
        """Per-kind summed milliseconds (this device's table, then the donor's), total calls and a
        constant; and the share-weighted log error of the estimated kernels (None when a kernel can
        be neither looked up nor estimated)."""
        n = len(KINDS)
        row = np.zeros(3 * n + 2)
        uncertain = 0.0
        for w in workloads:
            t, offset, sigma = self._time(w)
            if t is None:
                return None
            ms = w.calls * t * 1e3
            i = KINDS.index(_kind(w.kind))
            row[offset + i] += ms
            if offset:  # the donor's time: its scale may vary with the kernel's arithmetic intensity
                row[2 * n + i] += ms * math.log((w.flops + 1.0) / (w.bytes + 1.0))
            uncertain += ms * sigma
            row[-2] += w.calls
        row[-1] = 1.0
        total = row[: 2 * n].sum()
        return row, (uncertain / total if total > 0 else 0.0)

    @staticmethod
    def _solve(x: np.ndarray, y: np.ndarray, prior: np.ndarray) -> np.ndarray:
        """Least squares on relative error, each scale pulled towards ``prior``: scales, overhead and
        constant non-negative, the donor's intensity slopes of either sign."""
        from scipy.optimize import lsq_linear

        n = len(prior)
        used = np.abs(x[:, :n]).sum(axis=0) > 0
        pull = np.zeros((n, x.shape[1]))
        pull[np.arange(n), np.arange(n)] = math.sqrt(RIDGE * len(y))
        a = np.vstack([x / y[:, None], pull])
        b = np.concatenate([np.ones(len(y)), math.sqrt(RIDGE * len(y)) * prior])
        low = np.zeros(x.shape[1])
        low[2 * len(KINDS) : 3 * len(KINDS)] = -np.inf
        coef = lsq_linear(a, b, bounds=(low, np.inf)).x
        coef[:n][~used] = prior[~used]  # a kind no measured candidate had keeps its prior
        return coef

    def fit(
        self,
        samples: Sequence[Sequence[Workload | Mapping[str, Any]]],
        latency_ms: Sequence[float],
        *,
        prior: Mapping[str, float] | float | None = None,
    ) -> KernelPredictor:
        """Fit scales and overhead on measured candidates (``samples``: each one's workloads).

        ``prior``: what the donor's per-kind scales are pulled towards (this device's time over the
        donor's, per kind or overall); by default the median ratio over kernels both tables hold,
        else 1. This device's own scales are pulled towards 1. ``cv_log_ratios_``: each sample's
        cross-validated log(prediction / latency), nan for one not used (no kernels listed).
        """
        rows, ys, keep = [], [], []
        for i, (ws, y) in enumerate(zip(samples, latency_ms, strict=True)):
            r = self._row([_as_workload(w) for w in ws]) if ws else None  # (a measurement without its kernels)
            if r is not None and math.isfinite(y) and y > 0:
                rows.append(r[0])
                ys.append(y)
                keep.append(i)
        self.samples_ = len(ys)
        if self.samples_ < MIN_TO_PREDICT:
            self.coef_ = None
            return self
        x, y = np.asarray(rows), np.asarray(ys)
        ratio = self._ratio(x, y) if prior is None else prior
        given = [ratio.get(k, 1.0) if isinstance(ratio, Mapping) else ratio for k in KINDS]
        p = np.asarray([1.0] * len(KINDS) + given + [0.0] * len(KINDS), dtype=float)
        self.coef_ = self._solve(x, y, p)
        folds = np.arange(self.samples_) % 5
        np.random.default_rng(0).shuffle(folds)
        errs = np.zeros(self.samples_)
        for k in range(5):
            test = folds == k
            errs[test] = np.log(np.maximum(x[test] @ self._solve(x[~test], y[~test], p), 1e-9) / y[test])
        self.sigma_ = float(math.sqrt(np.mean(np.square(errs))))
        self.cv_log_ratios_ = np.full(len(latency_ms), np.nan)
        self.cv_log_ratios_[keep] = errs
        return self

    def _ratio(self, x: np.ndarray, y: np.ndarray) -> float:
        """This device's kernel time over the donor's: the median over kernels both tables hold, or,
        with fewer than 5 such, the median of measured latency over summed kernel time (1 without a
        donor)."""
        if self.donor is None:
            return 1.0
        both = [e.seconds / self.donor.entries[k].seconds for k, e in self.table.entries.items() if k in self.donor]
        if len(both) >= 5:
            return float(np.median(both))
        return float(np.median(y / np.maximum(x[:, : 2 * len(KINDS)].sum(axis=1), 1e-12)))

    @property
    def per_call_ms(self) -> float | None:
        """The fitted runtime overhead per kernel call, in ms."""
        return None if self.coef_ is None else float(self.coef_[3 * len(KINDS)])

    @property
    def ready(self) -> bool:
        return self.coef_ is not None

    def predict(self, workloads: Sequence[Workload | Mapping[str, Any]]) -> Prediction | None:
        """The predicted latency, or None before ``MIN_TO_PREDICT`` measurements (or when a kernel is
        unknown and the table too small to estimate it). Estimated kernels widen ``sigma`` by their
        share of the sum times their model's error."""
        if self.coef_ is None:
            return None
        r = self._row([_as_workload(w) for w in workloads])
        if r is None:
            return None
        row, extra = r
        sigma = math.hypot(self.sigma_, extra) if extra else self.sigma_
        return Prediction(max(float(row @ self.coef_), 1e-6), sigma, self.samples_, source="kernels")

    def scales(self, donor: bool = False) -> dict[str, float]:
        """Fitted scale per kind: of this device's table, or (``donor``) of the donor's."""
        if self.coef_ is None:
            return {}
        offset = len(KINDS) if donor else 0
        return {k: float(self.coef_[offset + i]) for i, k in enumerate(KINDS)}


def fit_kernels(
    history: str | os.PathLike[str],
    table: str | os.PathLike[str],
    key: Mapping[str, Any],
    donor: tuple[str | os.PathLike[str], Mapping[str, Any]] | None = None,
    *,
    records: Sequence[Mapping[str, Any]] | None = None,
) -> KernelPredictor:
    """The kernel-level predictor fitted on the comparable history's measurements that list their
    kernels, with the profile's kernel table at ``table`` and, for a new device, another profile's
    (``donor``: its table's path and environment key). ``records``: the history already loaded (its
    ``cv_log_ratios_`` then line up with them)."""
    recs = load_history(history, key)[-MAX_HISTORY:] if records is None else records
    given = KernelTable.load(donor[0], donor[1]) if donor is not None else None
    predictor = KernelPredictor(KernelTable.load(table, key), given if given else None)
    return predictor.fit([r.get("kernels") or () for r in recs], [r["latency_ms"] for r in recs])
