"""Leaderboard CSV: fixed columns first, empty cells, formula guard, text columns read back as text."""

from __future__ import annotations

import csv

import pytest
from conftest import BOARD_OBJECTIVES as OBJ
from conftest import board_row as _row

from autotune.config.search_space import METRICS
from autotune.leaderboard import COLUMNS, Leaderboard, read_leaderboard


def test_columns_fixed_then_params(tmp_path):
    board = Leaderboard(tmp_path, objectives=OBJ, metric_columns=METRICS)
    board.add(_row(1, 0.9, 1.0))
    with open(tmp_path / "leaderboard.csv", newline="") as f:
        header = next(csv.reader(f))
    assert tuple(header[: len(COLUMNS)]) == COLUMNS
    assert header[len(COLUMNS) :] == ["arch.width"]


@pytest.mark.parametrize("value", [float("nan"), None])
def test_missing_values_are_empty_cells(tmp_path, value):
    board = Leaderboard(tmp_path, objectives=OBJ, metric_columns=METRICS)
    board.add({**_row(1, 0.9, 1.0), "energy_mj": value})
    assert read_leaderboard(tmp_path)[0]["energy_mj"] is None


def test_formula_cells_are_neutralised(tmp_path):
    board = Leaderboard(tmp_path, objectives=OBJ, metric_columns=METRICS)
    board.add({**_row(1, 0.9, 1.0), "error": '=HYPERLINK("http://x")', "arch.act": "@SUM(A1)", "arch.width": -3})
    with open(tmp_path / "leaderboard.csv", newline="") as f:
        row = next(csv.DictReader(f))
    assert row["error"].startswith("'=") and row["arch.act"] == "'@SUM(A1)"
    assert row["arch.width"] == "-3"  # numbers stay numbers


def test_ids_that_look_like_numbers_read_back_as_text(tmp_path):
    board = Leaderboard(tmp_path, objectives={"accuracy": "max"}, metric_columns=METRICS)
    board.add({"trial_id": "6191e151", "status": "ok", "run": "1", "node": "00123456789a", "val_accuracy": 0.9})
    board.add({"trial_id": "12345678", "status": "failed", "run": "1", "node": "0e5", "error": "x"})
    rows = {r["trial_id"]: r for r in read_leaderboard(tmp_path)}
    assert set(rows) == {"6191e151", "12345678"}
    assert {r["run"] for r in rows.values()} == {"1"} and rows["12345678"]["node"] == "0e5"
    assert rows["6191e151"]["val_accuracy"] == 0.9 and rows["12345678"]["accuracy"] is None
