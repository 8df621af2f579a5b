"""Paired timing with a real TVM compile: the reference is compiled, calibrated once per environment,
paired with every candidate of a trial, and the row's latency is on the calibrated scale."""

from __future__ import annotations

import json

import pytest

import autotune
from autotune.config.device_profile import DeviceProfile

pytestmark = [pytest.mark.slow, pytest.mark.tvm]

SPACE = """
task: {data: synthetic, model: mobilenet, input_shape: [3, 16, 16], num_classes: 10}
arch: {stages: 2, width_mult: 0.5}
objectives: {macs: max, latency_ms: min}
"""


@pytest.fixture
def paired():
    return DeviceProfile.model_validate(
        {
            "name": "paired_test",
            "target": {"host": True},
            "measure": {"warmup": 2, "number": 5, "repeat": 5, "min_repeat_ms": 1, "paired": True, "paired_rounds": 4},
            "power": {"idle_w": 5, "active_w": 15, "source": "test figures"},
        }
    )


def test_a_paired_row_is_on_the_reference_scale(tmp_path, write_yaml, paired, monkeypatch):
    monkeypatch.setattr("autotune.reference.CALIBRATION_GAP_S", 0.0)
    space = autotune.load_space(write_yaml(SPACE))
    row = autotune.evaluate({}, paired, space=space, work_dir=tmp_path / "a")
    assert row["status"] == "ok", row.get("error")
    store = tmp_path / "a" / "cache" / "paired_test.reference.json"  # the API's default: the run's cache
    (entry,) = json.loads(store.read_text())["entries"]
    assert len(entry["timings_ms"]) == 9 and entry["key"]["input_shape"] == [3, 16, 16]
    assert entry["baseline_ms"] == pytest.approx(sorted(entry["timings_ms"])[4])
    assert row["reference_ratio"] > 0 and row["latency_window_ms"] > 0
    assert row["latency_ms"] == pytest.approx(row["reference_ratio"] * entry["baseline_ms"], rel=1e-9)
    assert 4 <= row["latency_repeats"] <= 8  # paired rounds: 4, up to twice that until precise
    assert row["latency_ci_low_ms"] <= row["latency_ms"] <= row["latency_ci_high_ms"]


def test_the_calibration_is_reused_and_a_broken_store_is_rewritten(tmp_path, write_yaml, paired, monkeypatch):
    from autotune.quiet import QuietLock
    from autotune.reference import install_pairing
    from autotune.sandbox import run_isolated
    from autotune.task import prepare_task

    monkeypatch.setattr("autotune.reference.CALIBRATION_GAP_S", 0.0)
    task = prepare_task(autotune.load_space(write_yaml(SPACE)), paired)
    store = tmp_path / "store"
    store.mkdir()
    (store / "paired_test.reference.json").write_text('{"entries": [')  # torn by a crash
    # in forked children, as a trial pairs: TVM's runtime pool started here would pin later tests' training
    first = run_isolated(lambda send: install_pairing(task, tmp_path / "cache", QuietLock(None), store))
    assert first is not None and first.baseline_ms > 0
    assert len(json.loads((store / "paired_test.reference.json").read_text())["entries"]) == 1

    def no_calibration(*args, **kwargs):
        raise AssertionError("calibrated twice")

    monkeypatch.setattr("autotune.reference.calibrate", no_calibration)
    again = run_isolated(lambda send: install_pairing(task, tmp_path / "cache", QuietLock(None), store))
    assert again is not None and again.baseline_ms == first.baseline_ms and again.path == first.path


def test_kernel_table_timings_are_paired_on_the_same_scale(tmp_path, write_yaml, paired, monkeypatch):
    from autotune.compiler import compile_artifact
    from autotune.compiler.workloads import read_workloads
    from autotune.exporter import export_program
    from autotune.measure import kernels
    from autotune.measure.paired import Pairing, use_pairing
    from autotune.models import build_model
    from autotune.quiet import QuietLock
    from autotune.reference import reference_artifact
    from autotune.task import prepare_task

    task = prepare_task(autotune.load_space(write_yaml(SPACE)), paired)
    shape = task.data.input_shape
    model = build_model(task.family, {"stages": 1, "width_mult": 0.5}, shape, task.data.num_classes).eval()
    program, _, _ = export_program(model, shape)
    art = compile_artifact(program, profile=paired, out_dir=tmp_path / "c", input_shape=shape)
    workloads = read_workloads(tmp_path / "c")[:3]
    ref = reference_artifact(task, tmp_path / "cache", QuietLock(None))
    timings = []

    def recorded(*args, **kwargs):
        t = real(*args, **kwargs)
        timings.append(t)
        return t

    real = kernels.time_against
    monkeypatch.setattr(kernels, "time_against", recorded)
    use_pairing(paired.name, shape, None)  # an earlier test's evaluate in this process paired it
    assert kernels.time_in_library(art.path, workloads, paired)  # no pairing installed: timed alone
    assert timings == []
    use_pairing(paired.name, shape, Pairing(ref.path, task.data.x_test[:1], baseline_ms=250.0))
    try:
        seconds = kernels.time_in_library(art.path, workloads, paired)
    finally:
        use_pairing(paired.name, shape, None)
    assert len(timings) == len(workloads) == len(seconds)
    for w, t in zip(workloads, timings, strict=True):  # each kernel: its median ratio × the reference's latency
        assert 4 <= t.rounds <= 8 and t.ratio > 0
        assert seconds[w.name] == pytest.approx(t.ratio * 250.0 / 1e3, rel=1e-12)
