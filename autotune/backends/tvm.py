"""The ``tvm`` backend: the mission's compiler (``autotune.deploy``): Relax import, default or tuned
schedules, the profile's runner for the numerics check and the timing."""

from __future__ import annotations

from typing import TYPE_CHECKING

from autotune.backends.base import BACKENDS, Job

if TYPE_CHECKING:
    from autotune.leaderboard.row import DeviceResult

__all__ = ["TVM", "TvmBackend"]


class TvmBackend:
    name = "tvm"
    module = "tvm"
    install = "pip install apache-tvm==0.27.0.post1 apache-tvm-ffi==0.1.14.post1"

    def missing(self) -> str | None:
        return None  # a dependency of autotune itself

    def deploy(self, job: Job) -> DeviceResult:
        from autotune.deploy import deploy, time_fp32

        if not job.check:
            return time_fp32(job.model, job.profile, job.inputs, out_dir=job.out_dir, lock=job.lock,
                             request=job.request, on_stage=job.on_stage)  # fmt: skip
        program = job.program
        if program is None:
            from autotune.exporter import export_program

            with job.lock.shared():
                program, _, _ = export_program(job.model, job.input_shape)
        return deploy(program, job.model, job.profile, job.inputs, out_dir=job.out_dir, lock=job.lock,
                      deployment=job.deployment, request=job.request, on_stage=job.on_stage)  # fmt: skip


#: The registered instance (``BACKENDS.get("tvm")``).
TVM = BACKENDS.register("tvm")(TvmBackend())
