"""Run a trial's compression passes in their fixed order: distillation (prepared before training) →
low-rank factorization → pruning → quantization. Each pass works on the model the previous returned."""

from __future__ import annotations

from typing import Any

from torch import nn

from autotune.compress.base import PASSES, CompressContext, CompressionPass, LossFn
from autotune.train import train

__all__ = ["CompressionPlan", "compress_model", "finetune", "loss_of", "plan_compression"]

CompressionPlan = list[tuple[CompressionPass, dict[str, Any]]]


def plan_compression(settings: dict[str, dict[str, Any]]) -> CompressionPlan:
    """The enabled passes of a trial (``TrialConfig.compress``), in pipeline order."""
    steps = [(PASSES.get(name)(), s) for name, s in settings.items() if s.get("enabled", True)]
    return sorted(steps, key=lambda step: step[0].order)


def loss_of(ctx: CompressContext) -> LossFn:
    """The loss in force: the distillation loss when a teacher is set, else cross-entropy."""
    if ctx.loss is not None:
        return ctx.loss
    smoothing = float((ctx.train or {}).get("label_smoothing", 0.0))
    return lambda logits, _x, y: nn.functional.cross_entropy(logits, y, label_smoothing=smoothing)


def finetune(model: nn.Module, ctx: CompressContext, epochs: int, lr_scale: float = 1.0) -> None:
    """Fine-tune in place for ``epochs`` with the trial's optimizer at ``lr_scale`` times its learning
    rate, cosine-decayed, keeping the epoch with the best validation accuracy. Without a train
    section: nothing."""
    if epochs <= 0 or ctx.train is None:
        return
    lr = float(ctx.train["lr"]) * lr_scale
    settings = {**ctx.train, "lr": lr, "epochs": epochs, "patience": 0, "schedule": "cosine"}
    train(model, ctx.data, settings, seed=ctx.seed, lock=ctx.lock, loss=ctx.loss)


def compress_model(model: nn.Module, plan: CompressionPlan, ctx: CompressContext) -> nn.Module:
    """Apply the plan's passes (after training) to ``model`` in place; return the compressed model."""
    for step, settings in plan:
        model = step.apply(model, settings, ctx)
    return model.eval()
