"""The latency-aware pruner inside a real Ray Tune run: what Tune passes it is what it judges."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.ray]

#: (trial, cost in MACs, validation loss at every epoch): run one after another, in this order.
TRIALS = [("fast", 1e6, 0.50), ("mid", 2e6, 0.20), ("slow_good", 3e6, 0.10), ("slow_bad", 4e6, 0.60)]


def test_tune_stops_only_the_trial_that_faster_trials_beat(tmp_path):
    ray = pytest.importorskip("ray")
    from ray import tune

    from autotune.search.pruning import ParetoASHA

    def trainable(config):
        for epoch in range(1, 5):
            tune.report({"epoch": epoch, "score": config["loss"], "cost_macs": config["macs"], "epochs_planned": 4})

    asha = ParetoASHA(rung=2)
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)  # never another test's
    try:
        tuner = tune.Tuner(
            lambda config: trainable({"macs": config["spec"][1], "loss": config["spec"][2]}),
            param_space={"spec": tune.grid_search(TRIALS)},
            tune_config=tune.TuneConfig(scheduler=asha, max_concurrent_trials=1),
            run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0),
        )
        results = tuner.fit()
    finally:
        ray.shutdown()
    epochs = {r.config["spec"][0]: r.metrics["epoch"] for r in results}
    # fast: nobody faster; mid and slow_good beat the median of the faster ones; slow_bad is beaten
    assert epochs == {"fast": 4, "mid": 4, "slow_good": 4, "slow_bad": 2}
    assert len(asha.recorded) == 4 and asha.stopped == 1
