"""Time a model's kernels one by one on the profile's device (``autotune profile``), with the profile's
timing policy: warm-up, calls per repeat to ``min_repeat_ms``, rounds until the median is precise.
On this machine for a ``local`` profile; on the device for an ``rpc`` one, with the device's own time
evaluator (each kernel's library uploaded, its inputs made there)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from autotune.config.device_profile import DeviceProfile
from autotune.measure.base import repeat_until_precise
from autotune.quiet import QuietLock

__all__ = ["time_kernels"]


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


def _time_all(kernels: Sequence[Any], profile: DeviceProfile, remote: Any) -> dict[str, float]:
    """Time every kernel here (``remote`` None) or in an RPC session (libraries uploaded first)."""
    import os

    import tvm

    dev = remote.cpu() if remote is not None else tvm.cpu()
    cfg, rng = profile.measure, np.random.default_rng(0)
    out: dict[str, float] = {}
    for k in kernels:
        if remote is not None:
            remote.upload(k.path, target=os.path.basename(k.path))
            mod = remote.load_module(os.path.basename(k.path))
        else:
            mod = tvm.runtime.load_module(k.path)
        args = [_tensor(shape, dtype, dev, rng) for shape, dtype in k.args]
        for _ in range(cfg.warmup):
            mod["main"](*args)

        def timer(n: int, mod: Any = mod, args: list[Any] = args) -> list[float]:
            evaluator = mod.time_evaluator("main", dev, number=cfg.number, repeat=n,
                                           min_repeat_ms=int(cfg.min_repeat_ms))  # fmt: skip
            return list(evaluator(*args).results)

        out[k.name] = float(np.median(repeat_until_precise(timer, cfg)))
    return out
