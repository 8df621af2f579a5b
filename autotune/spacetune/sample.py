"""The workloads of a search space: architectures sampled from it, built, fused as a candidate's
build fuses them, and their tuning tasks counted across the sample."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from autotune.config.device_profile import DeviceProfile
from autotune.config.search_space import SearchSpace
from autotune.errors import CandidateFailed, UserError

__all__ = ["SpaceSample", "SpaceWorkload", "sample_space"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SpaceWorkload:
    """One distinct fused kernel of the sample.

    Attributes:
        key: MetaSchedule's structural hash (the tuning database's and the ledger's key).
        name: a task name (the first seen).
        flops: floating-point operations of one call.
        calls: calls per inference, summed over the sampled architectures.
        models: sampled architectures that contain it.
    """

    key: str
    name: str
    flops: float
    calls: int
    models: int


@dataclass
class SpaceSample:
    """What sampling the space found: workloads by key, their modules, the architectures compiled."""

    workloads: dict[str, SpaceWorkload] = field(default_factory=dict)
    mods: dict[str, tuple[str, Any]] = field(default_factory=dict)  # key -> (task name, IRModule)
    architectures: int = 0
    failures: list[str] = field(default_factory=list)

    def add(self, tasks: list[Any], workloads: list[Any]) -> None:
        """Count one architecture's tasks (``extract_workloads``)."""
        self.architectures += 1
        for task, w in zip(tasks, workloads, strict=True):
            old = self.workloads.get(w.key)
            calls, models = (old.calls, old.models) if old else (0, 0)
            per_call = w.flops / max(w.calls, 1)
            self.workloads[w.key] = SpaceWorkload(w.key, old.name if old else w.name, per_call, calls + w.calls,
                                                  models + 1)  # fmt: skip
            self.mods.setdefault(w.key, (w.name, task.dispatched[0]))


def _fuse_one(task: Any, cfg: Any, profile: DeviceProfile, target: Any) -> tuple[list[Any], list[Any]]:
    from autotune.compiler import fused_module
    from autotune.exporter import export_program
    from autotune.tuning.tune import extract_workloads

    model, _ = task.build(cfg)
    program, _, _ = export_program(model, task.data.input_shape)
    return extract_workloads(fused_module(program, profile), target)


def sample_space(
    space: SearchSpace, profile: DeviceProfile, *, samples: int, seed: int, file: str | None = None
) -> SpaceSample:
    """Sample ``samples`` architectures of ``space`` (its low and high corners, then seeded random
    ones, as pre-flight does), build each at fp32 and collect the fused workloads of all of them.

    Compression settings are not applied: pruned or low-rank shapes and int8 kernels that the sample
    does not contain get default schedules in the search.

    Raises:
        UserError: (``file``, ``arch``) no sampled architecture compiles.
    """
    from autotune.compiler import resolve_target
    from autotune.preflight import sample_configs
    from autotune.task import make_trial_config, prepare_task

    task = prepare_task(space, profile)
    target = resolve_target(profile)
    out = SpaceSample()
    for i, params in enumerate(sample_configs(space, samples, seed)):
        cfg = make_trial_config(params, space, trial_id=f"tune-{i}", seed=seed)
        try:
            out.add(*_fuse_one(task, cfg, profile, target))
        except CandidateFailed as err:
            out.failures.append(f"sample {i}: {err.stage}: {err.reason}")
            continue
        log.info(
            "sampled architecture %d: %d workloads so far (%d kernel calls)",
            i + 1,
            len(out.workloads),
            sum(w.calls for w in out.workloads.values()),
        )
    if not out.architectures:
        raise UserError(
            f"none of the {samples} sampled architectures compiles: " + "; ".join(out.failures[:3]),
            file=file,
            key="arch",
            hint="check the space with 'autotune check', or narrow it to architectures that compile",
        )
    return out
