"""Time a model's kernels one by one on the profile's device (``autotune profile``), with the profile's
timing policy: warm-up, calls per repeat to ``min_repeat_ms``, rounds until the median is precise.
A paired profile's kernel-table timings alternate with its reference network as its candidates' do
(``autotune.measure.paired``), so table and candidates share one calibrated scale. On this machine
for a ``local`` profile; on the device for an ``rpc`` one, with the device's own time evaluator
(each kernel's library uploaded, its inputs made there)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from autotune.config.device_profile import DeviceProfile
from autotune.measure.base import repeat_until_precise
from autotune.measure.paired import Pairing, pairing_for, time_against
from autotune.quiet import QuietLock
from autotune.records import KERNELS_LIBRARY

__all__ = ["time_in_library", "time_kernels"]


def _tensor(shape: tuple[int, ...], dtype: str, dev: Any, rng: np.random.Generator) -> Any:
    import tvm

    if dtype.startswith(("int", "uint")):
        data = rng.integers(0, 8, size=shape).astype(dtype)
    else:
        data = rng.random(shape, dtype=np.float32).astype(dtype)
    return tvm.runtime.tensor(data, dev)


def time_kernels(kernels: Sequence[Any], profile: DeviceProfile, lock: QuietLock | None = None) -> dict[str, float]:
    """Kernel name → median seconds per call, each kernel (``autotune.compiler.kernels.Kernel``) timed
    alone on random inputs of its argument shapes, holding the quiet lock exclusively (on an RPC
    device only when it is emulated, i.e. runs on this machine).

    Raises:
        CandidateFailed: stage ``measure``: the RPC device cannot be reached or a kernel fails there.
    """
    import contextlib

    lock = lock or QuietLock(None)
    if profile.runner.kind == "rpc":
        from autotune.measure.rpc import on_device

        quiet = lock.exclusive() if profile.runner.emulated else contextlib.nullcontext()
        with quiet:
            return on_device(profile.runner, lambda remote: _time_all(kernels, profile, remote))
    with lock.exclusive():
        return _time_all(kernels, profile, None)


def time_in_library(
    path: str, workloads: Sequence[Any], profile: DeviceProfile, lock: QuietLock | None = None
) -> dict[str, float]:
    """Workload name → median seconds per call, each of ``workloads``
    (``autotune.compiler.workloads.Workload``) timed alone from the compiled model's own library at
    ``path`` (no compile), holding the quiet lock exclusively; with ``measure.paired`` and a pairing
    set for the profile (``paired.use_pairing``), in rounds beside the reference network, each time
    its median ratio × the reference's calibrated latency. On an RPC device the kernels' library
    beside it (``KERNELS_LIBRARY``) is uploaded and timed there (the lock held only when emulated).

    Raises:
        CandidateFailed: stage ``measure``: the RPC device cannot be reached or a kernel fails there.
    """
    import contextlib

    import tvm

    lock = lock or QuietLock(None)
    rng = np.random.default_rng(0)
    if profile.runner.kind == "rpc":
        from autotune.measure.rpc import on_device

        kernels = os.path.join(os.path.dirname(path), KERNELS_LIBRARY)

        def remote_times(remote: Any) -> dict[str, float]:
            remote.upload(kernels, target=KERNELS_LIBRARY)
            lib, dev = remote.load_module(KERNELS_LIBRARY), remote.cpu()
            return {w.name: _time_one(lib, w.name, w.args, dev, profile, rng) for w in workloads}

        with lock.exclusive() if profile.runner.emulated else contextlib.nullcontext():
            return on_device(profile.runner, remote_times)
    dev = tvm.cpu()
    lib = tvm.runtime.load_module(path).imports[0]  # the kernels, beside the Relax VM's bytecode
    pairing = pairing_for(profile.name) if profile.measure.paired else None
    with lock.exclusive():
        if pairing is not None:
            return {w.name: _time_paired(lib, w.name, w.args, dev, profile, rng, pairing) for w in workloads}
        return {w.name: _time_one(lib, w.name, w.args, dev, profile, rng) for w in workloads}


def _time_paired(
    mod: Any, name: str, shapes: Sequence[Any], dev: Any, profile: DeviceProfile, rng: Any, pairing: Pairing
) -> float:
    """Seconds of one call of ``mod[name]`` on random tensors of ``shapes``: its median ratio to the
    pairing's reference network over interleaved rounds × the reference's calibrated latency."""
    args = [_tensor(shape, dtype, dev, rng) for shape, dtype in shapes]
    for _ in range(profile.measure.warmup):
        mod[name](*args)
    evaluators: dict[int, Any] = {}

    def repeat(number: int) -> float:
        if number not in evaluators:
            evaluators[number] = mod.time_evaluator(name, dev, number=number, repeat=1, min_repeat_ms=0)
        return float(evaluators[number](*args).results[0])

    return time_against(repeat, pairing, dev, profile.measure).ratio * pairing.baseline_ms / 1e3


def _time_one(mod: Any, name: str, shapes: Sequence[Any], dev: Any, profile: DeviceProfile, rng: Any) -> float:
    """Median seconds of one call of ``mod[name]`` on random tensors of ``shapes``, by the profile's policy."""
    cfg = profile.measure
    args = [_tensor(shape, dtype, dev, rng) for shape, dtype in shapes]
    for _ in range(cfg.warmup):
        mod[name](*args)

    def timer(n: int) -> list[float]:
        evaluator = mod.time_evaluator(name, dev, number=cfg.number, repeat=n, min_repeat_ms=int(cfg.min_repeat_ms))
        return list(evaluator(*args).results)

    return float(np.median(repeat_until_precise(timer, cfg)))


def _time_all(kernels: Sequence[Any], profile: DeviceProfile, remote: Any) -> dict[str, float]:
    """Time every kernel here (``remote`` None) or in an RPC session (libraries uploaded first)."""
    import os

    import tvm

    dev = remote.cpu() if remote is not None else tvm.cpu()
    rng = np.random.default_rng(0)
    out: dict[str, float] = {}
    for k in kernels:
        if remote is not None:
            remote.upload(k.path, target=os.path.basename(k.path))
            mod = remote.load_module(os.path.basename(k.path))
        else:
            mod = tvm.runtime.load_module(k.path)
        out[k.name] = _time_one(mod, "main", k.args, dev, profile, rng)
    return out
