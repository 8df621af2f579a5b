"""Run directories: a run name may not leave the results directory; a finished run is read back."""

from __future__ import annotations

import pytest

from autotune.errors import UserError
from autotune.runs import leaderboard_csv, read_run, run_name_dir


@pytest.mark.parametrize("name", ["../escape", "a/b", "..", ".hidden", "", "x" * 200])
def test_run_name_cannot_escape(tmp_path, name):
    with pytest.raises(UserError, match="--name"):
        run_name_dir(tmp_path, name)


def test_a_plain_name_is_a_directory_of_the_results_dir(tmp_path):
    assert run_name_dir(tmp_path, "run-1.a_b") == (tmp_path / "run-1.a_b").resolve()


def test_not_a_run_directory(tmp_path):
    with pytest.raises(UserError, match="not a run directory"):
        read_run(tmp_path)
    with pytest.raises(UserError, match="no leaderboard.csv here"):
        leaderboard_csv(tmp_path)
