"""RunConfig: one declaration of the run options that the CLI, the API and ``run.json`` share."""

from __future__ import annotations

import inspect
import json

import pytest

from autotune.api import search
from autotune.cli import _parser
from autotune.errors import UserError
from autotune.search import SAMPLERS, RunConfig
from autotune.search.settings import read_run_devices


def test_the_cli_and_the_api_have_runconfigs_defaults():
    args = _parser().parse_args(["search"])
    assert RunConfig.from_args(args) == RunConfig()
    params = inspect.signature(search).parameters
    for f in RunConfig.options():
        assert f.name in params, f"autotune.search lacks the option {f.name}"
        assert params[f.name].default == f.default, f.name
    assert RunConfig().trials == 12


def test_cli_flags_fill_the_options():
    args = _parser().parse_args(
        ["search", "--trials", "3", "--time-budget", "30m", "--no-predictor", "--no-early-stopping"]
        + ["--trial-timeout", "none", "--trial-memory", "512M", "--sampler", "nsga2", "--cpus-per-trial", "2"]
    )
    cfg = RunConfig.from_args(args)
    assert (cfg.trials, cfg.time_budget_s, cfg.predictor, cfg.early_stopping) == (3, 1800.0, False, False)
    assert (cfg.trial_timeout_s, cfg.trial_memory_bytes, cfg.sampler, cfg.cpus_per_trial) == (None, 2**29, "nsga2", 2.0)
    assert cfg.constraint_first is True


def test_every_sampler_is_a_cli_choice():
    with pytest.raises(SystemExit):
        _parser().parse_args(["search", "--sampler", "cmaes"])
    for name in SAMPLERS:
        assert RunConfig.from_args(_parser().parse_args(["search", "--sampler", name])).sampler == name


@pytest.mark.parametrize(
    "kwargs,key",
    [({"trials": 0}, "--trials"), ({"sampler": "tpee"}, "--sampler"), ({"reference_every": -1}, "--reference-every")],
)
def test_bad_options_are_user_errors_keyed_by_their_flag(kwargs, key):
    with pytest.raises(UserError) as err:
        RunConfig(**kwargs)
    assert err.value.key == key


def test_run_json_round_trip_and_resume(tmp_path):
    cfg = RunConfig(trials=5, sampler="random", trial_memory_bytes=None)
    cfg.write(tmp_path, version="9.9", devices=["rpi5", "jetson"])
    record = json.loads((tmp_path / "run.json").read_text())
    assert record["autotune"] == "9.9" and record["devices"] == ["rpi5", "jetson"]
    assert set(record["settings"]) == {f.name for f in RunConfig.options()}
    assert read_run_devices(tmp_path) == ["rpi5", "jetson"]
    resumed = RunConfig(trials=99, seed=3).resumed(RunConfig.read(tmp_path))
    assert resumed == cfg  # a resumed run keeps the options it started with
    assert RunConfig(seed=3).resumed({"trials": 7}) == RunConfig(seed=3, trials=7)  # an older run.json
    assert RunConfig.read(tmp_path / "none") is None and read_run_devices(tmp_path / "none") == []
