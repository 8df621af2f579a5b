"""``export_onnx``: a deployed PyTorch model → the ONNX file that ONNX Runtime and OpenVINO build.

fp32 (and fp16) models are exported as they compute. An int8 deployment (8-bit symmetric
fake quantization, ``autotune.compress.fakequant``) is exported in QDQ form, the form both runtimes
turn into integer kernels: each quantized activation becomes ``QuantizeLinear → DequantizeLinear``
with **u8** values and zero point 128 (what ONNX Runtime's x86 kernels prefer; the clamp to ±127
steps before it keeps the twin's symmetric range exactly), and each quantized weight an s8
``QuantizeLinear → DequantizeLinear`` per output channel (or per tensor). The QDQ model computes
the same values as the fake-quantized twin, up to float rounding.
"""

from __future__ import annotations

import copy
import time
import warnings
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from autotune.errors import CandidateFailed

__all__ = ["INPUT", "OUTPUT", "OPSET", "export_onnx"]

INPUT, OUTPUT = "input", "logits"
#: Per-channel QuantizeLinear needs opset 13.
OPSET = 17


class _ActQDQ(nn.Module):
    """A symmetric 8-bit activation quantizer as u8 QDQ (zero point 128) after a clamp to ±127 steps."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = float(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.clamp(x, -127 * self.scale, 127 * self.scale)
        return torch.fake_quantize_per_tensor_affine(x, self.scale, 128, 0, 255)


class _WeightQDQ(nn.Module):
    """A conv or linear layer whose (already quantized) weight is written as s8 QDQ."""

    def __init__(self, layer: nn.Module, per_channel: bool) -> None:
        super().__init__()
        self.layer, self.per_channel = layer, per_channel
        w = layer.weight.detach()
        if per_channel:
            amax = w.abs().amax(dim=tuple(range(1, w.dim())))
        else:
            amax = w.abs().amax().reshape(1)
        self.register_buffer("scale", torch.where(amax > 0, amax / 127, torch.ones_like(amax)).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, m = self.layer.weight, self.layer
        if self.per_channel:
            zero = torch.zeros(len(self.scale), dtype=torch.int32)
            w = torch.fake_quantize_per_channel_affine(w, self.scale, zero, 0, -128, 127)
        else:
            w = torch.fake_quantize_per_tensor_affine(w, float(self.scale[0]), 0, -128, 127)
        if isinstance(m, nn.Linear):
            return F.linear(x, w, m.bias)
        return F.conv2d(x, w, m.bias, m.stride, m.padding, m.dilation, m.groups)


def _as_qdq(model: nn.Module, granularity: str) -> nn.Module:
    """A copy of an int8-deployed model with its quantizers in QDQ form."""
    from autotune.compress.fakequant import FakeQuant, QuantLayer

    model = copy.deepcopy(model).eval()
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if not isinstance(child, QuantLayer):
                continue
            act: nn.Module = nn.Identity()
            if isinstance(child.act, FakeQuant):
                act = _ActQDQ(float(child.act.scale))
            setattr(parent, name, nn.Sequential(act, _WeightQDQ(child.layer, granularity == "channel")))
    return model


def export_onnx(
    model: nn.Module, input_shape: tuple[int, ...], path: str | Path, *, precision: str = "fp32",
    granularity: str = "channel",
) -> float:  # fmt: skip
    """Write ``model`` (eval mode, BatchNorm folded) as ONNX for batch 1 (input ``input``, output
    ``logits``); int8 in QDQ form (module docstring). Returns the seconds it took.

    Raises:
        CandidateFailed: stage ``convert``: the exporter cannot write this model.
    """
    t0 = time.perf_counter()
    m = _as_qdq(model, granularity) if precision == "int8" else model.eval()
    x = torch.zeros((1, *input_shape), dtype=torch.float32)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(m, (x,), str(path), dynamo=False, opset_version=OPSET, input_names=[INPUT],
                              output_names=[OUTPUT])  # fmt: skip
    except Exception as err:  # the TorchScript exporter raises many types for unsupported operators
        raise CandidateFailed("convert", f"ONNX export failed: {type(err).__name__}: {err}".splitlines()[0]) from err
    return time.perf_counter() - t0
