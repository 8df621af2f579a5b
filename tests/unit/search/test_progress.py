"""Progress: the counts, the best trial and the drift warning the display shows."""

from __future__ import annotations

from types import SimpleNamespace

from autotune.search import Progress
from autotune.search import progress as progress_module


def test_record_counts_statuses_and_finds_the_best_on_the_front():
    p = Progress(total=4, time_budget_s=None, objectives={"accuracy": "max", "latency_ms": "min"})
    p.running = {"a": "train", "b": "compile", "c": "x", "d": "y"}
    rows = []
    for tid, status, acc, rank in [("a", "ok", 0.8, 1), ("b", "ok", 0.9, 1), ("c", "failed", None, None)]:
        row = {"trial_id": tid, "status": status, "val_accuracy": acc, "pareto_rank": rank}
        rows.append(row)
        p.record(row, rows, drift_threshold=0.1)
    p.record({"trial_id": "d", "status": "pruned"}, rows, drift_threshold=0.1)
    assert (p.done, p.failed, p.pruned, p.infeasible) == (4, 1, 1, 0)
    assert p.best["trial_id"] == "b"  # the front's best on the first objective (val_accuracy, max)
    assert p.running == {}
    assert p.drift_warning is None and p.remaining_s is None


def test_drift_warning_names_the_last_drifted_retiming(monkeypatch):
    monkeypatch.setattr(progress_module, "time", SimpleNamespace(time=lambda: 1600.0))  # 600 s after the start
    p = Progress(total=2, time_budget_s=3600.0, started=1000.0)
    rows = [
        {"trial_id": "a", "status": "ok", "drift": 0.05, "reference_latency_ms": 1.0, "finished_at": "1"},
        {"trial_id": "b", "status": "ok", "drift": 0.25, "reference_latency_ms": 1.25, "finished_at": "2"},
    ]
    p.record(rows[1], rows, drift_threshold=0.1)
    assert p.drift_warning.startswith("latency drift +25%") and "trial b" in p.drift_warning
    assert 0 < p.remaining_s <= 3600.0 and p.remaining_s == 3000.0
