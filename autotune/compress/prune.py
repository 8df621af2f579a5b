"""Pruning: structured (channels removed with torch-pruning's dependency graph) or unstructured
(magnitude, made permanent), by a criterion of ``IMPORTANCE`` (L1/L2 magnitude, first-order Taylor),
in ``steps`` iterations each followed by ``finetune_epochs`` of fine-tuning."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

from pydantic import field_validator

from autotune.compress.base import PASSES, CompressContext, CompressionPass, PassSettings, check_values
from autotune.compress.importance import IMPORTANCE, Importance
from autotune.compress.weights import sparsity, weight_layers
from autotune.config.search_space import ParamOrConst
from autotune.records import PassReport

if TYPE_CHECKING:
    from torch import nn

__all__ = ["PrunePass", "PruneSettings"]


class PruneSettings(PassSettings):
    """``ratio``: fraction of channels (structured) or weights (unstructured) removed at the end;
    each of the ``steps`` is followed by ``finetune_epochs`` at ``finetune_lr_scale`` × the trial's lr."""

    kind: ParamOrConst = "structured"
    criterion: ParamOrConst = "l2"
    ratio: ParamOrConst = 0.5
    scope: ParamOrConst = "layer"
    steps: ParamOrConst = 1
    finetune_epochs: ParamOrConst = 2
    finetune_lr_scale: ParamOrConst = 1.0

    _kind = field_validator("kind")(lambda v: check_values(v, choices=("structured", "unstructured")))
    _criterion = field_validator("criterion")(lambda v: check_values(v, choices=IMPORTANCE.names()))
    _ratio = field_validator("ratio")(lambda v: check_values(v, lo=0, hi=1, lo_open=True, hi_open=True))
    _scope = field_validator("scope")(lambda v: check_values(v, choices=("layer", "global")))
    _steps = field_validator("steps")(lambda v: check_values(v, lo=1, hi=20, integer=True))
    _ft = field_validator("finetune_epochs")(lambda v: check_values(v, lo=0, hi=100, integer=True))
    _lr = field_validator("finetune_lr_scale")(lambda v: check_values(v, lo=0, hi=10, lo_open=True))


def _taylor_grads(model: nn.Module, ctx: CompressContext, batches: int = 4) -> None:
    """Accumulate gradients of the training loss on a few batches (Taylor importance reads them)."""
    import torch

    from autotune.compress.finetune import loss_of

    model.train()
    model.zero_grad(set_to_none=True)
    gen = torch.Generator().manual_seed(ctx.seed)
    x, y = torch.from_numpy(ctx.data.x_train), torch.from_numpy(ctx.data.y_train)
    idx = torch.randperm(len(x), generator=gen)[: 64 * batches]
    for i in range(0, len(idx), 64):
        b = idx[i : i + 64]
        loss_of(ctx)(model(x[b]), x[b], y[b]).backward()
    model.eval()


def _classifier(model: nn.Module) -> nn.Module | None:
    from torch import nn

    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


def _structured(model: nn.Module, s: PruneSettings, crit: Importance, ctx: CompressContext) -> nn.Module:
    import torch
    import torch_pruning as tp

    from autotune.compress.finetune import finetune

    head = _classifier(model)  # its outputs are the classes
    pruner = tp.pruner.MetaPruner(
        model,
        example_inputs=torch.zeros((1, *ctx.data.input_shape)),
        importance=crit.structured(),
        pruning_ratio=float(s.ratio),
        iterative_steps=int(s.steps),
        global_pruning=s.scope == "global",
        ignored_layers=[head] if head is not None else [],
    )
    for _ in range(int(s.steps)):
        if crit.needs_grads:
            _taylor_grads(model, ctx)
        pruner.step()
        model.zero_grad(set_to_none=True)
        finetune(model, ctx, int(s.finetune_epochs), float(s.finetune_lr_scale))
    return model


def _unstructured(model: nn.Module, s: PruneSettings, crit: Importance, ctx: CompressContext) -> nn.Module:
    import torch
    from torch.nn.utils import prune

    from autotune.compress.finetune import finetune

    layers = weight_layers(model)
    steps, final = int(s.steps), float(s.ratio)
    for step in range(1, steps + 1):
        target = final * step / steps  # fraction pruned after this step (of all weights)
        for m in layers:
            if prune.is_pruned(m):
                prune.remove(m, "weight")  # the zeros stay; the next mask is computed from scratch
        if crit.needs_grads:
            _taylor_grads(model, ctx)
        with torch.no_grad():
            scores = [crit.score(m.weight) for m in layers]
        if s.scope == "global":
            flat = torch.cat([sc.flatten() for sc in scores])
            k = int(round(target * flat.numel()))
            cut = torch.kthvalue(flat, k).values if k > 0 else flat.min() - 1
            masks = [(sc > cut).float() for sc in scores]
        else:
            masks = []
            for sc in scores:
                k = int(round(target * sc.numel()))
                cut = torch.kthvalue(sc.flatten(), k).values if k > 0 else sc.min() - 1
                masks.append((sc > cut).float())
        for m, mask in zip(layers, masks, strict=True):
            prune.custom_from_mask(m, "weight", mask)  # keeps pruned weights at zero while fine-tuning
        model.zero_grad(set_to_none=True)
        finetune(model, ctx, int(s.finetune_epochs), float(s.finetune_lr_scale))
    for m in layers:
        prune.remove(m, "weight")  # permanent: the weight tensor itself holds the zeros
    return model


@PASSES.register("prune")
class PrunePass(CompressionPass):
    """Structured pruning shrinks the network (fewer MACs); unstructured only zeroes weights, which a
    dense compiled kernel computes all the same: its rows show sparsity, not speed."""

    name = "prune"
    order = 2
    Settings = PruneSettings

    def apply(self, model: nn.Module, settings: PruneSettings, ctx: CompressContext) -> tuple[nn.Module, PassReport]:
        model = copy.deepcopy(model).eval()
        crit = IMPORTANCE.get(str(settings.criterion))()
        prune = _structured if settings.kind == "structured" else _unstructured
        model = prune(model, settings, crit, ctx).eval()
        return model, PassReport(self.name, {"sparsity": sparsity(model)})

    def changes_structure(self, settings: PruneSettings) -> bool:
        return settings.kind == "structured"  # unstructured zeros leave the dense network as it was
