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


ERRORS = textwrap.dedent(
    """
    import os, signal, sys, time
    from autotune.errors import CandidateFailed, UserError
    from autotune.sandbox import TrialError, run_isolated

    def raise_value_error_in_the_trial(send):
        raise ValueError("a bug of ours")

    def user(send):
        raise UserError("no such data set", file="space.yaml", key="task.data", hint="try digits")

    def candidate(send):
        raise CandidateFailed("compile", "TVM cannot lower it")

    def exit_(send):
        os._exit(7)

    def kill(send):
        os.kill(os.getpid(), signal.SIGKILL)

    def sleep(send):
        time.sleep(30)

    fn = {"value": raise_value_error_in_the_trial, "user": user, "candidate": candidate, "exit": exit_,
          "kill": kill, "sleep": sleep}[sys.argv[1]]
    try:
        print("result", run_isolated(fn, timeout_s=1.0, poll_s=0.05))
    except TrialError as err:
        print("trial-error", err.kind, "|", err, "|", err.traceback.replace("\\n", "\\\\n"))
    except CandidateFailed as err:
        print("failed", err.stage, "|", err.reason)
    """
)


def _run_error(mode: str) -> str:
    out = subprocess.run([sys.executable, "-c", ERRORS, mode], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()[-1]


def test_a_bug_in_the_trial_is_an_internal_error_with_its_traceback():
    kind, message, tb = _run_error("value").split(" | ")
    assert kind == "trial-error internal"
    assert message == "internal error: ValueError: a bug of ours"
    assert "raise_value_error_in_the_trial" in tb and "Traceback" in tb


def test_a_user_error_in_the_trial_is_the_users():
    kind, message, _ = _run_error("user").split(" | ")
    assert kind == "trial-error user"
    assert message == "user error: space.yaml: task.data: no such data set; hint: try digits"


def test_a_failed_candidate_keeps_its_stage_and_reason():
    assert _run_error("candidate") == "failed compile | TVM cannot lower it"


@pytest.mark.parametrize("mode,how", [("exit", "exit code 7"), ("kill", "signal 9")])
def test_a_process_that_dies_is_a_crash(mode, how):
    line = _run_error(mode)
    assert line.startswith("failed crash | the trial's process died with") and how in line


def test_a_trial_past_its_timeout_hits_the_limit():
    assert _run_error("sleep").startswith("failed limit | timeout: still running after 1 s")
