"""The tuning database without TVM: the profile section, the directory, the ledger, the locks."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

import autotune
from autotune.config.device_profile import Tuning
from autotune.errors import UserError
from autotune.tuning import TuningDatabase, database_dir

PROFILE = """
name: p
target: {host: true}
power: {idle_w: 1, active_w: 2, source: datasheet}
"""

TARGET = '{"kind":"llvm","keys":["cpu"],"num-cores":2}'


def test_tuning_is_off_by_default(write_yaml):
    tuning = autotune.load_profile(write_yaml(PROFILE)).tuning
    assert tuning == Tuning()
    assert (tuning.trials_per_candidate, tuning.finalists, tuning.trials_per_finalist) == (0, 0, 0)
    assert tuning.database is None


def test_tuning_section_loads(write_yaml):
    text = PROFILE + "tuning: {trials_per_candidate: 32, finalists: 3, trials_per_finalist: 256, database: db}\n"
    tuning = autotune.load_profile(write_yaml(text)).tuning
    assert (tuning.trials_per_candidate, tuning.finalists, tuning.trials_per_finalist) == (32, 3, 256)
    assert tuning.database == "db"


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ("{trials_per_candidate: -1}", "tuning.trials_per_candidate"),
        ("{trials_per_candidate: many}", "tuning.trials_per_candidate"),
        ("{trails_per_candidate: 8}", "tuning.trails_per_candidate"),
        ("{finalists: 3}", "tuning"),
        ("{trials_per_finalist: 64}", "tuning"),
        ("{database: ''}", "tuning.database"),
    ],
)
def test_bad_tuning_section_names_the_key(write_yaml, section, key):
    with pytest.raises(UserError, match=key):
        autotune.load_profile(write_yaml(PROFILE + f"tuning: {section}\n"))


def test_tuning_measures_where_the_runner_runs(write_yaml):
    text = PROFILE.replace("{host: true}", "{kind: llvm, mtriple: aarch64-linux-gnu}") + "compiler: gcc\n"
    with pytest.raises(UserError, match="a cross-compiled target needs the rpc runner"):
        autotune.load_profile(write_yaml(text + "tuning: {trials_per_candidate: 8}\n"))
    assert autotune.load_profile(write_yaml(text)).tuning.trials_per_candidate == 0
    rpc = text + "runner: {kind: rpc, tracker: '127.0.0.1:9190', key: pi}\ntuning: {trials_per_candidate: 8}\n"
    assert autotune.load_profile(write_yaml(rpc)).tuning.trials_per_candidate == 8  # tuned on the device
    gpu = PROFILE.replace("{host: true}", "{kind: cuda, arch: sm_80}") + "tuning: {trials_per_candidate: 8}\n"
    with pytest.raises(UserError, match="tuning needs an llvm"):
        autotune.load_profile(write_yaml(gpu))


def test_database_dir(write_yaml, tmp_path):
    profile = autotune.load_profile(write_yaml(PROFILE))
    assert database_dir(profile, tmp_path / "results") == tmp_path / "results" / "tuning_db" / "p"
    mine = profile.model_copy(update={"tuning": Tuning(database="/data/tdb")})
    assert database_dir(mine, tmp_path) == Path("/data/tdb")


def test_ledger_keeps_the_largest_guided_plan_per_model(tmp_path):
    db = TuningDatabase(tmp_path / "db")
    with db.writing():
        db.credit(TARGET, {"a": ("conv_a", 40)}, plan=("m", 96, {"a": 40, "b": 56}))
        db.credit(TARGET, {}, plan=("m", 64, {"a": 8, "b": 56}))  # smaller: the larger plan stays
    with db.reading():
        assert db.stored_plan("m") == (96, {"a": 40, "b": 56}) and db.stored_plan("other") is None
        assert db.tuned_trials(TARGET) == {"a": 40}


def test_ledger_keeps_the_largest_budget_per_workload(tmp_path):
    db = TuningDatabase(tmp_path / "db")
    with db.reading():
        assert db.tuned_trials(TARGET) == {}
    with db.writing():
        db.credit(TARGET, {"a": ("conv_a", 16), "b": ("conv_b", 8)})
        db.credit(TARGET, {"a": ("conv_a", 8)})
    with db.reading():
        assert db.tuned_trials(TARGET) == {"a": 16, "b": 8}
    assert [p.name for p in db.directory.iterdir() if p.suffix == ".tmp"] == []


def test_ledger_refuses_another_target(tmp_path):
    db = TuningDatabase(tmp_path)
    with db.writing():
        db.credit(TARGET, {"a": ("conv_a", 8)})
    with pytest.raises(UserError, match="made for target") as err:
        db.tuned_trials(TARGET.replace("2", "8"))
    assert "ledger.json" in str(err.value) and "hint" in str(err.value)


def test_record_count_counts_lines(tmp_path):
    db = TuningDatabase(tmp_path)
    assert db.record_count() == 0
    db.record_file.write_text('[0, ["r1"]]\n[0, ["r2"]]\n')
    assert db.record_count() == 2


def _can_lock(path: Path, op: int) -> bool:
    """Whether another open file description could take the lock now (flock: even in this process)."""
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, op | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def test_readers_share_writers_exclude(tmp_path):
    db = TuningDatabase(tmp_path)
    data = tmp_path / ".data.lock"
    with db.reading():
        assert _can_lock(data, fcntl.LOCK_SH) and not _can_lock(data, fcntl.LOCK_EX)
    with db.writing():
        assert not _can_lock(data, fcntl.LOCK_SH)
    assert _can_lock(data, fcntl.LOCK_EX)  # released


def test_one_tuner_at_a_time_without_blocking_readers(tmp_path):
    db = TuningDatabase(tmp_path)
    with db.tuning():
        assert not _can_lock(tmp_path / ".tune.lock", fcntl.LOCK_EX)
        with db.reading():  # a tuner reads and writes the data under its tuning lock
            pass
        assert _can_lock(tmp_path / ".data.lock", fcntl.LOCK_SH)
    assert _can_lock(tmp_path / ".tune.lock", fcntl.LOCK_EX)


def test_staging_is_private_and_removed(tmp_path):
    db = TuningDatabase(tmp_path)
    with db.staging() as staging:
        assert Path(staging).parent == tmp_path and Path(staging).name.startswith(".staging-")
    assert not Path(staging).exists()
