"""Knowledge distillation: the student trains on ``α·T²·KL(p_t ‖ p_s) + (1-α)·CE`` with
``p = softmax(logits / T)`` (Hinton et al. 2015). The teacher (a model of the space's family, or a
plug-in builder) is trained once per run and cached in the run's cache directory; a file lock makes
concurrent trials and Ray workers wait for the one that trains it instead of training it again."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from autotune.compress.base import PASSES, CompressContext, CompressionPass, PassSettings, Prepared, check_values
from autotune.config.search_space import TRAIN_KEYS, ParamOrConst, Scalar

if TYPE_CHECKING:
    from torch import nn

    from autotune.config.search_space import SearchSpace

__all__ = ["DistillPass", "Teacher", "load_teacher"]


class Teacher(BaseModel):
    """The teacher: a model family (default: the space's) or plug-in builder, with fixed parameters."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str | None = Field(default=None, description="Family name or 'pkg.module:build'; default the space's.")
    arch: dict[str, Scalar] = Field(default_factory=dict)
    train: dict[str, Scalar] = Field(default_factory=dict)

    @field_validator("train")
    @classmethod
    def _train_keys(cls, v: dict[str, Any]) -> dict[str, Any]:
        for k in v:
            if k not in TRAIN_KEYS:
                raise ValueError(f"unknown training parameter {k!r}; valid: {', '.join(TRAIN_KEYS)}")
        return v


class DistillSettings(PassSettings):
    teacher: Teacher
    alpha: ParamOrConst = 0.7
    temperature: ParamOrConst = 4.0

    _alpha = field_validator("alpha")(lambda v: check_values(v, lo=0, hi=1))
    _t = field_validator("temperature")(lambda v: check_values(v, lo=0, hi=100, lo_open=True))


def _teacher_key(teacher: Teacher, space: SearchSpace) -> str:
    ident = {"teacher": teacher.model_dump(), "task": space.task.model_dump()}
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_teacher(teacher: Teacher, ctx: CompressContext) -> tuple[nn.Module, dict[str, Any]]:
    """The run's trained teacher (eval mode) and its record; trains and caches it on first use."""
    import fcntl

    import torch

    from autotune.models import build_model, resolve_family
    from autotune.train import train

    fam = resolve_family(teacher.model or ctx.space.task.model)
    arch = {"dropout": 0.0, **teacher.arch}
    key = _teacher_key(teacher, ctx.space)
    ctx.cache_dir.mkdir(parents=True, exist_ok=True)
    weights, record = ctx.cache_dir / f"teacher-{key}.pt", ctx.cache_dir / f"teacher-{key}.json"
    model = build_model(fam, arch, ctx.data.input_shape, ctx.data.num_classes)
    with (ctx.cache_dir / f"teacher-{key}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one trainer; the others wait here and then load
        if not record.exists():
            settings = {**TRAIN_KEYS, **teacher.train}
            seed = ctx.space.task.split.seed
            trained = train(model, ctx.data, settings, seed=seed, lock=ctx.lock)
            torch.save(trained.model.state_dict(), weights)
            info = {"accuracy": trained.accuracy, "val_accuracy": trained.val_accuracy, "train_s": trained.train_s}
            tmp = record.with_suffix(".tmp")
            tmp.write_text(json.dumps(info))
            tmp.replace(record)
        info = json.loads(record.read_text())
    model.load_state_dict(torch.load(weights, weights_only=True))
    return model.eval(), info


def distill_loss(teacher: nn.Module, alpha: float, temperature: float, label_smoothing: float = 0.0) -> Any:
    """The student's loss (logits, inputs, labels) -> scalar, with the teacher run on the same inputs."""
    import torch
    from torch.nn import functional as F

    t2 = temperature * temperature

    def loss(logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = F.log_softmax(teacher(x) / temperature, dim=1)
        kd = F.kl_div(F.log_softmax(logits / temperature, dim=1), target, log_target=True, reduction="batchmean")
        return alpha * t2 * kd + (1 - alpha) * F.cross_entropy(logits, y, label_smoothing=label_smoothing)

    return loss


@PASSES.register("distill")
class DistillPass(CompressionPass):
    name = "distill"
    order = 0
    Settings = DistillSettings

    def prepare(self, settings: DistillSettings, ctx: CompressContext) -> Prepared:
        teacher, info = load_teacher(settings.teacher, ctx)
        smoothing = float((ctx.train or {}).get("label_smoothing", 0.0))
        loss = distill_loss(teacher, float(settings.alpha), float(settings.temperature), smoothing)
        return Prepared(loss=loss, columns={"teacher_accuracy": info.get("accuracy")})

    def check(self, settings: DistillSettings, space: SearchSpace, *, file: str | None = None) -> None:
        from autotune.errors import UserError
        from autotune.models.check import check_arch

        key = "compress.distill.teacher"
        if not space.trains:
            raise UserError("distillation trains the student: the space needs a train section", file=file, key=key)
        teacher = settings.teacher
        model = teacher.model or space.task.model
        check_arch(model, dict(teacher.arch), file=file or "", key=key, model_key=f"{key}.model")
