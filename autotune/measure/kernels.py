"""Time a model's kernels one by one on this machine (``autotune profile``), with the profile's
timing policy: warm-up, calls per repeat to ``min_repeat_ms``, rounds until the median is precise."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from autotune.config.device_profile import DeviceProfile
from autotune.errors import UserError
from autotune.measure.base import repeat_until_precise
from autotune.quiet import QuietLock

__all__ = ["check_measures_here", "time_kernels"]


def _tensor(shape: tuple[int, ...], dtype: str, dev: Any, rng: np.random.Generator) -> Any:
    import tvm

    if dtype.startswith(("int", "uint")):
        data = rng.integers(0, 8, size=shape).astype(dtype)
    else:
        data = rng.random(shape, dtype=np.float32).astype(dtype)
    return tvm.runtime.tensor(data, dev)


def check_measures_here(profile: DeviceProfile, *, key: str = "runner.kind") -> None:
    """Kernels are timed on this machine: refuse a profile that measures elsewhere.

    Raises:
        UserError: (``key``) the profile's runner is not ``local``.
    """
    if profile.runner.kind != "local":
        raise UserError(
            f"kernel profiles are measured on this machine; profile {profile.name!r} measures with the "
            f"{profile.runner.kind!r} runner",
            key=key,
            hint="profile the trial with a profile that measures here (--device host)",
        )


def time_kernels(kernels: Sequence[Any], profile: DeviceProfile, lock: QuietLock | None = None) -> dict[str, float]:
    """Kernel name → median seconds per call, each kernel (``autotune.compiler.kernels.Kernel``) timed
    alone on random inputs of its argument shapes, holding the quiet lock exclusively.

    Raises:
        UserError: (``runner.kind``) the profile does not measure on this machine.
    """
    import tvm

    check_measures_here(profile)
    dev, cfg, rng = tvm.cpu(), profile.measure, np.random.default_rng(0)
    out: dict[str, float] = {}
    with (lock or QuietLock(None)).exclusive():
        for k in kernels:
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
