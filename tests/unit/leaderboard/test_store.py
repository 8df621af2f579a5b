"""The durable leaderboard store: one row per trial, torn lines, concurrent writers."""

from __future__ import annotations

import csv
import multiprocessing as mp
import threading

import pytest
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


def test_torn_last_line_is_skipped_with_a_warning_and_the_next_row_survives(tmp_path, caplog):
    board = Leaderboard(tmp_path, objectives=OBJ, metric_columns=METRICS)
    board.add(_row(1, 0.9, 1.0))
    with open(tmp_path / "trials.jsonl", "a") as f:
        f.write('{"trial_id": "t002", "sta')  # power lost mid-append: no newline
    with caplog.at_level("WARNING", logger="autotune.leaderboard.store"):
        assert [r["trial_id"] for r in board.rewrite()] == ["t001"]
    assert "skipped 1 torn line(s)" in caplog.text and "trials.jsonl" in caplog.text
    board.add(_row(2, 0.8, 2.0))  # the resume re-runs t002: its row must not be glued to the torn line
    assert [r["trial_id"] for r in board.rows()] == ["t001", "t002"]
    assert [r["trial_id"] for r in read_leaderboard(tmp_path)] == ["t001", "t002"]


def test_a_full_disk_keeps_the_last_good_csv(tmp_path, monkeypatch):
    import errno
    import os

    board = Leaderboard(tmp_path, objectives=OBJ, metric_columns=METRICS)
    board.add(_row(1, 0.9, 1.0))
    good = (tmp_path / "leaderboard.csv").read_bytes()
    real_fsync = os.fsync

    def full(fd):  # the disk fills while the new CSV is written
        if os.readlink(f"/proc/self/fd/{fd}").endswith("leaderboard.csv.tmp"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as err:
        board.add(_row(2, 0.8, 2.0))
    assert err.value.errno == errno.ENOSPC
    assert (tmp_path / "leaderboard.csv").read_bytes() == good and not (tmp_path / "leaderboard.csv.tmp").exists()


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
