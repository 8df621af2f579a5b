"""``autotune tune``: a space's workloads tuned into the profile's database, a repeat measures
nothing, a search then compiles from the database, and a two-node Ray cluster shares the work."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest

import autotune
from autotune.spacetune import sample_space
from autotune.tuning import TuningDatabase

pytestmark = [pytest.mark.slow, pytest.mark.tvm]

#: Two architectures (kernel 3 and 5) that share most of their eight fused workloads.
TINY = """
name: tiny_latency
task: {data: synthetic, model: mobilenet, input_shape: [1, 8, 8], num_classes: 10}
arch:
  stages: 1
  width_mult: 0.5
  kernel: {type: categorical, choices: [3, 5]}
  expand: 2
  se: false
  act: relu
objectives: {macs: max, latency_ms: min}
"""


@pytest.fixture(autouse=True)
def _tvm_threads(monkeypatch):
    monkeypatch.setenv("TVM_NUM_THREADS", "1")
    monkeypatch.setenv("TVM_BIND_THREADS", "0")


def _records(db: TuningDatabase) -> int:
    with db.reading():
        return db.record_count()


def test_tune_fills_the_database_once_and_a_search_compiles_from_it(tmp_path, write_yaml, repo, monkeypatch):
    space, profile = write_yaml(TINY), repo / "tests/fixtures/host_fast.yaml"
    kw = {"results_dir": tmp_path, "samples": 2, "max_trials": 8}
    # where the builder's processes put the libraries they build (short: Ray's sockets go there too)
    with tempfile.TemporaryDirectory(prefix="at-", dir="/tmp") as scratch, monkeypatch.context() as m:
        m.setenv("TMPDIR", scratch)
        m.setattr(tempfile, "tempdir", None)
        first = autotune.tune(space, profile, "10m", **kw)
        assert not list(Path(scratch).rglob("tvm_tmp_mod*")), "a built library was left behind"
    db = TuningDatabase(first.database)
    assert first.architectures == 2 and first.workloads >= 6
    assert first.tuned == first.workloads and first.covered == 1.0 and first.failed == 0
    assert first.trials >= 8 * first.workloads and _records(db) == first.trials
    ledger = json.loads(db.ledger_file.read_text())
    assert len(ledger["workloads"]) == first.workloads and all(w["trials"] == 8 for w in ledger["workloads"].values())
    assert all(w["default"] for w in ledger["workloads"].values())  # every default schedule measured, kept
    (entry,) = ledger["spaces"].values()
    assert entry["space"] == "tiny_latency" and entry["spent_s"] == pytest.approx(first.spent_s)  # resumed from

    again = autotune.tune(space, profile, "10m", **kw)  # every workload at max_trials: nothing to measure
    assert again.trials == 0 and _records(db) == first.trials and again.tuned == first.workloads

    rows = autotune.search(space, profile, name="from-db", results_dir=tmp_path, trials=2, early_stopping=False)
    assert [r["status"] for r in rows] == ["ok", "ok"], [r.get("error") for r in rows]
    for r in rows:  # a sampled architecture: every kernel from the database, nothing tuned now
        assert r["tuned_share"] == 1.0 and r["tuned_trials"] == 0 and r["max_abs_diff"] is not None


def test_a_spent_budget_measures_nothing(tmp_path, write_yaml, repo):
    space, profile = write_yaml(TINY), repo / "tests/fixtures/host_fast.yaml"
    first = autotune.tune(space, profile, "1s", results_dir=tmp_path, samples=2)
    assert 1 <= first.trials <= 8 * 4  # the first chunk runs; then the budget is spent
    again = autotune.tune(space, profile, "1s", results_dir=tmp_path, samples=2)
    assert again.trials == 0 and again.spent_s == pytest.approx(first.spent_s)


def test_two_node_cluster_tunes_on_both_nodes_into_one_database(tmp_path, write_yaml, repo):
    import ray
    from ray.cluster_utils import Cluster
    from tvm.s_tir import meta_schedule as ms

    space, profile = write_yaml(TINY), repo / "tests/fixtures/host_fast.yaml"
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        rep = autotune.tune(space, profile, "10m", results_dir=tmp_path, samples=2, max_trials=8,
                            address=cluster.address)  # fmt: skip
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert len(rep.nodes) == 2 and rep.tuned == rep.workloads and rep.failed == 0
    db = TuningDatabase(rep.database)
    database = ms.database.JSONDatabase(work_dir=str(db.directory), allow_missing=False)
    assert len(database.get_all_tuning_records()) == rep.trials == _records(db)
    sample = sample_space(autotune.load_space(space), autotune.load_profile(profile), samples=2, seed=0)
    for key, (_, mod) in sample.mods.items():  # every workload readable, with a valid record, credited once
        assert database.has_workload(mod) and database.get_top_k(database.commit_workload(mod), 1), key
    ledger = json.loads(db.ledger_file.read_text())["workloads"]
    assert set(ledger) == set(sample.mods) and {w["trials"] for w in ledger.values()} == {8}
