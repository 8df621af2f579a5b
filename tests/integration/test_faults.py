"""Overnight-run faults with real processes: a full disk mid-run, an unreadable study rebuilt from the
leaderboard, a worker node lost mid-trial. Each run finishes (or resumes) with no row lost or
duplicated and no study trial left RUNNING."""

from __future__ import annotations

import errno
import json
import threading

import optuna
import pytest

import autotune
from autotune.errors import UserError
from autotune.leaderboard import Leaderboard

pytestmark = [pytest.mark.slow, pytest.mark.tvm, pytest.mark.ray]

#: A latency-only space: a trial is build, compile, check, time (a few seconds).
TINY = """
name: tiny_latency
task: {data: synthetic, model: mobilenet, input_shape: [1, 8, 8], num_classes: 10}
arch:
  stages: {type: int, low: 1, high: 2}
  width_mult: {type: categorical, choices: [0.5, 0.75, 1.0]}
  kernel: {type: categorical, choices: [3, 5]}
  expand: 2
  se: false
  act: relu
objectives: {macs: max, latency_ms: min}
"""


def _study_states(run):
    study = optuna.load_study(study_name="autotune", storage=f"sqlite:///{run / 'study.db'}")
    return [t.state.name for t in study.trials]


def _ids(run):
    return [r["trial_id"] for r in autotune.read_leaderboard(run)]


def test_a_full_disk_stops_the_run_cleanly_and_resume_finishes_it(tmp_path, write_yaml, repo, monkeypatch):
    space, profile = write_yaml(TINY), repo / "tests/fixtures/host_fast.yaml"
    real_add, calls = Leaderboard.add, []

    def add(self, row):  # the disk fills up while the second row is written
        calls.append(row["trial_id"])
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.store))
        return real_add(self, row)

    monkeypatch.setattr(Leaderboard, "add", add)
    kw = {"name": "full", "results_dir": tmp_path, "trials": 3, "concurrency": 1}
    with pytest.raises(UserError, match="the disk is full .*trials.jsonl: No space left on device") as err:
        autotune.search(space, profile, **kw)
    run = tmp_path / "full"
    assert f"autotune search --resume {run}" in err.value.hint
    assert _ids(run) == calls[:1]  # the last good CSV, with the one stored row
    monkeypatch.setattr(Leaderboard, "add", real_add)
    rows = autotune.search(name="full", results_dir=tmp_path, resume=True)
    ids = [r["trial_id"] for r in rows]
    assert len(ids) == len(set(ids)) == 3 and all(r["status"] == "ok" for r in rows)
    assert "RUNNING" not in _study_states(run)


def test_an_unreadable_study_is_refused_then_rebuilt_and_the_run_goes_on(tmp_path, write_yaml, repo):
    space, profile = write_yaml(TINY), repo / "tests/fixtures/host_fast.yaml"
    first = autotune.search(space, profile, name="s", results_dir=tmp_path, trials=2, concurrency=1)
    run = tmp_path / "s"
    (run / "study.db").write_bytes(b"\0garbage" * 512)  # a torn or overwritten database file
    with pytest.raises(UserError, match="study cannot be opened") as err:
        autotune.search(name="s", results_dir=tmp_path, resume=True)
    assert err.value.file == str(run / "study.db") and "--rebuild-study" in err.value.hint
    settings = json.loads((run / "run.json").read_text())
    settings["settings"]["trials"] = 3  # one more trial, sampled from the rebuilt study
    (run / "run.json").write_text(json.dumps(settings))
    rows = autotune.search(name="s", results_dir=tmp_path, resume=True, rebuild_study=True)
    ids = [r["trial_id"] for r in rows]
    assert len(ids) == len(set(ids)) == 3 and {r["trial_id"] for r in first} < set(ids)
    states = _study_states(run)
    assert states.count("COMPLETE") == 3 and "RUNNING" not in states  # the study's finished trials = the rows
    assert list(run.glob("study.db.broken-*"))


def test_a_lost_worker_node_fails_its_trial_which_runs_again(tmp_path, write_yaml, repo):
    import ray
    from ray.cluster_utils import Cluster

    space, profile = write_yaml(TINY), repo / "tests/fixtures/host_fast.yaml"
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    killed = threading.Event()
    try:
        worker = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()

        def on_progress(p):  # both nodes busy: take the worker node away
            if len(p.running) == 2 and not killed.is_set():
                killed.set()
                threading.Thread(target=cluster.remove_node, args=(worker,), daemon=True).start()

        rows = autotune.search(space, profile, name="lost", results_dir=tmp_path, trials=4, concurrency=2,
                               address=cluster.address, on_progress=on_progress)  # fmt: skip
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert killed.is_set()
    ids = [r["trial_id"] for r in rows]
    assert len(ids) == len(set(ids)) == 4, [(r["status"], r.get("error")) for r in rows]
    lost = [r for r in rows if str(r.get("error") or "").startswith("node lost: ")]
    assert len(lost) == 1 and lost[0]["status"] == "failed", [(r["status"], r.get("error")) for r in rows]
    params = {k: v for k, v in lost[0].items() if k.startswith("arch.") and v is not None}
    again = [r for r in rows if r is not lost[0] and all(r.get(k) == v for k, v in params.items())]
    assert again and again[0]["status"] == "ok"  # the same parameters, run again on the node left
    assert "RUNNING" not in _study_states(tmp_path / "lost")
