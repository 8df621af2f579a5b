"""Overnight-run robustness with real processes: injected failures, SIGKILL + resume, a cluster."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import optuna
import psutil
import pytest
from conftest import search_args

import autotune

pytestmark = [pytest.mark.slow, pytest.mark.tvm, pytest.mark.ray]


def test_injected_failures_become_rows_and_the_run_finishes(tmp_path, repo, monkeypatch):
    monkeypatch.chdir(repo / "tests/fixtures")  # the plug-in module is imported from here
    modes = ["ok", "raise", "nan", "hog", "unsupported"]
    rows = autotune.search(
        "faulty.yaml",
        "host_fast.yaml",
        name="faults",
        results_dir=tmp_path,
        trials=len(modes),
        concurrency=2,
        early_stopping=False,
        trial_memory_bytes=1 * 2**30,
        enqueue=[{"arch.mode": m} for m in modes],
    )
    by_mode = {r["arch.mode"]: r for r in rows}
    assert set(by_mode) == set(modes)
    assert by_mode["ok"]["status"] == "ok" and by_mode["ok"]["latency_ms"] > 0
    assert by_mode["raise"]["status"] == "failed"
    assert "RuntimeError: injected failure in forward" in by_mode["raise"]["error"]
    # an exception that is neither CandidateFailed nor UserError is a bug to debug: its traceback is kept
    assert by_mode["raise"]["error"].startswith("internal error: RuntimeError")
    traceback_txt = tmp_path / "faults" / "trials" / by_mode["raise"]["trial_id"] / "traceback.txt"
    assert "in forward" in traceback_txt.read_text() and "injected failure in forward" in traceback_txt.read_text()
    assert not (tmp_path / "faults" / "trials" / by_mode["ok"]["trial_id"] / "traceback.txt").exists()
    assert by_mode["nan"]["error"].startswith("train: loss is nan")
    assert by_mode["hog"]["error"].startswith("train: out of memory") and "cap 1024 MiB" in by_mode["hog"]["error"]
    assert by_mode["unsupported"]["error"].startswith("import: ") and "erfinv" in by_mode["unsupported"]["error"]
    study = optuna.load_study(study_name="autotune", storage=f"sqlite:///{tmp_path / 'faults' / 'study.db'}")
    states = {t.params["arch.mode"]: t.state.name for t in study.trials}
    assert states == {"ok": "COMPLETE", "raise": "FAIL", "nan": "FAIL", "hog": "FAIL", "unsupported": "FAIL"}


def _rows(run):
    p = run / "trials.jsonl"
    return [json.loads(line) for line in p.read_text().splitlines()] if p.exists() else []


def test_sigkill_of_everything_then_resume(tmp_path, repo):
    res = tmp_path / "results"
    cmd = [
        sys.executable,
        "-m",
        "autotune.cli",
        *search_args(res, "kill", "--concurrency", "2", "--no-early-stopping", trials=4),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    run = res / "kill"
    deadline = time.monotonic() + 300
    while len(_rows(run)) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.5)
    assert proc.poll() is None, "the search ended before it could be killed"
    family = [proc.pid] + [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
    for pid in family:  # the driver and every Ray process it started
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(30)
    before = {r["trial_id"]: r for r in _rows(run)}
    assert 2 <= len(before) < 4

    r = subprocess.run(
        [sys.executable, "-m", "autotune.cli", "search", "--resume", str(run)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    after = autotune.read_leaderboard(run)
    ids = [row["trial_id"] for row in after]
    assert len(ids) == len(set(ids)) == 4
    stored = {row["trial_id"]: row for row in _rows(run)}
    for tid, row in before.items():  # finished trials unchanged
        assert stored[tid]["latency_ms"] == row["latency_ms"] and stored[tid]["status"] == row["status"]
    study = optuna.load_study(study_name="autotune", storage=f"sqlite:///{run / 'study.db'}")
    assert "RUNNING" not in {t.state.name for t in study.trials}


def test_two_node_cluster_runs_trials_on_both_nodes(tmp_path, repo):
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        rows = autotune.search(
            repo / "tests/fixtures/tiny_cnn.yaml",
            repo / "tests/fixtures/host_fast.yaml",
            name="cluster",
            results_dir=tmp_path,
            trials=4,
            address=cluster.address,
            early_stopping=False,
        )
    finally:
        import ray

        ray.shutdown()
        cluster.shutdown()
    assert len(rows) == 4 and all(r["status"] == "ok" for r in rows), [r.get("error") for r in rows]
    assert len({r["node"] for r in rows}) == 2
