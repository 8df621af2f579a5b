"""The drift reference: a fixed network re-timed every few trials, so a slowing machine shows up as
``drift`` on the leaderboard instead of as slower candidates."""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING

from autotune.deploy import export_and_compile, time_model
from autotune.errors import CandidateFailed
from autotune.quiet import QuietLock
from autotune.records import CompiledArtifact

if TYPE_CHECKING:
    from torch import nn

    from autotune.task import Task

__all__ = ["measure_reference", "reference_model"]

log = logging.getLogger(__name__)


def reference_model(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The fixed network re-timed every few trials to detect drift: an MLP (512-512) over the
    flattened input, seeded weights, so every measurement of a run times the same computation."""
    import torch
    from torch import nn

    gen = torch.Generator().manual_seed(0)
    n_in = int(math.prod(input_shape))
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(n_in, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, num_classes)
    )
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return model.eval()


def measure_reference(task: Task, cache_dir: str | Path, lock: QuietLock) -> float | None:
    """Time the reference network on the profile's device (its ``reference_latency_ms``). It is
    compiled once per run (``<cache>/reference``, under an flock) and timed like a candidate. A failure
    gives None (drift detection is advisory)."""
    import fcntl
    import json

    ref = Path(cache_dir) / "reference"
    ref.mkdir(parents=True, exist_ok=True)
    shape = task.data.input_shape
    try:
        with open(ref / ".lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            saved = ref / "artifact.json"
            if saved.exists():
                fields = json.loads(saved.read_text())
                artifact = CompiledArtifact(**{**fields, "input_shape": tuple(fields["input_shape"])})
            else:
                model = reference_model(shape, task.data.num_classes)
                artifact = export_and_compile(model, task.profile, input_shape=shape, out_dir=ref, lock=lock)
                saved.write_text(json.dumps(dataclasses.asdict(artifact)))
        return time_model(artifact, task.profile, task.data.x_test, lock).latency_ms
    except CandidateFailed as err:
        log.warning("the reference model could not be timed: %s", err)
        return None
