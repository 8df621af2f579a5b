"""The durable leaderboard store: one row per trial, torn lines, concurrent writers."""

from __future__ import annotations

import csv
import multiprocessing as mp
import threading

from conftest import BOARD_OBJECTIVES as OBJ
from conftest import board_row as _row

from autotune.config.search_space import METRICS
from autotune.leaderboard import Leaderboard, read_leaderboard


def test_same_trial_recorded_twice_keeps_one_row(tmp_path):
    board = Leaderboard(tmp_path, objectives=OBJ, metric_columns=METRICS)
    board.add(_row(1, 0.5, 1.0))
    board.add(_row(1, 0.9, 1.0))
    rows = read_leaderboard(tmp_path)
    assert len(rows) == 1 and rows[0]["accuracy"] == 0.9


def test_torn_last_line_is_ignored(tmp_path):
    board = Leaderboard(tmp_path, objectives=OBJ, metric_columns=METRICS)
    board.add(_row(1, 0.9, 1.0))
    with open(tmp_path / "trials.jsonl", "a") as f:
        f.write('{"trial_id": "t002", "sta')  # a crash mid-append
    assert [r["trial_id"] for r in board.rewrite()] == ["t001"]


def _writer(path, start, n):
    board = Leaderboard(path, objectives=OBJ, metric_columns=METRICS)
    for i in range(start, start + n):
        board.add(_row(i, 0.5 + i / 200, 1.0 + (i % 7)))


def test_concurrent_writers_keep_csv_valid(tmp_path):
    stop = threading.Event()
    problems: list[str] = []

    def reader():
        while not stop.is_set():
            p = tmp_path / "leaderboard.csv"
            if p.exists():
                with open(p, newline="") as f:
                    rows = list(csv.reader(f))
                if rows and any(len(r) != len(rows[0]) for r in rows):
                    problems.append("ragged CSV")

    t = threading.Thread(target=reader)
    t.start()
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(tmp_path, k * 10, 10)) for k in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    stop.set()
    t.join()
    assert not problems
    rows = read_leaderboard(tmp_path)
    assert sorted(r["trial_id"] for r in rows) == [f"t{i:03d}" for i in range(40)]
    assert all(r["pareto_rank"] >= 1 for r in rows)
