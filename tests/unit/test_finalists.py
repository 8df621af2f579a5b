"""A finalist is re-tuned and timed only in a process sized like the trials' workers."""

from __future__ import annotations

import pytest

from autotune.config.load import load_profile
from autotune.finalists import retune_trial
from autotune.validate import load_space
from tests.conftest import REPO


@pytest.mark.parametrize("env", [{}, {"TVM_NUM_THREADS": "2", "TVM_BIND_THREADS": "0"}])
def test_retune_refuses_a_process_without_the_workers_environment(monkeypatch, tmp_path, env):
    monkeypatch.delenv("TVM_NUM_THREADS", raising=False)
    monkeypatch.delenv("TVM_BIND_THREADS", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    space = load_space(REPO / "tests" / "fixtures" / "tiny_cnn.yaml")
    profile = load_profile(REPO / "tests" / "fixtures" / "host_tuned.yaml")  # measure.threads: 1
    with pytest.raises(RuntimeError, match="run it in a worker"):
        retune_trial({"trial_id": "x"}, space, profile, run_dir=tmp_path, trials=4, tuning_db=tmp_path / "db")
