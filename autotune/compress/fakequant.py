"""Fake quantization in PyTorch: weight rounding, activation quantizers and the layer wrapper."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from autotune.compress.base import CompressContext

__all__ = [
    "FakeQuant",
    "QuantLayer",
    "activation_bits",
    "calibrate",
    "fake_quant_weight",
    "qrange",
    "wrap_layers",
]


def qrange(bits: int, symmetric: bool) -> tuple[int, int]:
    """Integer range: symmetric is narrow ([-127, 127] at 8 bits), asymmetric unsigned."""
    return (-(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1) if symmetric else (0, 2**bits - 1)


def fake_quant_weight(w: torch.Tensor, *, scheme: str, bits: int, symmetric: bool, granularity: str) -> torch.Tensor:
    """``w`` rounded to the levels of the scheme (same dtype and shape)."""
    if scheme == "none":
        return w
    dims = tuple(range(1, w.dim())) if granularity == "channel" else tuple(range(w.dim()))
    shape = (-1,) + (1,) * (w.dim() - 1) if granularity == "channel" else ()
    if scheme == "log":
        alpha = w.abs().amax(dim=dims).reshape(shape).clamp_min(1e-12)
        kmax = 2 ** (bits - 1) - 2
        k = torch.round(-torch.log2(w.abs().clamp_min(1e-30) / alpha)).clamp(0, kmax)
        keep = w.abs() >= alpha * 2.0 ** (-kmax - 0.5)  # below half the smallest level: zero
        return torch.sign(w) * alpha * torch.pow(2.0, -k) * keep
    lo, hi = qrange(bits, symmetric)
    if symmetric:
        scale = (w.abs().amax(dim=dims) / hi).reshape(shape)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        return torch.clamp(torch.round(w / scale), lo, hi) * scale
    wmin = w.amin(dim=dims).reshape(shape).clamp(max=0)
    wmax = w.amax(dim=dims).reshape(shape).clamp(min=0)
    scale = (wmax - wmin) / (hi - lo)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    zp = torch.round(-wmin / scale)
    return (torch.clamp(torch.round(w / scale) + zp, lo, hi) - zp) * scale


class FakeQuant(nn.Module):
    """Per-tensor activation quantizer. Calibrating: records the range and passes ``x`` through.
    Training: straight-through estimator. Eval: the exact quantize-dequantize (this is what is exported)."""

    def __init__(self, bits: int, symmetric: bool) -> None:
        super().__init__()
        self.bits, self.symmetric, self.calibrating = bits, symmetric, False
        self.register_buffer("lo_seen", torch.tensor(0.0))
        self.register_buffer("hi_seen", torch.tensor(0.0))
        self.register_buffer("scale", torch.tensor(1.0))
        self.register_buffer("zero_point", torch.tensor(0.0))

    def finish_calibration(self) -> None:
        lo, hi = qrange(self.bits, self.symmetric)
        if self.symmetric:
            s = max(abs(float(self.lo_seen)), abs(float(self.hi_seen))) / hi
            z = 0.0
        else:
            s = (float(self.hi_seen) - float(self.lo_seen)) / (hi - lo)
            z = round(-float(self.lo_seen) / s) if s > 0 else 0.0
        self.scale.copy_(torch.tensor(s if s > 0 else 1.0))
        self.zero_point.copy_(torch.tensor(float(z)))
        self.calibrating = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.calibrating:
            self.lo_seen.copy_(torch.minimum(self.lo_seen, x.detach().min()))
            self.hi_seen.copy_(torch.maximum(self.hi_seen, x.detach().max()))
            return x
        lo, hi = qrange(self.bits, self.symmetric)
        if self.symmetric:
            out = torch.clamp(torch.round(x / self.scale), lo, hi) * self.scale
        else:
            out = (torch.clamp(torch.round(x / self.scale) + self.zero_point, lo, hi) - self.zero_point) * self.scale
        return x + (out - x).detach() if self.training else out


class QuantLayer(nn.Module):
    """A conv or linear layer with quantized weights and (optionally) quantized inputs.

    Until ``freeze`` the weights are fake-quantized on the fly (straight-through, for QAT); after
    it they are stored quantized and the layer runs as the plain module (what gets exported).
    """

    def __init__(self, layer: nn.Module, act: FakeQuant | None, weight_quant: dict[str, Any]) -> None:
        super().__init__()
        self.layer, self.act, self.weight_quant, self.frozen = layer, act, weight_quant, False

    def freeze(self) -> None:
        with torch.no_grad():
            self.layer.weight.copy_(fake_quant_weight(self.layer.weight, **self.weight_quant))
        self.frozen = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.act is not None:
            x = self.act(x)
        if self.frozen:
            return self.layer(x)
        w = self.layer.weight
        w = w + (fake_quant_weight(w, **self.weight_quant) - w).detach()
        m = self.layer
        if isinstance(m, nn.Linear):
            return F.linear(x, w, m.bias)
        return F.conv2d(x, w, m.bias, m.stride, m.padding, m.dilation, m.groups)


def wrap_layers(model: nn.Module, s: dict[str, Any]) -> list[QuantLayer]:
    out: list[QuantLayer] = []
    wq = {
        "scheme": s["scheme"],
        "bits": int(s["bits"]),
        "symmetric": bool(s["symmetric"]),
        "granularity": s["granularity"],
    }
    for parent in list(model.modules()):
        if isinstance(parent, QuantLayer):
            continue
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Conv2d | nn.Linear):
                act = FakeQuant(int(s["bits"]), bool(s["symmetric"])) if s["scheme"] == "linear" else None
                q = QuantLayer(child, act, wq)
                setattr(parent, name, q)
                out.append(q)
    return out


def calibrate(model: nn.Module, layers: list[QuantLayer], ctx: CompressContext, batches: int) -> None:
    acts = [q.act for q in layers if q.act is not None]
    if not acts:
        return
    for a in acts:
        a.calibrating = True
    gen = torch.Generator().manual_seed(ctx.seed)
    x = torch.from_numpy(ctx.data.x_train)
    idx = torch.randperm(len(x), generator=gen)[: 64 * batches]
    model.eval()
    with torch.no_grad():
        for i in range(0, len(idx), 64):
            model(x[idx[i : i + 64]])
    for a in acts:
        a.finish_calibration()


def activation_bits(model: nn.Module) -> int | None:
    """The fewest bits of the model's activation quantizers, or None when activations are float."""
    bits = [m.bits for m in model.modules() if isinstance(m, FakeQuant)]
    return min(bits) if bits else None
