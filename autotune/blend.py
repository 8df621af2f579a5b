"""Which latency predictor screening uses: the network-level one (``autotune.predictor``), the
kernel-level one (``autotune.kernel_predictor``), or a weighted geometric mean of both (stacking).

The two err in partly different ways (the network model misses what its per-kind features do not
describe, the kernel sum what fusion and the runtime add between kernels), so a blend of the two is
often closer than either. The weight on the kernel-level prediction is the one whose blend has the
smallest RMS of cross-validated log-ratios, taken over the measurements both predictors scored
(each one's out-of-fold prediction of that measurement): 0 is the network model alone, 1 the
kernel sum alone, so the better of the two is kept where blending does not help.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from autotune.predictor import MIN_TO_PREDICT, Prediction

__all__ = ["WEIGHTS", "Blend", "choose"]

#: The weights on the kernel-level prediction that cross-validation chooses from.
WEIGHTS = tuple(i / 20 for i in range(21))


@dataclass(frozen=True)
class Blend:
    """``weight`` on the kernel-level log prediction (the rest on the network-level one), ``sigma``
    the blend's cross-validated log error, and each predictor's own (``network_sigma``,
    ``kernels_sigma``: a prediction wider than its predictor's own widens the blend's)."""

    weight: float
    sigma: float
    network_sigma: float = math.inf
    kernels_sigma: float = math.inf

    @property
    def model(self) -> str:
        """``latency_pred_model``: ``network``, ``kernels`` or ``blend``."""
        return "kernels" if self.weight >= 1 else "network" if self.weight <= 0 else "blend"

    def predict(self, network: Prediction | None, kernels: Prediction | None) -> Prediction | None:
        """The blended prediction (either one alone when the other is missing or weighs nothing)."""
        if kernels is None or self.weight <= 0:
            return network
        if network is None or self.weight >= 1:
            return kernels
        w = self.weight
        value = math.exp(w * math.log(kernels.latency_ms) + (1 - w) * math.log(network.latency_ms))
        extra_k = math.sqrt(max(kernels.sigma**2 - self.kernels_sigma**2, 0.0))  # estimated kernels
        extra_n = math.sqrt(max(network.sigma**2 - self.network_sigma**2, 0.0))  # unseen operator kinds
        sigma = math.sqrt(self.sigma**2 + (w * extra_k) ** 2 + ((1 - w) * extra_n) ** 2)
        return Prediction(value, sigma, min(network.samples, kernels.samples), source="blend")


def choose(network: Any, kernels: Any) -> Blend | None:
    """The blend of two fitted predictors (``LatencyPredictor``, ``KernelPredictor`` or None) fitted on
    the same measurements in the same order, or None when neither is ready."""
    n_ready = network is not None and network.ready
    k_ready = kernels is not None and kernels.ready
    if not (n_ready and k_ready):
        if n_ready:
            return Blend(0.0, network.sigma_, network_sigma=network.sigma_)
        return Blend(1.0, kernels.sigma_, kernels_sigma=kernels.sigma_) if k_ready else None
    sig = {"network_sigma": network.sigma_, "kernels_sigma": kernels.sigma_}
    en, ek = np.asarray(network.cv_log_ratios_), np.asarray(kernels.cv_log_ratios_)
    both = np.isfinite(en) & np.isfinite(ek) if len(en) == len(ek) else np.zeros(0, bool)
    if both.sum() < MIN_TO_PREDICT:  # not comparable sample by sample: the smaller error
        best = 1.0 if kernels.sigma_ < network.sigma_ else 0.0
        return Blend(best, min(kernels.sigma_, network.sigma_), **sig)
    en, ek = en[both], ek[both]
    rms = [float(np.sqrt(np.mean(np.square(w * ek + (1 - w) * en)))) for w in WEIGHTS]
    i = int(np.argmin(rms))
    w = WEIGHTS[i]
    sigma = network.sigma_ if w <= 0 else kernels.sigma_ if w >= 1 else rms[i]
    return Blend(w, sigma, **sig)
