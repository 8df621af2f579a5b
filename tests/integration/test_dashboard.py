"""The Optuna dashboard (the ``dashboard`` extra) on a run's study.db: bound to 127.0.0.1, it serves the
study and its trials over its HTTP API, and stops."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import REPO

pytest.importorskip("optuna_dashboard")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, deadline: float) -> dict:
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return json.loads(r.read())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def test_the_dashboard_serves_a_runs_study_on_localhost(tmp_path):
    from autotune.config.load import load_profile
    from autotune.search import study as studies
    from autotune.validate import load_space

    space = load_space(REPO / "tests/fixtures/tiny_cnn.yaml")
    rows = [
        {
            "trial_id": f"t{i}",
            "status": s,
            "val_accuracy": 0.8 + i / 100,
            "latency_ms": 1.0 + i,
            "arch.stages": 1 + i % 2,
        }
        for i, s in enumerate(["ok", "ok", "failed"])
    ]
    studies.rebuild_study(space, load_profile(REPO / "tests/fixtures/host_fast.yaml"), tmp_path, rows)
    port = _free_port()
    exe = [str(Path(sys.executable).with_name("optuna-dashboard")), f"sqlite:///{tmp_path / 'study.db'}"]
    proc = subprocess.Popen([*exe, "--host", "127.0.0.1", "--port", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        (summary,) = _get(f"http://127.0.0.1:{port}/api/studies", deadline)["study_summaries"]
        assert summary["study_name"] == "autotune" and summary["directions"] == ["maximize", "minimize"]
        study = _get(f"http://127.0.0.1:{port}/api/studies/{summary['study_id']}", deadline)
        assert [t["state"] for t in study["trials"]] == ["Complete", "Complete", "Fail"]
        assert [t["values"] for t in study["trials"][:2]] == [[0.8, 1.0], [0.81, 2.0]]
        import psutil

        listening = {c.laddr for c in psutil.Process(proc.pid).net_connections("inet") if c.status == "LISTEN"}
        assert listening == {("127.0.0.1", port)}  # bound to localhost only
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert proc.returncode is not None
