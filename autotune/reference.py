"""The reference network: re-timed every few trials, so a slowing machine shows up as ``drift`` on
the leaderboard instead of as slower candidates; and, with ``measure.paired``, timed round by round
beside every candidate (``autotune.measure.paired``), its latency calibrated once per environment."""

from __future__ import annotations

import dataclasses
import fcntl
import json
import logging
import math
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autotune.deploy import export_and_compile, time_model
from autotune.errors import CandidateFailed
from autotune.measure.paired import Pairing, use_pairing
from autotune.quiet import QuietLock
from autotune.records import CompiledArtifact

if TYPE_CHECKING:
    from torch import nn

    from autotune.task import Task

__all__ = ["REFERENCE_VERSION", "install_pairing", "measure_reference", "reference_model"]

#: Bumped when ``reference_model`` changes: a stored calibration of another version is not used.
REFERENCE_VERSION = 2
#: Unpaired timings of the reference (each a window median) that calibrate it, and the pause between them.
CALIBRATION_TIMINGS, CALIBRATION_GAP_S = 9, 0.5

log = logging.getLogger(__name__)


def reference_model(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The fixed network re-timed to detect drift, seeded so every timing of a run is the same
    computation: for (C, H, W) inputs a small MobileNet-like stack (a 3x3 stem, three depthwise 3x3 +
    pointwise 1x1 pairs, pooling, a classifier), else an MLP (512-512) over the flattened input.

    Convolutions because the candidates are convolutional: on a shared AVX2 VM an MLP's speed did
    not follow the slow-downs the convolutions saw, and a reference that times unlike the candidates
    detects the wrong drift (``autotune.measure.paired``; ``bench/repeatability.py``)."""
    import torch
    from torch import nn

    gen = torch.Generator().manual_seed(0)
    if len(input_shape) == 3:
        c = input_shape[0]

        def dw_pw(cin: int, cout: int, stride: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cin, 3, stride, 1, groups=cin), nn.ReLU(), nn.Conv2d(cin, cout, 1), nn.ReLU()]

        model = nn.Sequential(
            nn.Conv2d(c, 16, 3, 2, 1),
            nn.ReLU(),
            *dw_pw(16, 32, 1),
            *dw_pw(32, 64, 2),
            *dw_pw(64, 64, 1),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(64, num_classes),
        )
    else:
        n_in = int(math.prod(input_shape))
        model = nn.Sequential(
            nn.Flatten(), nn.Linear(n_in, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, num_classes)
        )
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return model.eval()


def reference_artifact(task: Task, cache_dir: str | Path, lock: QuietLock) -> CompiledArtifact:
    """The reference network compiled for the task's profile, once per run (``<cache>/reference``,
    under an flock).

    Raises:
        CandidateFailed: it cannot be compiled.
    """
    ref = Path(cache_dir) / "reference"
    ref.mkdir(parents=True, exist_ok=True)
    shape = task.data.input_shape
    with open(ref / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        saved = ref / "artifact.json"
        if saved.exists():
            fields = json.loads(saved.read_text())
            return CompiledArtifact(**{**fields, "input_shape": tuple(fields["input_shape"])})
        model = reference_model(shape, task.data.num_classes)
        artifact = export_and_compile(model, task.profile, input_shape=shape, out_dir=ref, lock=lock)
        saved.write_text(json.dumps(dataclasses.asdict(artifact)))
        return artifact


def measure_reference(task: Task, cache_dir: str | Path, lock: QuietLock) -> float | None:
    """Time the reference network on the profile's device (its ``reference_latency_ms``), like an
    unpaired candidate: the machine's own speed, which paired timings correct for. A failure gives
    None (drift detection is advisory)."""
    try:
        artifact = reference_artifact(task, cache_dir, lock)
        return time_model(artifact, task.profile.unpaired(), task.data.x_test, lock).latency_ms
    except CandidateFailed as err:
        log.warning("the reference model could not be timed: %s", err)
        return None


def install_pairing(task: Task, cache_dir: str | Path, lock: QuietLock, store_dir: str | Path) -> Pairing | None:
    """Pair this process's timings of the task's candidates with the reference network
    (``measure.paired``): compiled once per run, its latency calibrated once per environment and
    input shape (``calibrate``) and kept in ``<store_dir>/<profile>.reference.json``. A failure pairs
    nothing: the timings run unpaired, with a warning."""
    profile, shape = task.profile, task.data.input_shape
    try:
        artifact = reference_artifact(task, cache_dir, lock)
        baseline = _stored_baseline(task, artifact, lock, Path(store_dir))
    except CandidateFailed as err:
        log.warning("the reference model cannot be paired with candidates, timing them unpaired: %s", err)
        return None
    pairing = Pairing(artifact.path, task.data.x_test[:1], baseline)
    use_pairing(profile.name, shape, pairing)
    return pairing


def _stored_baseline(task: Task, artifact: CompiledArtifact, lock: QuietLock, store: Path) -> float:
    from autotune.predictor import environment_key

    profile = task.profile
    key = {**environment_key(profile), "reference_version": REFERENCE_VERSION,
           "input_shape": list(task.data.input_shape), "num_classes": task.data.num_classes}  # fmt: skip
    store.mkdir(parents=True, exist_ok=True)
    path = store / f"{profile.name}.reference.json"
    with open(store / f".{profile.name}.reference.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # one calibration per environment, even with trials in parallel
        entries = _read_entries(path)
        for e in entries:
            if e.get("key") == key:
                return float(e["baseline_ms"])
        timings = calibrate(artifact, task, lock)
        entry = {"key": key, "baseline_ms": statistics.median(timings), "timings_ms": timings, "at": time.time()}
        path.write_text(json.dumps({"entries": [*entries, entry]}, indent=1) + "\n")
        log.info("calibrated the reference network: %.4g ms (%s)", entry["baseline_ms"], path)
        return float(entry["baseline_ms"])


def _read_entries(path: Path) -> list[dict[str, Any]]:
    try:
        entries = json.loads(path.read_text()).get("entries", [])
    except FileNotFoundError:
        return []
    except (ValueError, AttributeError):
        log.warning("%s is not a calibration file (ignored; it will be rewritten)", path)
        return []
    return [e for e in entries if isinstance(e, dict)]


def calibrate(artifact: CompiledArtifact, task: Task, lock: QuietLock) -> list[float]:
    """The reference's latency at this machine's usual speed: ``CALIBRATION_TIMINGS`` unpaired
    timings by the runner, ``CALIBRATION_GAP_S`` apart so they see the machine's different moments;
    the median of them is the baseline."""
    profile = task.profile.unpaired()
    out = []
    for i in range(CALIBRATION_TIMINGS):
        if i:
            time.sleep(CALIBRATION_GAP_S)
        out.append(time_model(artifact, profile, task.data.x_test, lock).latency_ms)
    return out
