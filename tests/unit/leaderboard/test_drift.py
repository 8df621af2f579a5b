"""Drift flags: rows timed next to a drifted re-timing of the reference model."""

from __future__ import annotations

import pytest

from autotune.leaderboard import flag_drift


def _row(i: int, ref: float | None = None, latency: float | None = 1.0) -> dict:
    r = {"trial_id": f"t{i}", "finished_at": f"2026-01-01T00:00:{i:02d}+00:00", "latency_ms": latency}
    if ref is not None:
        r["reference_latency_ms"] = ref
    return r


def test_drift_flags_rows_next_to_a_drifted_reference():
    rows = [
        _row(0, ref=1.0),
        _row(1),
        _row(2),
        _row(3, ref=1.02),  # within 10 %
        _row(4),
        _row(5, ref=1.3),  # drifted
        _row(6),
        _row(7, ref=1.01),  # back
        _row(8),
        _row(9, latency=None),  # failed: nothing timed
    ]
    drifted = flag_drift(rows, 0.10)
    assert [r["trial_id"] for r in drifted] == ["t5"]
    assert rows[5]["drift"] == pytest.approx(0.3) and rows[3]["drift"] == pytest.approx(0.02)
    flagged = [r["trial_id"] for r in rows if r.get("drift_flag")]
    assert flagged == ["t4", "t5", "t6"]  # measured between the last good reference and the next one
    assert rows[8]["drift_flag"] is False and "drift_flag" not in rows[9]


def test_no_reference_no_drift_columns():
    rows = [_row(0), _row(1)]
    assert flag_drift(rows) == []
    assert all("drift_flag" not in r for r in rows)
