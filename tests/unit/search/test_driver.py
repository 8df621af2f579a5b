"""The driver's resume decisions that need no Ray: which finished rows Tune's snapshot lacks."""

from __future__ import annotations

import json

from autotune.search.driver import _unknown_to_tune


def test_rows_that_finished_after_tunes_last_snapshot_are_found(tmp_path):
    assert _unknown_to_tune(tmp_path, [{"trial_id": "aaaa1111"}]) == 0  # no snapshot: nothing to restore
    (tmp_path / "experiment_state-2026-11-28_09-14-47.json").write_text(json.dumps({"trials": ["aaaa1111"]}))
    (tmp_path / "experiment_state-2026-11-28_09-15-39.json").write_text(
        json.dumps({"trials": ["aaaa1111", "bbbb2222"]})
    )  # the newest snapshot
    rows = [{"trial_id": "aaaa1111"}, {"trial_id": "bbbb2222"}, {"trial_id": "cccc3333"}, {"status": "ok"}]
    assert _unknown_to_tune(tmp_path, rows) == 1  # cccc3333 started after it and finished before the kill
    assert _unknown_to_tune(tmp_path, rows[:2]) == 0
