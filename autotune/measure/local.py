"""The ``local`` runner: time a compiled artifact on this machine with TVM's time evaluator."""

from __future__ import annotations

import logging
import os
import time

import numpy as np

from autotune.config.device_profile import DeviceProfile
from autotune.errors import CandidateFailed
from autotune.measure.base import RUNNERS, summarize_latency, time_in_rounds
from autotune.measure.energy import idle_power_w, modelled_mj, open_meter, per_inference_mj
from autotune.quiet import QuietLock
from autotune.records import CompiledArtifact, Measurement

__all__ = ["measure_local", "runtime_threads"]

log = logging.getLogger(__name__)


def runtime_threads() -> int:
    """Threads in TVM's runtime pool (fixed at import by ``TVM_NUM_THREADS``; see ``worker_env``)."""
    import tvm

    return int(tvm.runtime.num_threads())


@RUNNERS.register("local")
def measure_local(
    artifact: CompiledArtifact, profile: DeviceProfile, x: np.ndarray, *, lock: QuietLock | None = None
) -> Measurement:
    """Time ``main`` on one input while holding the quiet lock exclusively.

    Warm-up calls run first; then repeats of ``number`` calls (``number`` grows until a repeat lasts
    ``min_repeat_ms``), in rounds until the median is precise enough (``time_in_rounds``). Energy
    is read from a meter over the same window when one can be read, less the meter's idle power
    (measured quietly under the same lock, reused for ``energy.IDLE_TTL_S``); else modelled as
    ``(active_w - idle_w) × latency`` (``energy_source='model'``).

    Raises:
        CandidateFailed: the module cannot be loaded or run.
    """
    import tvm
    from tvm import relax

    cfg = profile.measure
    lock = lock or QuietLock(None)
    waited0 = lock.waited_s
    try:
        dev = tvm.cpu()
        vm = relax.VirtualMachine(tvm.runtime.load_module(artifact.path), dev)
        xt = tvm.runtime.tensor(np.ascontiguousarray(x, dtype=np.float32), dev)
        vm.set_input("main", xt)
    except Exception as err:  # TVMError: the artifact does not load on this device
        raise CandidateFailed("measure", f"cannot load the compiled model: {err}".splitlines()[0]) from err
    meter = open_meter(profile.meter)
    with lock.exclusive():
        t0 = time.perf_counter()
        threads = runtime_threads()
        try:
            for _ in range(cfg.warmup):
                vm.invoke_stateful("main")
            idle_w = idle_power_w(meter) if meter else profile.power.idle_w
            results, joules, window_s = time_in_rounds(vm, dev, cfg, meter.read_j if meter else None)
        except Exception as err:  # TVMError while running: a broken candidate
            raise CandidateFailed("measure", f"{type(err).__name__}: {err}".splitlines()[0]) from err
        finally:
            if meter is not None and hasattr(meter, "close"):
                meter.close()
        load = os.getloadavg()[0]
        measure_s = time.perf_counter() - t0
    if threads != cfg.threads:
        log.warning(
            "timed with %d TVM threads, the profile asks for %d (set before TVM is imported)", threads, cfg.threads
        )
    stats = summarize_latency(results)
    if meter is not None:
        energy_mj, source = per_inference_mj(joules, idle_w, window_s, results), meter.name
    else:
        energy_mj, source = modelled_mj(profile, stats["latency_ms"]), "model"
    return Measurement(
        **stats,
        latency_repeats=len(results),
        number=cfg.number,
        threads=threads,
        energy_mj=energy_mj,
        energy_source=source,
        idle_w=idle_w,
        load_avg=load,
        measure_s=measure_s,
        lock_wait_s=lock.waited_s - waited0,
    )
