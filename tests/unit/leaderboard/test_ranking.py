"""Leaderboard ranking: Pareto ranks (noise-aware), per-device ranks, emulated timings left out."""

from __future__ import annotations

import csv

from conftest import BOARD_OBJECTIVES as OBJ
from conftest import board_row as _row

from autotune.config.search_space import METRICS
from autotune.leaderboard import COLUMNS, Leaderboard, pareto_ranks, read_leaderboard


def test_pareto_ranks_minimisation():
    pts = [(1, 5), (2, 2), (5, 1), (3, 3), (4, 4), (2, 2)]
    assert pareto_ranks(pts) == [1, 1, 1, 2, 3, 1]


def test_ranks_respect_objective_directions(tmp_path):
    board = Leaderboard(tmp_path, objectives=OBJ, metric_columns=METRICS)
    board.add(_row(1, 0.9, 1.0))
    board.add(_row(2, 0.95, 2.0))
    board.add(_row(3, 0.85, 1.5))  # dominated by t1
    board.add(_row(4, None, None, status="failed"))
    rows = {r["trial_id"]: r for r in read_leaderboard(tmp_path)}
    assert rows["t001"]["pareto_rank"] == 1 and rows["t002"]["pareto_rank"] == 1
    assert rows["t003"]["pareto_rank"] == 2
    assert rows["t004"]["pareto_rank"] is None and rows["t004"]["status"] == "failed"
    # every front member is undominated among ok rows
    ok = [r for r in rows.values() if r["status"] == "ok"]
    for r in ok:
        dominated = any(
            o["val_accuracy"] >= r["val_accuracy"]
            and o["latency_ms"] <= r["latency_ms"]
            and (o["val_accuracy"], o["latency_ms"]) != (r["val_accuracy"], r["latency_ms"])
            for o in ok
        )
        assert dominated == (r["pareto_rank"] > 1)


def test_each_device_of_a_search_gets_its_own_rank_and_columns(tmp_path):
    board = Leaderboard(tmp_path, objectives=OBJ, metric_columns=METRICS, devices=["pi"])
    # t1 is faster on the first device, t2 on the Pi (same accuracy): each device has its own front
    board.add({**_row(1, 0.9, 1.0), "latency_ms@pi": 9.0, "timing@pi": "device", "energy_source@pi": "1e3"})
    board.add({**_row(2, 0.9, 2.0), "latency_ms@pi": 4.0, "timing@pi": "device", "energy_source@pi": "1e3"})
    rows = {r["trial_id"]: r for r in read_leaderboard(tmp_path)}
    assert (rows["t001"]["pareto_rank"], rows["t002"]["pareto_rank"]) == (1, 2)
    assert (rows["t001"]["pareto_rank@pi"], rows["t002"]["pareto_rank@pi"]) == (2, 1)
    assert rows["t001"]["energy_source@pi"] == "1e3"  # a device's text column stays text
    with open(tmp_path / "leaderboard.csv", newline="") as f:
        header = next(csv.reader(f))
    assert header[len(COLUMNS) :] == ["energy_source@pi", "latency_ms@pi", "pareto_rank@pi", "timing@pi", "arch.width"]


def test_an_objective_may_name_a_device(tmp_path):
    board = Leaderboard(tmp_path, objectives={"latency_ms@pi": "min"}, metric_columns=METRICS, devices=["pi"])
    board.add({**_row(1, 0.9, 1.0), "latency_ms@pi": 9.0})
    board.add({**_row(2, 0.9, 2.0), "latency_ms@pi": 4.0})
    rows = {r["trial_id"]: r for r in read_leaderboard(tmp_path)}
    assert (rows["t001"]["pareto_rank"], rows["t002"]["pareto_rank"]) == (2, 1)


def test_emulated_timings_are_not_ranked(tmp_path):
    board = Leaderboard(tmp_path, objectives=OBJ, metric_columns=METRICS)
    board.add({**_row(1, 0.9, 1.0), "timing": "emulated"})
    board.add({**_row(2, 0.8, 0.5), "timing": "emulated"})  # faster but less accurate: ranked on accuracy only
    ranks = {r["trial_id"]: r["pareto_rank"] for r in read_leaderboard(tmp_path)}
    assert ranks == {"t001": 1, "t002": 2}
    only_latency = Leaderboard(tmp_path / "b", objectives={"latency_ms": "min"}, metric_columns=METRICS)
    only_latency.add({**_row(1, 0.9, 1.0), "timing": "emulated"})
    assert read_leaderboard(tmp_path / "b")[0]["pareto_rank"] is None


def test_overlapping_latency_intervals_tie_and_separated_ones_rank():
    from autotune.leaderboard import rank_rows

    def row(i, acc, lat, lo, hi):
        return {"trial_id": str(i), "status": "ok", "val_accuracy": acc, "latency_ms": lat,
                "latency_ci_low_ms": lo, "latency_ci_high_ms": hi}  # fmt: skip

    rows = [
        row(0, 0.95, 1.00, 0.98, 1.03),
        row(1, 0.95, 1.01, 0.97, 1.05),  # slower by its median, but its interval overlaps row 0's: a tie
        row(2, 0.95, 1.50, 1.45, 1.55),  # clearly slower at the same accuracy: dominated
        row(3, 0.90, 1.02, 0.99, 1.04),  # less accurate, latency indistinguishable: dominated
    ]
    rank_rows(rows, {"accuracy": "max", "latency_ms": "min"}, {"accuracy": "val_accuracy"})
    assert [r["pareto_rank"] for r in rows] == [1, 1, 2, 2]


def test_interval_dominance_needs_separation():
    assert pareto_ranks([[(1.0, 2.0)], [(1.5, 2.5)], [(3.0, 4.0)]]) == [1, 1, 2]
