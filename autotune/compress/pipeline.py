"""Run a trial's compression passes in their fixed order: distillation (prepared before training) →
low-rank factorization → pruning → weight clustering → quantization. Each pass works on the model
the previous one returned; the trained model itself is never changed."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from pydantic import ValidationError
from torch import nn

from autotune.compress.base import PASSES, CompressContext, CompressionPass, PassSettings
from autotune.compress.weights import sparsity
from autotune.errors import CandidateFailed
from autotune.models import count_ops
from autotune.records import CompressedModel, Deployment, PassReport

__all__ = [
    "CompressionPlan",
    "changes_structure",
    "compress",
    "compress_model",
    "deployment",
    "plan_compression",
    "prepare",
]

#: The enabled passes of a trial with their resolved settings, in pipeline order.
CompressionPlan = list[tuple[CompressionPass, PassSettings]]


def plan_compression(settings: dict[str, dict[str, Any]]) -> CompressionPlan:
    """The enabled passes of a trial (``TrialConfig.compress``), in pipeline order, each with its
    ``Settings`` built from the trial's resolved values.

    Raises:
        CandidateFailed: stage ``compress``: this trial's combination of values is not allowed
            (a ``when`` condition let it through validation).
    """
    steps: CompressionPlan = []
    for name, values in settings.items():
        if not values.get("enabled", True):
            continue
        cls = PASSES.get(name)
        try:
            steps.append((cls(), cls.Settings.model_validate(values)))
        except ValidationError as err:
            problem = "; ".join(e["msg"].removeprefix("Value error, ") for e in err.errors())
            raise CandidateFailed("compress", f"{name}: {problem}") from None
    return sorted(steps, key=lambda step: step[0].order)


def changes_structure(plan: CompressionPlan) -> bool:
    """Whether any pass changes the deployed network's shape or precision."""
    return any(p.changes_structure(s) for p, s in plan)


def deployment(plan: CompressionPlan) -> Deployment:
    """The precision the compiler builds at: the last pass that decides it, else fp32."""
    found = [d for p, s in plan if (d := p.deployment(s)) is not None]
    return found[-1] if found else Deployment()


def prepare(plan: CompressionPlan, ctx: CompressContext) -> tuple[CompressContext, dict[str, Any]]:
    """Run every pass's ``prepare`` (before training): the context with the training loss in force,
    and the columns the passes report."""
    columns: dict[str, Any] = {}
    for step, settings in plan:
        prepared = step.prepare(settings, ctx)
        if prepared.loss is not None:
            ctx = dataclasses.replace(ctx, loss=prepared.loss)
        columns.update(prepared.columns)
    return ctx, columns


def compress_model(model: nn.Module, plan: CompressionPlan, ctx: CompressContext) -> tuple[nn.Module, list[PassReport]]:
    """Apply the plan's passes (after training) to a copy of ``model``: the compressed model and one
    report per pass (its seconds exclude waits for the quiet-measurement lock)."""
    import torch

    reports: list[PassReport] = []
    for step, settings in plan:
        t0, waited0 = time.perf_counter(), ctx.lock.waited_s
        torch.manual_seed(ctx.seed)
        try:
            model, report = step.apply(model, settings, ctx)
        except CandidateFailed:
            raise
        except (RuntimeError, ValueError, IndexError, AssertionError) as err:  # torch-pruning, SVD, shapes
            raise CandidateFailed("compress", f"{step.name}: {type(err).__name__}: {err}") from err
        seconds = time.perf_counter() - t0 - (ctx.lock.waited_s - waited0)
        reports.append(dataclasses.replace(report, seconds=seconds))
    return model.eval(), reports


def compress(
    model: nn.Module,
    plan: CompressionPlan,
    ctx: CompressContext,
    *,
    accuracy: float | None = None,
    val_accuracy: float | None = None,
    counted: tuple[int, int] | None = None,
) -> CompressedModel:
    """The compression stage: apply the plan and describe the result (MACs, parameters, sparsity and,
    when the trial trains, accuracy re-measured on the compressed model). Without passes the trained
    model is deployed as it is, with the given accuracies. ``counted``: the model's (MACs, parameters)
    when the caller counted them already (training changes neither).

    Raises:
        CandidateFailed: stage ``compress``: a pass failed on this model.
    """
    from autotune.train import accuracy as measure_accuracy

    t0, waited0 = time.perf_counter(), ctx.lock.waited_s
    macs_before, params_before = counted or count_ops(model, ctx.data.input_shape)
    out, reports = compress_model(model, plan, ctx) if plan else (model.eval(), [])
    macs, params = count_ops(out, ctx.data.input_shape) if plan else (macs_before, params_before)
    if plan and ctx.train is not None:
        data = ctx.data
        with ctx.lock.shared():
            val_accuracy, _ = measure_accuracy(out, data.x_val, data.y_val)
            accuracy, _ = measure_accuracy(out, data.x_test, data.y_test)
    return CompressedModel(
        model=out,
        deployment=deployment(plan),
        reports=tuple(reports),
        params=params,
        macs=macs,
        params_before=params_before,
        macs_before=macs_before,
        accuracy=accuracy,
        val_accuracy=val_accuracy,
        sparsity=sparsity(out),
        seconds=time.perf_counter() - t0 - (ctx.lock.waited_s - waited0) if plan else 0.0,
    )
