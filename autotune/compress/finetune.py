"""What passes share for fine-tuning: the training loss in force and the fine-tuning loop."""

from __future__ import annotations

from torch import nn

from autotune.compress.base import CompressContext, LossFn
from autotune.train import train

__all__ = ["finetune", "loss_of"]


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
