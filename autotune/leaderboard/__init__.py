"""The leaderboard: one row per trial, in ``<run>/leaderboard.csv``.

- ``schema``: the columns in order (the public schema), statuses, column-name helpers;
- ``row``: ``LeaderboardRow``, one trial's row, built from the trial's records;
- ``store``: ``Leaderboard``, the durable per-run store (``trials.jsonl`` + the CSV rebuilt atomically);
- ``csv``: writing, reading and merging leaderboard CSVs;
- ``ranking``: noise-aware Pareto ranks; ``drift``: the reference model's drift flags.
"""

from __future__ import annotations

from autotune.leaderboard.csv import merge_leaderboards, read_leaderboard, write_csv
from autotune.leaderboard.drift import DRIFT_THRESHOLD, flag_drift
from autotune.leaderboard.ranking import device_objectives, pareto_ranks, rank_rows
from autotune.leaderboard.row import LeaderboardRow
from autotune.leaderboard.schema import (
    COLUMNS,
    DETAIL_COLUMNS,
    SCHEMA_VERSION,
    STATUSES,
    SUMMARY_COLUMNS,
    TEXT_COLUMNS,
    summary_columns,
)
from autotune.leaderboard.store import Leaderboard

__all__ = [
    "COLUMNS",
    "DETAIL_COLUMNS",
    "DRIFT_THRESHOLD",
    "SCHEMA_VERSION",
    "STATUSES",
    "SUMMARY_COLUMNS",
    "TEXT_COLUMNS",
    "Leaderboard",
    "LeaderboardRow",
    "device_objectives",
    "flag_drift",
    "merge_leaderboards",
    "pareto_ranks",
    "rank_rows",
    "read_leaderboard",
    "summary_columns",
    "write_csv",
]
