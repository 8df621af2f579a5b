"""Weight clustering (k-means weight sharing, as in Deep Compression): each convolution's and linear
layer's weights are replaced by the nearest of ``clusters`` shared values, found by k-means on that
layer's weights; fine-tuning then moves the weights and they are snapped to their clusters' means
again, so the deployed model holds at most ``clusters`` distinct values per layer.

The compiled network is as dense and as fast as before: clustering shrinks what a model costs to
store and ship (log2(clusters)-bit indices plus a codebook), not its latency.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

from pydantic import field_validator

from autotune.compress.base import PASSES, CompressContext, CompressionPass, PassSettings, check_values
from autotune.config.search_space import ParamOrConst
from autotune.records import PassReport

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["ClusterPass", "ClusterSettings", "kmeans_1d"]


class ClusterSettings(PassSettings):
    """``clusters`` shared values per layer; ``finetune_epochs`` at ``finetune_lr_scale`` × the lr."""

    clusters: ParamOrConst = 16
    iterations: ParamOrConst = 20
    finetune_epochs: ParamOrConst = 1
    finetune_lr_scale: ParamOrConst = 0.1

    _k = field_validator("clusters")(lambda v: check_values(v, lo=2, hi=256, integer=True))
    _it = field_validator("iterations")(lambda v: check_values(v, lo=1, hi=1000, integer=True))
    _ft = field_validator("finetune_epochs")(lambda v: check_values(v, lo=0, hi=100, integer=True))
    _lr = field_validator("finetune_lr_scale")(lambda v: check_values(v, lo=0, hi=10, lo_open=True))


def kmeans_1d(values: torch.Tensor, k: int, iterations: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means on a flat tensor, centroids started evenly over [min, max] (deterministic).
    Returns (centroids (k,), the index of each value's centroid)."""
    import torch

    flat = values.detach().flatten()
    centroids = torch.linspace(float(flat.min()), float(flat.max()), k, dtype=flat.dtype)
    for _ in range(iterations):
        idx = (flat[:, None] - centroids[None, :]).abs().argmin(dim=1)
        sums = torch.zeros(k, dtype=flat.dtype).index_add_(0, idx, flat)
        counts = torch.bincount(idx, minlength=k).to(flat.dtype)
        moved = torch.where(counts > 0, sums / counts.clamp(min=1), centroids)
        if torch.equal(moved, centroids):
            break
        centroids = moved
    return centroids, (flat[:, None] - centroids[None, :]).abs().argmin(dim=1)


def _snap(layers: list[nn.Module], k: int, iterations: int) -> None:
    """Replace each layer's non-zero weights by their clusters' centroids, in place (pruned zeros stay
    zero, so sparsity survives clustering)."""
    import torch

    with torch.no_grad():
        for m in layers:
            w = m.weight
            live = w != 0
            if int(live.sum()) == 0:
                continue
            centroids, idx = kmeans_1d(w[live], min(k, int(live.sum())), iterations)
            w[live] = centroids[idx]


@PASSES.register("cluster")
class ClusterPass(CompressionPass):
    name = "cluster"
    order = 3  # after pruning (the zeros form a cluster of their own), before quantization
    Settings = ClusterSettings

    def apply(self, model: nn.Module, settings: ClusterSettings, ctx: CompressContext) -> tuple[nn.Module, PassReport]:
        import torch

        from autotune.compress.finetune import finetune
        from autotune.compress.weights import weight_layers

        model = copy.deepcopy(model).eval()
        layers = weight_layers(model)
        k, iterations = int(settings.clusters), int(settings.iterations)
        _snap(layers, k, iterations)
        if int(settings.finetune_epochs) > 0 and ctx.train is not None:
            zeros = [m.weight.detach() == 0 for m in layers]
            finetune(model, ctx, int(settings.finetune_epochs), float(settings.finetune_lr_scale))
            with torch.no_grad():
                for m, z in zip(layers, zeros, strict=True):
                    m.weight[z] = 0  # pruned weights stay pruned
            _snap(layers, k, iterations)  # fine-tuning spread the shared values: share them again
        distinct = max((int(m.weight.unique().numel()) for m in layers), default=0)
        return model.eval(), PassReport(self.name, {"weight_clusters": distinct})
