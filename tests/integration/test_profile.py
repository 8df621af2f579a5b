"""``autotune profile``: a finished trial's kernels timed one by one on this machine, their sum and the
runtime's own part consistent with the whole model's time; the report and the bundle show it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import autotune

pytestmark = [pytest.mark.slow, pytest.mark.tvm, pytest.mark.ray]

#: One latency-only candidate at 3x64x64: its kernels, not the runtime (about 5 µs), take most of the time.
SPACE = """
name: profiled
task: {data: synthetic, model: mobilenet, input_shape: [3, 64, 64], num_classes: 10}
arch: {stages: 3, width_mult: 1.0, kernel: 3, expand: 4, se: false, act: relu}
objectives: {macs: max, latency_ms: min}
"""


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "autotune.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_profile_a_finished_trial(tmp_path, write_yaml, repo):
    space = write_yaml(SPACE)
    (row,) = autotune.search(space, repo / "tests/fixtures/host_fast.yaml", name="p", results_dir=tmp_path, trials=1)
    run, tid = tmp_path / "p", row["trial_id"]
    r = _cli("profile", str(run), tid, "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    prof = json.loads(r.stdout)
    kernels = prof["kernels"]
    assert len(kernels) >= 8 and {"fused_matmul", "mean"} & {k["name"].split("_add")[0] for k in kernels}
    assert prof["kernels_ms"] == pytest.approx(sum(k["total_us"] for k in kernels) / 1e3)
    # how close the kernels come to the trial's latency is a measurement (README), not asserted here
    assert prof["overhead_ms"] == pytest.approx(prof["latency_ms"] - prof["kernels_ms"])
    assert prof["recorded_latency_ms"] == pytest.approx(row["latency_ms"])
    assert sum(k["share"] for k in kernels) == pytest.approx(prof["kernels_ms"] / prof["latency_ms"])
    assert all(k["flops"] >= 0 and k["calls"] >= 1 for k in kernels)  # a copy (column phases) computes nothing
    assert all(k["flops"] > 0 for k in kernels if "conv2d" in k["name"] or "matmul" in k["name"])
    assert kernels == sorted(kernels, key=lambda k: -k["total_us"])  # heaviest first
    table = _cli("profile", str(run), tid)
    assert table.returncode == 0 and kernels[0]["name"] in table.stdout and "runtime's own work" in table.stdout
    autotune.report(run)  # the trial's page shows the kernels
    page = (run / "report.html").read_text()
    assert "Kernels on host_fast" in page and kernels[0]["name"] in page
    bundle = autotune.export(run, tid, tmp_path / "bundle")
    assert "Where the time goes" in (bundle / "README.md").read_text()
    bad = _cli("profile", str(run), "nope")
    assert bad.returncode == 1 and "no trial 'nope'" in bad.stderr
