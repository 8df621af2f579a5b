"""The latency-aware pruner: ASHA's median rule among no-slower trials, one rung, never the last epoch."""

from __future__ import annotations

import math
from types import SimpleNamespace

from autotune.search.pruning import Cost, ParetoASHA, judged_before, no_slower, should_stop


def test_no_slower_prefers_predicted_latency_then_macs():
    fast, slow = Cost(latency_pred_ms=0.02, macs=9e6), Cost(latency_pred_ms=0.04, macs=1e6)
    assert no_slower(fast, slow) and not no_slower(slow, fast)  # the prediction wins over MACs
    assert no_slower(Cost(macs=1e6), slow) and not no_slower(Cost(macs=2e6), Cost(latency_pred_ms=0.1, macs=1e6))
    assert no_slower(Cost(), slow) and no_slower(slow, Cost())  # nothing known: every trial counts


def test_only_no_slower_trials_judge_a_trial():
    recorded = {"a": (0.10, Cost(macs=4e6)), "b": (0.12, Cost(macs=5e6)), "c": (0.50, Cost(macs=6e6))}
    assert not should_stop(0.9, Cost(macs=1e6), recorded)  # the fastest yet: nobody to lose against
    assert not should_stop(0.11, Cost(macs=5e6), recorded)  # median of a, b is 0.11: not above it
    assert should_stop(0.2, Cost(macs=5.5e6), recorded)  # slower than a and b and worse than both
    assert should_stop(0.2, Cost(macs=7e6), recorded)  # the slowest: a, b, c judge it (median 0.12)
    assert not should_stop(0.12, Cost(macs=7e6), recorded)
    assert not should_stop(0.3, Cost(), {})


def _trial(tid):
    return SimpleNamespace(trial_id=tid)


def _epoch(epoch, loss, macs, **kw):
    return {"epoch": epoch, "score": loss, "cost_macs": macs, "epochs_planned": 4, **kw}


def test_the_rung_judges_each_trial_once_and_never_its_last_epoch():
    asha, stop, go = ParetoASHA(rung=2), ParetoASHA.STOP, ParetoASHA.CONTINUE
    assert asha.on_trial_result(None, _trial("a"), _epoch(1, 5.0, 1e6)) == go  # before the rung
    assert asha.on_trial_result(None, _trial("a"), _epoch(2, 0.1, 1e6)) == go  # first judged
    assert asha.on_trial_result(None, _trial("b"), _epoch(2, 0.3, 2e6)) == stop  # slower and worse
    assert asha.on_trial_result(None, _trial("c"), _epoch(2, 0.5, 0.5e6)) == go  # worse but faster
    assert asha.on_trial_result(None, _trial("c"), _epoch(3, 9.0, 0.5e6)) == go  # judged already
    last = {**_epoch(2, 9.0, 3e6), "epochs_planned": 2}
    assert asha.on_trial_result(None, _trial("d"), last) == go  # trained: stopping saves nothing
    assert set(asha.recorded) == {"a", "b", "c"} and asha.stopped == 1
    assert "3 judged, 1 stopped" in asha.debug_string()
    assert asha.on_trial_result(None, _trial("e"), {"stage": "compile"}) == go  # not an epoch


def test_a_trial_that_learned_nothing_or_diverged_stops():
    asha = ParetoASHA(rung=2)
    chance = _epoch(2, 2.3, 1e5, val_accuracy=0.1, accuracy_floor=0.15)
    assert asha.on_trial_result(None, _trial("a"), chance) == ParetoASHA.STOP  # the fastest, but useless
    assert asha.on_trial_result(None, _trial("b"), _epoch(2, math.nan, 2e5)) == ParetoASHA.STOP
    assert asha.recorded["b"][0] == math.inf
    learned = _epoch(2, 0.4, 3e5, val_accuracy=0.9, accuracy_floor=0.15)
    assert asha.on_trial_result(None, _trial("c"), learned) == ParetoASHA.CONTINUE


def test_a_search_for_accuracy_alone_is_judged_as_by_plain_asha():
    asha = ParetoASHA(rung=2, by_cost=False)
    assert asha.on_trial_result(None, _trial("a"), _epoch(2, 0.1, 5e6)) == ParetoASHA.CONTINUE
    assert asha.on_trial_result(None, _trial("b"), _epoch(2, 0.3, 1e6)) == ParetoASHA.STOP  # faster, no matter


def test_the_driver_picks_the_pruner_from_the_space(tmp_path):
    from conftest import REPO

    from autotune.search.driver import _scheduler
    from autotune.search.settings import RunConfig
    from autotune.validate import load_space

    space = load_space(REPO / "tests" / "fixtures" / "tiny_cnn.yaml")
    asha = _scheduler(space, RunConfig())
    assert isinstance(asha, ParetoASHA) and asha.by_cost and asha.rung == max(1, space.train["epochs"] // 2)
    assert not isinstance(_scheduler(space, RunConfig(early_stopping=False)), ParetoASHA)
    accuracy_only = space.model_copy(update={"objectives": {"accuracy": "max"}})
    assert not _scheduler(accuracy_only, RunConfig()).by_cost


def test_a_resumed_run_judges_as_the_run_before_it_would_have():
    """Ray Tune keeps no scheduler state: a resumed run's pruner is given the rung's judgements again,
    rebuilt from the finished trials' rows and curves (as the leaderboard reads them: strings)."""
    live = ParetoASHA(rung=2)
    curves, rows = {}, []
    trials = [("a", [0.9, 0.10], 1e6, "0.02", 4), ("b", [0.8, 0.30], 2e6, "", 4), ("c", [0.7, 0.50], 5e5, "0.01", 4),
              ("d", [0.6, 0.05], 3e6, "", 2)]  # fmt: skip
    for tid, losses, macs, pred, planned in trials:
        curves[tid] = []
        for epoch, loss in enumerate(losses, 1):
            result = {**_epoch(epoch, loss, macs, epochs_planned=planned)}
            if pred:
                result["cost_latency_pred_ms"] = float(pred)
            live.on_trial_result(None, _trial(tid), result)
            curves[tid].append({"epoch": epoch, "train_loss": 1.0, "val_loss": loss, "val_accuracy": 0.5})
        # compressed to fewer MACs after training: the cost was reported before, as the uncompressed
        rows.append({"trial_id": tid, "train.epochs": str(planned), "macs": str(macs / 2),
                     "macs_uncompressed": str(macs), "latency_pred_ms": pred})  # fmt: skip
    rows += [{"trial_id": "screened", "train.epochs": "4", "macs": "1000000.0"},  # never trained
             {"trial_id": "early", "train.epochs": "4", "macs": "1.0"}]  # stopped before the rung  # fmt: skip
    curves |= {"screened": [], "early": [{"epoch": 1, "val_loss": 0.01}]}
    resumed = ParetoASHA(rung=2)
    resumed.remember(judged_before(rows, lambda tid: curves[tid], rung=2))
    assert resumed.recorded == live.recorded and set(live.recorded) == {"a", "b", "c"}  # d: planned 2, not judged
    stop, go = ParetoASHA.STOP, ParetoASHA.CONTINUE
    for newcomer, decision in [(_epoch(2, 0.6, 2.5e6), stop), (_epoch(2, 0.05, 2.5e6), go), (_epoch(2, 0.6, 1e5), go)]:
        assert live.on_trial_result(None, _trial("e"), newcomer) == decision
        assert resumed.on_trial_result(None, _trial("e"), newcomer) == decision
        del live.recorded["e"], resumed.recorded["e"]
    assert ParetoASHA(rung=2).on_trial_result(None, _trial("e"), _epoch(2, 0.6, 2.5e6)) == go  # with no memory
