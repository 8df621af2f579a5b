"""The trial sandbox's memory cap: the trial's own memory (USS) counts, pages shared with the parent do not.

Each case forks from a fresh interpreter (``subprocess``): forking pytest itself is not safe once
other tests have started TVM's thread pool.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from autotune.errors import CandidateFailed
    from autotune.sandbox import run_isolated

    MiB = 2**20
    parent_mib, child_mib, cap_mib = (int(a) for a in sys.argv[1:4])
    held = np.ones(max(1, parent_mib * MiB // 8))  # touched: resident in the parent, shared after fork

    def work(send):
        grown = np.ones(child_mib * MiB // 8) if child_mib else None  # the trial's own pages
        time.sleep(0.6)  # a few polls
        return float(held[0]) + (0.0 if grown is None else float(grown[-1]))

    try:
        print("result", run_isolated(work, memory_bytes=cap_mib * MiB, poll_s=0.05))
    except CandidateFailed as err:
        print("failed", err.stage, err.reason)
    """
)


def _run(parent_mib: int, child_mib: int, cap_mib: int) -> str:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(parent_mib), str(child_mib), str(cap_mib)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize(
    "parent_mib,child_mib,cap_mib,expect",
    [
        (0, 0, 512, "result 1.0"),  # small: the cheap resident-size check suffices
        (400, 0, 256, "result 1.0"),  # resident size over the cap, but shared with the parent: not the trial's
        (0, 400, 256, "failed limit out of memory"),  # its own pages over the cap
    ],
)
def test_memory_cap_counts_the_trials_own_pages(parent_mib, child_mib, cap_mib, expect):
    assert _run(parent_mib, child_mib, cap_mib).startswith(expect)
