"""Low-rank factorization: truncated SVD of linear layers and of convolutions (a k×k convolution to
``rank`` channels followed by a 1×1 convolution), then fine-tuning. A layer whose factorized form
would hold as many weights as the original, and grouped (depthwise) convolutions, are left alone."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

from pydantic import field_validator, model_validator

from autotune.compress.base import PASSES, CompressContext, CompressionPass, PassSettings, check_values
from autotune.config.search_space import ParamOrConst
from autotune.records import PassReport

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["LowRankPass", "choose_rank", "factorize"]


class LowRankSettings(PassSettings):
    """Keep ``rank_ratio`` of each layer's full rank, or the fewest singular values holding
    ``energy`` of the squared spectrum (set exactly one)."""

    rank_ratio: ParamOrConst | None = None
    energy: ParamOrConst | None = None
    finetune_epochs: ParamOrConst = 2
    finetune_lr_scale: ParamOrConst = 1.0

    _ratio = field_validator("rank_ratio")(
        lambda v: v if v is None else check_values(v, lo=0, hi=1, lo_open=True, hi_open=True)
    )
    _energy = field_validator("energy")(
        lambda v: v if v is None else check_values(v, lo=0, hi=1, lo_open=True, hi_open=True)
    )
    _ft = field_validator("finetune_epochs")(lambda v: check_values(v, lo=0, hi=100, integer=True))
    _lr = field_validator("finetune_lr_scale")(lambda v: check_values(v, lo=0, hi=10, lo_open=True))

    @model_validator(mode="after")
    def _one(self) -> LowRankSettings:
        if (self.rank_ratio is None) == (self.energy is None):
            raise ValueError("set exactly one of 'rank_ratio' and 'energy'")
        return self


def choose_rank(s: torch.Tensor, *, rank_ratio: float | None, energy: float | None) -> int:
    """Rank from the singular values ``s`` (descending)."""
    import torch

    if rank_ratio is not None:
        return max(1, int(round(rank_ratio * len(s))))
    cum = torch.cumsum(s.double() ** 2, 0) / max(float((s.double() ** 2).sum()), 1e-30)
    return min(len(s), int((cum < energy).sum()) + 1)


def factorize(layer: nn.Module, *, rank_ratio: float | None, energy: float | None) -> nn.Module | None:
    """The two-layer factorization of ``layer``, or None when it would not be smaller."""
    import torch
    from torch import nn

    if isinstance(layer, nn.Conv2d) and layer.groups != 1:
        return None
    w = layer.weight.detach()
    cout = w.shape[0]
    mat = w.reshape(cout, -1)
    u, s, vh = torch.linalg.svd(mat, full_matrices=False)
    r = choose_rank(s, rank_ratio=rank_ratio, energy=energy)
    if r * (mat.shape[1] + cout) >= mat.numel():
        return None
    root = s[:r].sqrt()
    first_w, second_w = root[:, None] * vh[:r], u[:, :r] * root[None, :]
    bias = layer.bias.detach().clone() if layer.bias is not None else None
    if isinstance(layer, nn.Linear):
        a, b = nn.Linear(mat.shape[1], r, bias=False), nn.Linear(r, cout, bias=bias is not None)
        a.weight.data.copy_(first_w)
        b.weight.data.copy_(second_w)
    else:
        a = nn.Conv2d(layer.in_channels, r, layer.kernel_size, layer.stride, layer.padding, layer.dilation, bias=False)
        b = nn.Conv2d(r, cout, 1, bias=bias is not None)
        a.weight.data.copy_(first_w.reshape(r, *w.shape[1:]))
        b.weight.data.copy_(second_w.reshape(cout, r, 1, 1))
    if bias is not None:
        b.bias.data.copy_(bias)
    return nn.Sequential(a, b)


@PASSES.register("lowrank")
class LowRankPass(CompressionPass):
    name = "lowrank"
    order = 1
    Settings = LowRankSettings

    def apply(self, model: nn.Module, settings: LowRankSettings, ctx: CompressContext) -> tuple[nn.Module, PassReport]:
        from torch import nn

        from autotune.compress.finetune import finetune

        model = copy.deepcopy(model)
        ratio, energy = settings.rank_ratio, settings.energy
        done = 0
        for parent in list(model.modules()):
            for name, child in list(parent.named_children()):
                if not isinstance(child, nn.Conv2d | nn.Linear):
                    continue
                new = factorize(
                    child,
                    rank_ratio=float(ratio) if ratio is not None else None,
                    energy=float(energy) if energy is not None else None,
                )
                if new is not None:
                    setattr(parent, name, new)
                    done += 1
        finetune(model, ctx, int(settings.finetune_epochs), float(settings.finetune_lr_scale))
        return model.eval(), PassReport(self.name, {"lowrank_layers": done})

    def changes_structure(self, settings: LowRankSettings) -> bool:
        return True
