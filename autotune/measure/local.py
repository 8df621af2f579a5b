"""The ``local`` runner: time a compiled artifact on this machine with TVM's time evaluator."""

from __future__ import annotations

import logging
import os
import platform
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from autotune.config.device_profile import DeviceProfile
from autotune.errors import CandidateFailed, UserError, describe
from autotune.measure.base import (
    RUNNERS,
    Runner,
    host_fingerprint,
    metaschedule_evaluator,
    summarize_latency,
    this_machine,
    time_in_rounds,
)
from autotune.measure.energy import IdlePower, modelled_mj, open_meter, per_inference_mj
from autotune.measure.paired import pairing_for, time_against, vm_repeat
from autotune.quiet import QuietLock
from autotune.records import CompiledArtifact, Measurement

if TYPE_CHECKING:
    from tvm.s_tir import meta_schedule as ms

__all__ = ["LOCAL", "LocalRunner", "pool_warning", "runtime_threads"]

log = logging.getLogger(__name__)


def runtime_threads() -> int:
    """Threads in TVM's runtime pool (fixed at import by ``TVM_NUM_THREADS``; see ``worker_env``)."""
    import tvm

    return int(tvm.runtime.num_threads())


def pool_warning(wanted: int, threads: int, environ: Mapping[str, str] = os.environ) -> str | None:
    """What is wrong with TVM's runtime pool for timing with ``wanted`` threads (None: nothing).

    ``threads`` is the pool's size (``runtime_threads``). Without ``TVM_NUM_THREADS`` TVM sizes its
    pool itself, and on a 2-vCPU VM (Zen 3) that pool reported 1 thread but handed every parallel
    loop to a pool thread: a small digits model timed 0.18 ms against 0.007 ms with the variable set
    to 1."""
    if threads != wanted:
        return f"timed with {threads} TVM threads, the profile asks for {wanted} (set before TVM is imported)"
    if "TVM_NUM_THREADS" not in environ:
        return f"timed in TVM's unsized thread pool: set TVM_NUM_THREADS={wanted} before TVM is imported"
    return None


class LocalRunner(Runner):
    """Runs and times candidates on this machine. Owns the idle-power readings of this machine's meters."""

    name = "local"

    def __init__(self) -> None:
        self.idle = IdlePower()

    def check(self, profile: DeviceProfile, *, file: str | None = None) -> None:
        """The target's triple (when the profile names one) runs on this machine.

        Raises:
            UserError: key ``runner.kind``: a cross-compiled target.
        """
        triple = str(profile.target.get("mtriple", ""))
        here = platform.machine().replace("arm64", "aarch64")
        if triple and not triple.startswith(here):
            raise UserError(
                f"the target ({triple}) cannot run on this {here} machine with the local runner",
                file=file,
                key="runner.kind",
                hint="measure on the device over TVM RPC (runner: {kind: rpc, tracker: HOST:PORT, key: KEY}), "
                "or run the search on the device itself",
            )

    def executor(self, artifact: CompiledArtifact, profile: DeviceProfile) -> Callable[[np.ndarray], np.ndarray] | None:
        """None: the numerics check runs the artifact in this process."""
        return None

    def metaschedule_runner(self, profile: DeviceProfile) -> ms.runner.Runner:
        """MetaSchedule's local runner."""
        from tvm.s_tir import meta_schedule as ms

        return ms.runner.LocalRunner(timeout_sec=30, evaluator_config=metaschedule_evaluator())

    def tunes_in_place(self, profile: DeviceProfile) -> bool:
        """True: tuning measures on this machine."""
        return True

    def fingerprint(self, profile: DeviceProfile) -> dict[str, Any]:
        """This machine's CPU model and governor, and the versions."""
        return host_fingerprint(*this_machine())

    def measure(
        self, artifact: CompiledArtifact, profile: DeviceProfile, x: np.ndarray, *, lock: QuietLock | None = None
    ) -> Measurement:
        """Time ``main`` on one input while holding the quiet lock exclusively.

        Warm-up calls run first; then repeats of ``number`` calls (``number`` grows until a repeat lasts
        ``min_repeat_ms``), in rounds until the median is precise enough (``time_in_rounds``). With
        ``measure.paired`` and a pairing set for the profile and input shape (``paired.use_pairing``)
        the repeats alternate with the reference network's instead (``paired.time_paired``), and each
        round's latency is its candidate / reference ratio × the reference's calibrated latency. Energy
        is read from a meter over the same window when one can be read, less the meter's idle power
        (measured quietly under the same lock, kept in ``self.idle`` for ``energy.IDLE_TTL_S``); else
        modelled as ``(active_w - idle_w) × latency`` (``energy_source='model'``).

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
                idle_w = self.idle.watts(meter) if meter else profile.power.idle_w
                pairing = pairing_for(profile.name, tuple(x.shape[1:])) if cfg.paired else None
                paired = time_against(vm_repeat(vm, dev), pairing, dev, cfg) if pairing is not None else None
                if paired is None or meter is not None:  # a meter reads energy over unpaired repeats
                    results, joules, window_s = time_in_rounds(vm, dev, cfg, meter.read_j if meter else None)
                    call_s = results
                if paired is not None and pairing is not None:
                    results = [r * pairing.baseline_ms / 1e3 for r in paired.ratios]
            except Exception as err:  # TVMError while running: a broken candidate
                raise CandidateFailed("measure", describe(err)) from err
            finally:
                if meter is not None and hasattr(meter, "close"):
                    meter.close()
            load = os.getloadavg()[0]
            measure_s = time.perf_counter() - t0
        if cfg.paired and paired is None:
            log.warning("measure.paired is set but no reference is paired with %s here: timed unpaired", profile.name)
        if problem := pool_warning(cfg.threads, threads):
            log.warning("%s", problem)
        stats = summarize_latency(results)
        if meter is not None:
            energy_mj, source = per_inference_mj(joules, idle_w, window_s, call_s), meter.name
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
            timing="local",
            reference_ratio=paired.ratio if paired else None,
            latency_window_ms=paired.candidate_ms if paired else None,
        )


#: The registered instance (``RUNNERS.get("local")``).
LOCAL = RUNNERS.register("local")(LocalRunner())
