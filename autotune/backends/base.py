"""The backend contract and its registry: which runtime builds, checks and times a candidate.

A backend takes the deployed PyTorch model (``Job``), converts and builds it for the profile's device
and threads, checks it against PyTorch at the deployment's tolerance and times it with the profile's
policy, and returns a ``DeviceResult`` like TVM's. Adding one is a module with a class implementing
``Backend`` (``autotune.backends.runtime.RuntimeBackend`` does the checking and timing for any
runtime that runs a file from Python) and one instance registered in ``BACKENDS``;
``tests/unit/backends/test_backend_contract.py`` runs every entry.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from autotune.config.device_profile import DeviceProfile
from autotune.errors import CandidateFailed, UserError
from autotune.quiet import QuietLock
from autotune.records import Deployment
from autotune.registry import Registry

if TYPE_CHECKING:
    from torch import nn

    from autotune.leaderboard.row import DeviceResult

__all__ = [
    "BACKENDS",
    "Backend",
    "Job",
    "NOT_ON_DEVICE",
    "NotOnDevice",
    "Session",
    "act_bits",
    "check_backends",
    "installed",
    "time_calls",
]

#: The status of a backend whose runtime the profile's RPC device lacks.
NOT_ON_DEVICE = "not on device"


class NotOnDevice(CandidateFailed):
    """The profile's RPC device cannot run this backend (its server or its Python lacks the runtime)."""


#: A built model: runs one batch-1 input and returns output 0.
Session = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Job:
    """One candidate for a backend: the deployed model and where and how to build it.

    ``model`` is the eval-mode, BatchNorm-folded PyTorch model that was exported (the numerics
    reference); ``program`` its ``torch.export`` program (TVM's input; exported again when None).
    ``check`` false: time without the numerics check (an uncompressed twin, an untrained probe).
    """

    model: nn.Module
    profile: DeviceProfile
    inputs: np.ndarray
    out_dir: Path
    lock: QuietLock
    deployment: Deployment = Deployment()
    program: Any = None
    request: Any = None  # a TVM tuning request (``autotune.deploy.tuning_request``)
    check: bool = True
    on_stage: Callable[[str], None] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def stage(self, name: str) -> None:
        if self.on_stage:
            self.on_stage(name)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.inputs.shape[1:])


@runtime_checkable
class Backend(Protocol):
    """A runtime that builds, checks and times candidates: one instance per name, in ``BACKENDS``."""

    name: str
    #: The Python module it imports, and the command that installs it.
    module: str
    install: str

    def missing(self) -> str | None:
        """Why it cannot run on this machine (its package is not installed), or None."""
        ...

    def deploy(self, job: Job) -> DeviceResult:
        """Convert, build, check (``job.check``) and time the model on the profile's device.

        Raises:
            CandidateFailed: stage ``convert``, ``compile``, ``verify`` or ``measure``.
        """
        ...


#: Backends by the name a profile's ``backends`` list gives.
BACKENDS: Registry[Backend] = Registry("backend")


def installed(module: str) -> bool:
    """Whether ``module`` can be imported here (without importing it)."""
    return importlib.util.find_spec(module) is not None


def check_backends(profile: DeviceProfile, *, file: str | None = None) -> None:
    """Pre-flight: every backend the profile names is known and its package is installed here.

    Raises:
        UserError: key ``backends``: an unknown name, or a package to install (the command named).
    """
    for name in profile.backends:
        backend = BACKENDS.get(name, file=file, key="backends")
        why = backend.missing()
        if why:
            hint = f"install it: {backend.install}"
            raise UserError(f"backend {name!r}: {why}", file=file, key="backends", hint=hint)


def act_bits(model: nn.Module) -> int | None:
    from autotune.compress.fakequant import activation_bits

    return activation_bits(model)


def time_calls(run: Session, x: np.ndarray, cfg: Any, clock: Callable[[], float] = time.perf_counter) -> tuple[
    list[float], int]:  # fmt: skip
    """Per-call seconds of ``run(x)`` by the profile's ``measure`` policy: ``cfg.warmup`` calls, then
    ``number`` calls per repeat (grown until a repeat lasts ``min_repeat_ms``), in rounds until the
    median is precise (``autotune.measure.base.repeat_until_precise``). Returns them and ``number``.
    Device-side code (no torch, no lock): the RPC server times remote sessions with it too."""
    from autotune.measure.base import repeat_until_precise

    for _ in range(cfg.warmup):
        run(x)
    number = cfg.number
    while True:
        t0 = clock()
        for _ in range(number):
            run(x)
        if (clock() - t0) * 1e3 >= cfg.min_repeat_ms or number >= 1 << 20:
            break
        number *= 2

    def timer(n: int) -> list[float]:
        out = []
        for _ in range(n):
            t0 = clock()
            for _ in range(number):
                run(x)
            out.append((clock() - t0) / number)
        return out

    return repeat_until_precise(timer, cfg), number
