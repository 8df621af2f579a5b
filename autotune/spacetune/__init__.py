"""``autotune tune``: tune a search space once, not each candidate.

A search's candidates share most of their kernels: after about ten architectures of a MobileNet space,
each new one brings 1-10 new fused workloads out of 12-43. So the space is sampled (``sample``: the
architectures built and fused as a candidate's build fuses them, MetaSchedule's tasks counted across
the sample), its workloads ranked by calls in the sample × estimated time (``plan``), and tuned in
chunks into the device profile's tuning database within a time budget (``run``), on this machine or
one chunk per node of a Ray cluster (``nodes``). Each node measures on its own hardware and returns
its records (``autotune.tuning.chunk``); the driver merges them, so a workload is never tuned twice
and the cluster needs no shared filesystem. A search with that profile then compiles every candidate
from the database (``tuned_share`` in its row), with default schedules for what the database lacks.
"""

from __future__ import annotations

from autotune.spacetune.run import SpaceTuneReport, tune_space
from autotune.spacetune.sample import SpaceSample, SpaceWorkload, sample_space

__all__ = ["SpaceSample", "SpaceTuneReport", "SpaceWorkload", "sample_space", "tune_space"]
