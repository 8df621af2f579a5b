"""Pruning: structured (channels removed with torch-pruning's dependency graph) or unstructured
(magnitude, made permanent), by L1/L2 magnitude or first-order Taylor importance, in ``steps``
iterations each followed by ``finetune_epochs`` of fine-tuning."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import field_validator

from autotune.compress.base import PASSES, CompressContext, CompressionPass, PassSettings, check_values
from autotune.config.search_space import ParamOrConst

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["PrunePass", "sparsity", "weight_layers"]

CRITERIA = ("l1", "l2", "taylor")


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
    _criterion = field_validator("criterion")(lambda v: check_values(v, choices=CRITERIA))
    _ratio = field_validator("ratio")(lambda v: check_values(v, lo=0, hi=1, lo_open=True, hi_open=True))
    _scope = field_validator("scope")(lambda v: check_values(v, choices=("layer", "global")))
    _steps = field_validator("steps")(lambda v: check_values(v, lo=1, hi=20, integer=True))
    _ft = field_validator("finetune_epochs")(lambda v: check_values(v, lo=0, hi=100, integer=True))
    _lr = field_validator("finetune_lr_scale")(lambda v: check_values(v, lo=0, hi=10, lo_open=True))


def weight_layers(model: nn.Module) -> list[nn.Module]:
    """The convolutions and linear layers (the layers pruning and quantization act on)."""
    from torch import nn

    return [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]


def sparsity(model: nn.Module) -> float:
    """Fraction of exactly-zero weights over all conv and linear weights."""
    zeros = total = 0
    for m in weight_layers(model):
        w = m.weight.detach()
        zeros += int((w == 0).sum())
        total += w.numel()
    return zeros / max(1, total)


def _taylor_grads(model: nn.Module, ctx: CompressContext, batches: int = 4) -> None:
    """Accumulate gradients of the training loss on a few batches (Taylor importance reads them)."""
    import torch

    from autotune.compress.pipeline import loss_of

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


def _structured(model: nn.Module, s: dict[str, Any], ctx: CompressContext, example: torch.Tensor) -> nn.Module:
    import torch_pruning as tp

    from autotune.compress.pipeline import finetune

    crit = s["criterion"]
    imp = tp.importance.TaylorImportance() if crit == "taylor" else tp.importance.MagnitudeImportance(p=int(crit[1]))
    head = _classifier(model)  # its outputs are the classes
    pruner = tp.pruner.MetaPruner(
        model,
        example_inputs=example,
        importance=imp,
        pruning_ratio=float(s["ratio"]),
        iterative_steps=int(s["steps"]),
        global_pruning=s["scope"] == "global",
        ignored_layers=[head] if head is not None else [],
    )
    for _ in range(int(s["steps"])):
        if crit == "taylor":
            _taylor_grads(model, ctx)
        pruner.step()
        model.zero_grad(set_to_none=True)
        finetune(model, ctx, int(s["finetune_epochs"]), float(s["finetune_lr_scale"]))
    return model


def _unstructured(model: nn.Module, s: dict[str, Any], ctx: CompressContext) -> nn.Module:
    import torch
    from torch.nn.utils import prune

    from autotune.compress.pipeline import finetune

    layers = weight_layers(model)
    steps, final = int(s["steps"]), float(s["ratio"])
    for step in range(1, steps + 1):
        target = final * step / steps  # fraction pruned after this step (of all weights)
        for m in layers:
            if prune.is_pruned(m):
                prune.remove(m, "weight")  # the zeros stay; the next mask is computed from scratch
        if s["criterion"] == "taylor":
            _taylor_grads(model, ctx)
        with torch.no_grad():
            scores = [_score(m.weight, s["criterion"]) for m in layers]
        if s["scope"] == "global":
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
        finetune(model, ctx, int(s["finetune_epochs"]), float(s["finetune_lr_scale"]))
    for m in layers:
        prune.remove(m, "weight")  # permanent: the weight tensor itself holds the zeros
    return model


def _score(w: torch.Tensor, criterion: str) -> torch.Tensor:
    """Importance per weight: |w|, w², or the first-order Taylor estimate |w·∂L/∂w|."""
    if criterion == "taylor":
        return (w * w.grad).abs() if w.grad is not None else w.abs() * 0
    return w.abs() if criterion == "l1" else w.pow(2)


@PASSES.register("prune")
class PrunePass(CompressionPass):
    """Structured pruning shrinks the network (fewer MACs); unstructured only zeroes weights, which a
    dense compiled kernel computes all the same: its rows show sparsity, not speed."""

    name = "prune"
    order = 2
    Settings = PruneSettings

    def apply(self, model: nn.Module, settings: dict[str, Any], ctx: CompressContext) -> nn.Module:
        import torch

        example = torch.zeros((1, *ctx.data.input_shape))
        model.eval()
        if settings["kind"] == "structured":
            model = _structured(model, settings, ctx, example)
        else:
            model = _unstructured(model, settings, ctx)
        ctx.report["sparsity"] = sparsity(model)
        return model.eval()
