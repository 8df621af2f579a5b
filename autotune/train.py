"""Train a candidate: ``train(model, data, settings) -> TrainedModel``."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from autotune.data import DataSplits
from autotune.errors import CandidateFailed
from autotune.quiet import QuietLock
from autotune.records import TrainedModel

__all__ = ["accuracy", "make_optimizer", "make_scheduler", "train"]

#: Called after each epoch with (epoch, val_accuracy, val_loss).
EpochHook = Callable[[int, float, float], None]


def make_optimizer(params: Any, s: dict[str, Any]) -> torch.optim.Optimizer:
    """The optimizer named by ``s['optimizer']`` with its own hyper-parameters."""
    lr, wd, name = float(s["lr"]), float(s["weight_decay"]), s["optimizer"]
    betas = (float(s["beta1"]), float(s["beta2"]))
    eps = float(s["eps"])
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=wd)
    if name in ("momentum", "nesterov"):
        return torch.optim.SGD(
            params, lr=lr, momentum=float(s["momentum"]), nesterov=name == "nesterov", weight_decay=wd
        )
    if name == "adagrad":
        return torch.optim.Adagrad(params, lr=lr, weight_decay=wd, eps=eps)
    if name == "adadelta":
        return torch.optim.Adadelta(params, lr=lr, rho=float(s["rho"]), weight_decay=wd, eps=eps)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=betas, eps=eps, weight_decay=wd)
    if name == "rmsprop":
        return torch.optim.RMSprop(
            params,
            lr=lr,
            alpha=float(s["alpha"]),
            momentum=float(s["momentum"]) if "momentum" in s else 0.0,
            eps=eps,
            weight_decay=wd,
        )
    if name == "nadam":
        return torch.optim.NAdam(params, lr=lr, betas=betas, eps=eps, weight_decay=wd)
    raise ValueError(f"unknown optimizer {name!r}")


def make_scheduler(opt: torch.optim.Optimizer, s: dict[str, Any]) -> torch.optim.lr_scheduler.LRScheduler:
    """The per-epoch learning-rate schedule named by ``s['schedule']``."""
    name, epochs, gamma = s["schedule"], int(s["epochs"]), float(s["gamma"])
    sched = torch.optim.lr_scheduler
    if name == "constant":
        return sched.LambdaLR(opt, lambda _: 1.0)
    if name == "step":
        return sched.StepLR(opt, step_size=max(1, int(s["step_size"])), gamma=gamma)
    if name == "exponential":
        return sched.ExponentialLR(opt, gamma=gamma)
    if name == "piecewise":
        fractions = [float(f) for f in str(s["milestones"]).split(",") if f.strip()]
        return sched.MultiStepLR(opt, milestones=sorted({max(1, round(f * epochs)) for f in fractions}), gamma=gamma)
    if name == "cosine":
        return sched.CosineAnnealingLR(opt, T_max=max(1, epochs))
    raise ValueError(f"unknown schedule {name!r}")


@torch.no_grad()
def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray, batch: int = 256) -> tuple[float, float]:
    """Return (top-1 accuracy, mean cross-entropy) of ``model`` in eval mode."""
    model.eval()
    correct, loss, n = 0, 0.0, len(x)
    for i in range(0, n, batch):
        xb, yb = torch.from_numpy(x[i : i + batch]), torch.from_numpy(y[i : i + batch])
        out = model(xb)
        loss += nn.functional.cross_entropy(out, yb, reduction="sum").item()
        correct += int((out.argmax(1) == yb).sum())
    return correct / max(1, n), loss / max(1, n)


def train(
    model: nn.Module,
    data: DataSplits,
    settings: dict[str, Any],
    *,
    seed: int,
    lock: QuietLock | None = None,
    on_epoch: EpochHook | None = None,
    loss: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    on_curve: Callable[[dict[str, float]], None] | None = None,
) -> TrainedModel:
    """Train ``model`` in place on ``data.x_train``; select the epoch by validation accuracy.

    Early stopping: with ``patience > 0``, stop after that many epochs without a better
    validation accuracy. The weights of the best epoch are restored. ``loss(logits, x, y)`` replaces
    the cross-entropy (distillation); the L1 penalty is added to either. Time spent waiting for the
    quiet-measurement lock is not counted in ``train_s``. ``on_curve`` hears each epoch's training
    loss (the batches' mean), validation loss and accuracy, and learning rate (``autotune.curves``).

    Raises:
        CandidateFailed: the loss became NaN or infinite, or memory ran out.
    """
    lock = lock or QuietLock(None)
    waited0 = lock.waited_s
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    opt = make_optimizer(model.parameters(), settings)
    sched = make_scheduler(opt, settings)
    bs, epochs, l1 = int(settings["batch_size"]), int(settings["epochs"]), float(settings["l1"])
    patience = int(settings["patience"])
    xt, yt = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    ce = nn.CrossEntropyLoss(label_smoothing=float(settings["label_smoothing"]))
    loss_fn = loss or (lambda logits, _x, y: ce(logits, y))
    best_acc, best_state, since_best = -1.0, None, 0
    epoch = 0
    for epoch in range(1, epochs + 1):
        model.train()
        lr = float(opt.param_groups[0]["lr"])
        total, seen = 0.0, 0
        perm = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), bs):
            idx = perm[i : i + bs]
            if len(idx) < 2:
                continue  # BatchNorm cannot train on a single sample
            with lock.shared():
                try:
                    out = model(xt[idx])
                    value = loss_fn(out, xt[idx], yt[idx])
                    if l1:
                        value = value + l1 * sum(p.abs().sum() for p in model.parameters() if p.dim() > 1)
                    if not math.isfinite(value.item()):
                        raise CandidateFailed("train", f"loss is {value.item()} at epoch {epoch}")
                    opt.zero_grad(set_to_none=True)
                    value.backward()
                    opt.step()
                    total, seen = total + value.item() * len(idx), seen + len(idx)
                except (MemoryError, torch.OutOfMemoryError) as err:
                    raise CandidateFailed("train", f"out of memory: {err}") from err
        sched.step()
        with lock.shared():
            val_acc, val_loss = accuracy(model, data.x_val, data.y_val)
        if not math.isfinite(val_loss):
            raise CandidateFailed("train", f"validation loss is {val_loss} at epoch {epoch}")
        if val_acc > best_acc:
            best_acc, since_best = val_acc, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            since_best += 1
        if on_curve:
            on_curve({"epoch": epoch, "train_loss": total / max(seen, 1), "val_loss": val_loss,
                      "val_accuracy": val_acc, "lr": lr})  # fmt: skip
        if on_epoch:
            on_epoch(epoch, val_acc, val_loss)
        if patience and since_best >= patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    with lock.shared():
        test_acc, _ = accuracy(model, data.x_test, data.y_test)
    train_s = time.perf_counter() - t0 - (lock.waited_s - waited0)
    model.eval()
    return TrainedModel(
        model=model,
        val_accuracy=best_acc,
        accuracy=test_acc,
        epochs=epoch,
        train_s=train_s,
        lock_wait_s=lock.waited_s - waited0,
    )
