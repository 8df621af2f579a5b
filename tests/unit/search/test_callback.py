"""RunRecorder: the driver's rows (final, pruned, failed) and the progress it feeds, without Ray."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import pytest
from conftest import REPO

from autotune.config.load import load_profile
from autotune.config.search_space import METRICS
from autotune.leaderboard import Leaderboard
from autotune.search import Progress
from autotune.search.callback import RunRecorder


def _trial(tid, last=None, error_file=None):
    config = {"seed": 1, "study_trial": 4, "arch.stages": 2, "train.lr": 0.01}
    return SimpleNamespace(trial_id=tid, config=config, last_result=last, error_file=error_file)


@pytest.fixture
def recorder(tmp_path):
    objectives = {"accuracy": "max", "latency_ms": "min"}
    board = Leaderboard(tmp_path, objectives=objectives, metric_columns=METRICS)
    progress = Progress(total=5, time_budget_s=None, objectives=objectives)
    rec = RunRecorder(
        board=board, run="r", profile=load_profile(REPO / "device_profiles" / "host.yaml"), progress=progress
    )
    seen = []
    rec.on_progress = lambda p: seen.append(dict(p.running))
    rec.seen = seen
    return rec


def test_a_trials_life_and_its_final_row(recorder):
    t = _trial("t1")
    recorder.trial_start(t)
    recorder.trial_result(t, {"stage": "compile"})
    assert recorder.progress.running == {"t1": "compile"}
    recorder.trial_result(t, {"epoch": 2})
    assert recorder.progress.running == {"t1": "train: epoch 2"}
    row = {"trial_id": "t1", "status": "ok", "val_accuracy": 0.9, "latency_ms": 1.0, "started_at": "x"}
    t.last_result = {"final": True, "row_json": json.dumps(row)}
    recorder.trial_result(t, t.last_result)
    recorder.trial_complete(t)
    (stored,) = recorder.board.rows()
    assert stored["status"] == "ok" and recorder.progress.done == 1 and recorder.progress.running == {}
    assert recorder.live == {} and recorder.seen


def test_stopped_early_and_errored_trials_get_rows(recorder, tmp_path):
    for tid in ("a", "b"):
        recorder.trial_start(_trial(tid))
    recorder.trial_complete(_trial("a", last={"epoch": 2, "val_accuracy": 0.5}))
    (tmp_path / "error.txt").write_text("Traceback...\nRuntimeError: boom\n\n")
    recorder.trial_error(_trial("b", error_file=str(tmp_path / "error.txt")))
    recorder.trial_error(_trial("c"))
    recorder.trial_start(_trial("d"))
    recorder.trial_complete(_trial("d", last={"epoch": 3, "val_accuracy": 0.1, "accuracy_floor": 0.151}))
    rows = {r["trial_id"]: r for r in recorder.board.rows()}
    assert rows["a"]["status"] == "pruned" and rows["a"]["error"].startswith("stopped early by ASHA at epoch 2")
    assert "median of no-slower trials" in rows["a"]["error"] and "learned floor 0.151" in rows["d"]["error"]
    assert rows["a"]["epochs"] == 2 and rows["a"]["arch.stages"] == 2 and rows["a"]["seed"] == 5
    assert rows["b"]["status"] == "failed" and rows["b"]["error"] == "RuntimeError: boom"
    assert rows["c"]["error"].startswith("the trial's process died")
    assert (recorder.progress.pruned, recorder.progress.failed) == (2, 2)


def test_unfinished_trials_are_pruned_when_the_budget_ends(recorder):
    recorder.trial_start(_trial("a", last={"epoch": 1}))
    assert recorder.record_unfinished("stopped: the time budget ran out") == 1
    (row,) = recorder.board.rows()
    assert row["status"] == "pruned" and row["error"] == "stopped: the time budget ran out"
    assert recorder.record_unfinished("again") == 0


def test_internal_and_user_errors_are_named_on_the_console(recorder, caplog):
    internal = {"trial_id": "t1", "status": "failed", "error": "internal error: KeyError: 'x'"}
    user = {"trial_id": "t2", "status": "failed", "error": "user error: space.yaml: task.data: nope"}
    with caplog.at_level(logging.WARNING, logger="autotune.search.callback"):
        recorder.trial_complete(
            _trial(
                "t1", last={"final": True, "row_json": json.dumps(internal), "traceback_file": "/r/t1/traceback.txt"}
            )
        )
        recorder.trial_complete(_trial("t2", last={"final": True, "row_json": json.dumps(user)}))
    text = caplog.text
    assert "trial t1" in text and "/r/t1/traceback.txt" in text and "internal error: KeyError" in text
    assert "trial t2" in text and "space.yaml: task.data: nope" in text


def test_pickling_drops_the_display_hook_and_live_trials(recorder):
    recorder.trial_start(_trial("a"))
    state = recorder.__getstate__()
    assert state["on_progress"] is None and state["live"] == {}


#: What Ray Tune writes in a trial's error.txt when the node it ran on dies (ActorDiedError's text).
NODE_DIED = """Failure # 1 (occurred at 2026-11-26_03-12-09)
ray::ImplicitFunc.train() (pid=4242, ip=10.0.0.7, actor_id=8f1c)
ray.exceptions.ActorDiedError: The actor died unexpectedly before finishing this task.
\tclass_name: ImplicitFunc
\tactor_id: 8f1c2a
\tpid: 4242
\tip: 10.0.0.7
The actor is dead because its node has died. Node Id: 3f9d0c1e2b4a5968
"""


def test_a_trial_lost_with_its_node_is_failed_and_run_again_once(recorder, tmp_path, space_study):
    err = tmp_path / "node.txt"
    err.write_text(NODE_DIED)
    recorder.trial_start(_trial("lost"))
    recorder.trial_error(_trial("lost", error_file=str(err)))
    (row,) = recorder.board.rows()
    assert row["status"] == "failed" and row["error"] == "node lost: 10.0.0.7 3f9d0c1e2b4a"
    waiting = [t for t in space_study().trials if t.state.name == "WAITING"]
    assert [t.system_attrs["fixed_params"] for t in waiting] == [{"arch.stages": 2, "train.lr": 0.01}]
    assert waiting[0].user_attrs["retry_of"] == "lost"
    recorder.trial_error(_trial("lost-again", error_file=str(err)))  # the same parameters lost again
    assert len([t for t in space_study().trials if t.state.name == "WAITING"]) == 1
    assert [r["error"] for r in recorder.board.rows()] == ["node lost: 10.0.0.7 3f9d0c1e2b4a"] * 2


def test_other_errors_are_not_node_loss():
    from autotune.search.callback import lost_node

    assert lost_node("RuntimeError: boom") is None
    assert lost_node("Task was killed due to the node running low on memory.") is None
    assert lost_node("ray.exceptions.NodeDiedError: ...") == "unknown node"


@pytest.fixture
def space_study(tmp_path):
    """The run's study (the one the recorder enqueues into), opened on tiny_cnn; returns a loader."""
    import optuna

    from autotune.search import study as studies
    from autotune.validate import load_space

    studies.open_study(load_space(REPO / "tests/fixtures/tiny_cnn.yaml"), tmp_path)
    return lambda: optuna.load_study(study_name=studies.STUDY_NAME, storage=studies.storage(tmp_path))


def test_a_full_disk_stops_the_run_instead_of_being_logged_by_tune(recorder, monkeypatch):
    import errno

    from autotune.search.callback import make_stopper

    stopper = make_stopper(recorder)
    assert not stopper.stop_all()

    def full(row):
        raise OSError(errno.ENOSPC, "No space left on device", "trials.jsonl")

    monkeypatch.setattr(recorder.board, "add", full)
    recorder.trial_error(_trial("x"))  # Tune would log an exception from here and go on
    assert isinstance(recorder.fatal, OSError) and stopper.stop_all()
    monkeypatch.setattr(recorder.board, "add", lambda row: (_ for _ in ()).throw(OSError(errno.EACCES, "denied")))
    with pytest.raises(OSError, match="denied"):  # not a full disk: a bug or a setup error, raised
        recorder.trial_error(_trial("y"))
