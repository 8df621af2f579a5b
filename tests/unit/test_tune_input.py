"""``autotune tune`` refuses bad input before it measures anything: a budget that is not a duration,
a database made for another target, a space where no sampled architecture compiles."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import autotune
from autotune.errors import UserError

pytestmark = [pytest.mark.tvm]


def test_a_budget_that_is_not_a_duration(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "autotune.cli", "tune", "--space", "latency_mobilenet32", "--device", "host",
         "--budget", "soon", "--results-dir", str(tmp_path)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode == 2 and "argument --budget: not a duration: 'soon'" in r.stderr
    with pytest.raises(UserError, match="not a duration") as err:
        autotune.tune("latency_mobilenet32", "host", "soon", results_dir=tmp_path)
    assert err.value.key == "--budget"
    with pytest.raises(UserError, match="must be positive") as err:
        autotune.tune("latency_mobilenet32", "host", 0, results_dir=tmp_path)
    assert not (tmp_path / "tuning_db").exists()


def test_a_database_made_for_another_target(tmp_path, repo):
    ledger = tmp_path / "tuning_db" / "host_fast" / "ledger.json"
    ledger.parent.mkdir(parents=True)
    ledger.write_text(json.dumps({"target": "llvm -mcpu=cortex-a72", "workloads": {}}))
    with pytest.raises(UserError, match="made for target llvm -mcpu=cortex-a72") as err:
        autotune.tune("latency_mobilenet32", repo / "tests/fixtures/host_fast.yaml", "1m", results_dir=tmp_path)
    assert err.value.file == str(ledger) and err.value.key == "target"
    assert [p.name for p in ledger.parent.iterdir() if not p.name.startswith(".")] == ["ledger.json"]  # nothing tuned


def test_a_space_where_no_architecture_compiles(tmp_path, repo, write_yaml, monkeypatch):
    monkeypatch.chdir(repo / "tests/fixtures")  # the plug-in module is imported from here
    space = write_yaml(
        "name: unsupported\ntask: {data: faulty_task:load, model: faulty_task:build}\n"
        "arch: {mode: unsupported}\nobjectives: {latency_ms: min}\n"
    )
    with pytest.raises(UserError, match="none of the 2 sampled architectures compiles: sample 0: import") as err:
        autotune.tune(space, "host_fast.yaml", "1m", results_dir=tmp_path, samples=2)
    assert err.value.file == str(space) and err.value.key == "arch"
    assert not (tmp_path / "tuning_db").exists()
