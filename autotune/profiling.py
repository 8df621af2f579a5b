"""``autotune profile``: where a finished trial's time goes on the device, kernel by kernel.

The trial's model is re-created from its stored weights, built as a search builds it now (the
profile's tuning database, default schedules for the rest), and each fused kernel compiled alone
and timed alone on random inputs of its shapes (``autotune.compiler.kernels``,
``autotune.measure.kernels``). The whole model is compiled and timed the same way, so the runtime's
own work per inference (the Relax VM: allocations, the calls themselves) is the whole model's time
less the kernels'. The result is kept in ``trials/<id>/kernel_profile.json`` (the report's trial page
shows it).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from autotune.errors import CandidateFailed, UserError

__all__ = ["PROFILE_FILE", "KernelProfile", "KernelTime", "profile_trial", "read_profile"]

PROFILE_FILE = "kernel_profile.json"


@dataclass(frozen=True)
class KernelTime:
    """One kernel's share of an inference."""

    name: str
    calls: int
    us_per_call: float
    total_us: float
    share: float  # of the whole model's latency
    gflops: float  # achieved
    peak_fraction: float | None  # of the profile's calibrated fp32 peak (None on int8 dot-product kernels)
    tuned: bool
    flops: float = 0.0  # of one call, as TVM counts them (0: a copy; profiles kept before this field)


@dataclass(frozen=True)
class KernelProfile:
    """A trial's kernels on a device, heaviest first, and the runtime's own part."""

    run: str
    trial_id: str
    device: str
    latency_ms: float  # the whole model, timed now
    kernels_ms: float  # the kernels' sum (calls x time per call)
    overhead_ms: float  # latency_ms - kernels_ms: the runtime's own work
    recorded_latency_ms: float | None  # the trial's row
    peak_fp32_gflops: float | None
    kernels: tuple[KernelTime, ...]

    def table(self) -> str:
        """The profile as a Markdown table (the CLI prints it; export bundles include it)."""
        head = "| kernel | calls | µs per call | µs total | share | GFLOP/s | of peak | schedule |\n" + "|---" * 8 + "|"
        lines = [
            f"| {k.name} | {k.calls} | {k.us_per_call:.2f} | {k.total_us:.2f} | {k.share:.1%} | {k.gflops:.1f} | "
            f"{'' if k.peak_fraction is None else f'{k.peak_fraction:.0%}'} | {'tuned' if k.tuned else 'default'} |"
            for k in self.kernels
        ]
        tail = (
            f"\nWhole model {self.latency_ms * 1e3:.1f} µs: kernels {self.kernels_ms * 1e3:.1f} µs, the runtime's "
            f"own work {self.overhead_ms * 1e3:.1f} µs ({self.overhead_ms / self.latency_ms:.0%})."
        )
        return "\n".join([head, *lines]) + tail


def read_profile(trial_dir: str | Path) -> dict[str, Any] | None:
    """A trial's stored kernel profile (``asdict(KernelProfile)``), or None."""
    path = Path(trial_dir) / PROFILE_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def profile_trial(run_dir: str | Path, trial_id: str, device: str | Path | None = None) -> KernelProfile:
    """Profile trial ``trial_id`` of the run in ``run_dir`` on its device (or ``device``): on this
    machine, or on an RPC device with its own time evaluator.

    Raises:
        UserError: no such trial, a trial without a model (failed, pruned), a device that does not
            answer or fails while profiling.
    """
    from autotune.catalog import resolve_profile_path
    from autotune.compiler.dot_kernels import KERNEL_PREFIX
    from autotune.compiler.kernels import build_kernels
    from autotune.compress.pipeline import deployment, plan_compression
    from autotune.config.load import load_profile
    from autotune.deploy import compile_model, time_model, tuning_request
    from autotune.exporter import export_program
    from autotune.measure import RUNNERS
    from autotune.measure.kernels import time_kernels
    from autotune.quiet import QuietLock, quiet_dir
    from autotune.runs import read_run
    from autotune.task import load_trained_model, prepare_task
    from autotune.tuning import database_dir

    run, space, run_profile, rows = read_run(run_dir)
    row = next((r for r in rows if str(r.get("trial_id")) == str(trial_id)), None)
    if row is None:
        raise UserError(f"no trial {trial_id!r} in {run}", key="TRIAL_ID")
    trial_dir = run / "trials" / str(trial_id)
    if row.get("status") not in ("ok", "infeasible") or not (trial_dir / "weights.pt").exists():
        raise UserError(f"trial {trial_id} has no model to profile (status {row.get('status')})", key="TRIAL_ID",
                        hint="profile a trial whose status is ok")  # fmt: skip
    profile = load_profile(resolve_profile_path(device)) if device else run_profile
    RUNNERS.get(profile.runner.kind).check(profile, file="--device")  # the device answers, before any work
    task = prepare_task(space, profile, cache_dir=run / "cache")
    cfg, model = load_trained_model(row, task, run)
    how = deployment(plan_compression(cfg.compress))
    program, _, _ = export_program(model, task.data.input_shape)
    lock = QuietLock(quiet_dir(run))
    work = trial_dir / "profile" / profile.name
    db = database_dir(profile, run.parent)
    kernels = build_kernels(program, profile, out_dir=work / "kernels", precision=how.precision,
                            weight_granularity=how.weight_granularity, db_dir=db)  # fmt: skip
    try:
        seconds = time_kernels(kernels, profile, lock)
    except CandidateFailed as err:
        raise UserError(f"profiling on {profile.name} failed: {err}", key="--device") from err
    request = tuning_request(db, 0, lock, int(row.get("seed") or 0))
    artifact = compile_model(program, profile, input_shape=task.data.input_shape, out_dir=work / "model", lock=lock,
                             deployment=how, request=request)  # fmt: skip
    # raw latency, on the kernels' scale (paired timing would put it on the reference's)
    latency_ms = time_model(artifact, profile.unpaired(), task.data.x_test, lock).latency_ms
    peak = profile.peak.fp32_gflops if profile.peak else None
    times = []
    for k in kernels:
        s = seconds[k.name]
        gflops = k.flops / s / 1e9 if s > 0 else 0.0
        times.append(KernelTime(
            name=k.name, calls=k.calls, us_per_call=s * 1e6, total_us=s * k.calls * 1e6,
            share=s * k.calls * 1e3 / latency_ms, gflops=gflops,
            peak_fraction=gflops / peak if peak and KERNEL_PREFIX not in k.name else None,  # (int8 on dot kernels)
            tuned=k.tuned, flops=k.flops,
        ))  # fmt: skip
    times.sort(key=lambda t: -t.total_us)
    kernels_ms = sum(t.total_us for t in times) / 1e3
    result = KernelProfile(
        run=run.name, trial_id=str(trial_id), device=profile.name, latency_ms=latency_ms, kernels_ms=kernels_ms,
        overhead_ms=latency_ms - kernels_ms, recorded_latency_ms=row.get("latency_ms"), peak_fp32_gflops=peak,
        kernels=tuple(times),
    )  # fmt: skip
    (trial_dir / PROFILE_FILE).write_text(json.dumps(asdict(result), indent=1) + "\n")
    return result
