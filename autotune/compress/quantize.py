"""Quantization: simulated (fake-quantized) weights and activations at 2–8 bits, calibrated on
training batches (post-training) or fine-tuned with a straight-through estimator (quantization-aware),
then deployed at ``fp32``, ``fp16`` or real ``int8``.

Schemes:
- ``linear``: uniform levels; symmetric (scale = max|x| / (2^(b-1) - 1), zero point 0) or
  asymmetric (scale = (max - min) / (2^b - 1), integer zero point); weights per tensor or per
  output channel, activations per tensor.
- ``log``: power-of-two weight levels ``±α·2^-k`` (k = 0 … 2^(b-1) - 2) and zero, with α the
  per-tensor or per-channel max|w|; activations stay float.
- ``none``: no simulated quantization (only the deployment precision changes).

For ``int8`` deployment the exported model carries its 8-bit symmetric weights as float values and
its activation quantizers as ``clamp(round(x / s), -127, 127) * s``; ``autotune.compiler.precision`` rewrites
each such quantizer feeding a convolution or matmul into an int8 × int8 → int32 operator.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

from pydantic import field_validator, model_validator

from autotune.compress.base import PASSES, CompressContext, CompressionPass, PassSettings, check_values, spec_values
from autotune.config.search_space import ParamOrConst
from autotune.records import Deployment, PassReport

if TYPE_CHECKING:
    from torch import nn

__all__ = ["QuantizePass", "QuantizeSettings"]

DEPLOY = ("fp32", "fp16", "int8")


class QuantizeSettings(PassSettings):
    """QAT fine-tunes at ``qat_lr_scale`` × the trial's lr (default 0.1: at the full rate, one QAT
    epoch cost 3.3 accuracy points on digits)."""

    scheme: ParamOrConst = "linear"
    bits: ParamOrConst = 8
    symmetric: ParamOrConst = True
    granularity: ParamOrConst = "channel"
    method: ParamOrConst = "ptq"
    qat_epochs: ParamOrConst = 2
    qat_lr_scale: ParamOrConst = 0.1
    calib_batches: ParamOrConst = 8
    deploy: ParamOrConst = "fp32"

    _scheme = field_validator("scheme")(lambda v: check_values(v, choices=("linear", "log", "none")))
    _bits = field_validator("bits")(lambda v: check_values(v, lo=2, hi=8, integer=True))
    _sym = field_validator("symmetric")(lambda v: check_values(v, choices=(True, False)))
    _gran = field_validator("granularity")(lambda v: check_values(v, choices=("tensor", "channel")))
    _method = field_validator("method")(lambda v: check_values(v, choices=("ptq", "qat")))
    _qat = field_validator("qat_epochs")(lambda v: check_values(v, lo=0, hi=100, integer=True))
    _qat_lr = field_validator("qat_lr_scale")(lambda v: check_values(v, lo=0, hi=10, lo_open=True))
    _calib = field_validator("calib_batches")(lambda v: check_values(v, lo=1, hi=10_000, integer=True))
    _deploy = field_validator("deploy")(lambda v: check_values(v, choices=DEPLOY))

    @model_validator(mode="after")
    def _int8_deployable(self) -> QuantizeSettings:
        """int8 runs 8-bit symmetric linear arithmetic; a setting that can never be that is an error.
        (A setting with a ``when`` condition is checked per trial instead.)"""
        if "int8" not in spec_values(self.deploy):
            return self
        need = {"scheme": "linear", "bits": 8, "symmetric": True}
        for key, want in need.items():
            spec = getattr(self, key)
            if getattr(spec, "when", None):
                continue
            bad = [v for v in spec_values(spec) if v != want]
            if bad:
                raise ValueError(
                    f"deploy int8 needs {key}={want!r} (8-bit symmetric linear), but {key} can be {bad[0]!r}; "
                    f"limit int8 to those trials with a 'when' condition, or deploy fp32"
                )
        return self


@PASSES.register("quantize")
class QuantizePass(CompressionPass):
    name = "quantize"
    order = 4  # last: every pass before it works on float weights
    Settings = QuantizeSettings

    def apply(self, model: nn.Module, settings: QuantizeSettings, ctx: CompressContext) -> tuple[nn.Module, PassReport]:
        from autotune.compress.fakequant import calibrate, wrap_layers
        from autotune.compress.finetune import finetune
        from autotune.errors import CandidateFailed
        from autotune.models.layers import fold_batchnorm

        s = settings
        if s.deploy == "int8" and (s.scheme, int(s.bits), bool(s.symmetric)) != ("linear", 8, True):
            raise CandidateFailed(
                "compress",
                f"deploy int8 needs 8-bit symmetric linear quantization, got scheme={s.scheme} "
                f"bits={s.bits} symmetric={s.symmetric}",
            )
        model = copy.deepcopy(model).eval()
        fold_batchnorm(model)  # quantize what is deployed: BatchNorm folded into the convolutions
        if s.scheme != "none":
            layers = wrap_layers(model, s.model_dump())
            calibrate(model, layers, ctx, int(s.calib_batches))
            if s.method == "qat":
                finetune(model, ctx, int(s.qat_epochs), float(s.qat_lr_scale))
            for q in layers:
                q.freeze()
        bits = int(s.bits) if s.scheme != "none" else None
        return model.eval(), PassReport(self.name, {"deploy_precision": s.deploy, "quant_bits": bits})

    def changes_structure(self, settings: QuantizeSettings) -> bool:
        return True  # fake-quantized layers, and the precision the compiler builds at

    def deployment(self, settings: QuantizeSettings) -> Deployment:
        return Deployment(precision=str(settings.deploy), weight_granularity=str(settings.granularity))
