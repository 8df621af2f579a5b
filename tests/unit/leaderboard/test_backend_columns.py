"""A trial's row with a profile's other backends: ``<column>@<backend>``, the reason when one fails,
and ``best_backend`` / ``best_latency_ms`` over the verified ones."""

from __future__ import annotations

import pytest

from autotune.leaderboard.row import BACKEND_COLUMNS, BackendOutcome, DeviceResult, LeaderboardRow
from autotune.leaderboard.schema import COLUMNS
from autotune.records import CompiledArtifact, Measurement, NumericsReport, TrialConfig


def _result(latency_ms: float, target: str, precision: str = "fp32") -> DeviceResult:
    art = CompiledArtifact(path="m", target=target, input_shape=(1, 8, 8), artifact_bytes=10, weights_bytes=10,
                           peak_mem_bytes=0, peak_mem_source="", export_s=0.1, import_s=0.0, compile_s=0.2,
                           deploy_precision=precision)  # fmt: skip
    m = Measurement(latency_ms=latency_ms, latency_p90_ms=latency_ms, latency_cov=0.01, latency_ci_low_ms=latency_ms,
                    latency_ci_high_ms=latency_ms, latency_repeats=5, number=10, threads=1, energy_mj=1.0,
                    energy_source="model", load_avg=0.0, measure_s=0.5)  # fmt: skip
    return DeviceResult(art, NumericsReport(1e-6, 1.0, 8, 0.01), m)


def _row(backends: dict[str, BackendOutcome]) -> LeaderboardRow:
    cfg = TrialConfig(trial_id="t1", params={"arch.width": 8}, arch={"width": 8}, train=None, seed=0)
    return LeaderboardRow.from_records(cfg, run="r", device="host", started_at="now", main=_result(2.0, "llvm"),
                                       backends=backends)  # fmt: skip


def test_the_fastest_verified_backend_is_best():
    row = _row({"onnxruntime": BackendOutcome(_result(1.5, "onnxruntime 1", "int8 (qdq)")),
                "openvino": BackendOutcome(_result(0.5, "openvino 2", "int8"))})  # fmt: skip
    assert row["backend"] == "tvm" and row["latency_ms"] == 2.0
    assert row["latency_ms@onnxruntime"] == 1.5 and row["deploy_precision@onnxruntime"] == "int8 (qdq)"
    assert row["status@openvino"] == "ok" and row["error@openvino"] is None
    assert (row["best_backend"], row["best_latency_ms"]) == ("openvino", 0.5)
    assert all(f"{c}@openvino" in row for c in BACKEND_COLUMNS)
    assert list(COLUMNS).index("best_latency_ms") < list(COLUMNS).index("energy_mj")


def test_a_failed_backend_keeps_its_reason_and_is_never_best():
    row = _row({"onnxruntime": BackendOutcome(None, "failed", "convert: ONNX export failed: ..."),
                "openvino": BackendOutcome(None, "not on device", "not on device: no openvino there")})  # fmt: skip
    assert row["status"] == "ok"
    assert row["status@onnxruntime"] == "failed" and "ONNX export failed" in row["error@onnxruntime"]
    assert row["latency_ms@onnxruntime"] is None and row["status@openvino"] == "not on device"
    assert (row["best_backend"], row["best_latency_ms"]) == ("tvm", 2.0)


def test_a_profile_with_one_backend_still_names_it():
    row = _row({})
    assert (row["backend"], row["best_backend"], row["best_latency_ms"]) == ("tvm", "tvm", 2.0)
    assert not [k for k in row if "@" in k]


def test_the_profile_refuses_a_backend_named_twice(repo):
    import autotune

    p = autotune.load_profile(repo / "tests/fixtures/host_fast.yaml")
    with pytest.raises(ValueError, match="onnxruntime named twice"):
        type(p).model_validate({**p.model_dump(exclude_unset=True), "backends": ["tvm", "onnxruntime", "onnxruntime"]})


def test_tuning_needs_tvm_first(repo):
    import autotune

    p = autotune.load_profile(repo / "tests/fixtures/host_fast.yaml").model_dump(exclude_unset=True)
    tuned = {**p, "tuning": {"trials_per_candidate": 8}}
    with pytest.raises(ValueError, match="tuning applies to the tvm backend"):
        autotune.config.device_profile.DeviceProfile.model_validate({**tuned, "backends": ["onnxruntime", "tvm"]})
    autotune.config.device_profile.DeviceProfile.model_validate({**tuned, "backends": ["tvm", "onnxruntime"]})


def test_summaries_show_the_best_backend_only_when_backends_are_compared():
    from autotune.leaderboard import summary_columns

    one = [dict(_row({}))]
    three = [dict(_row({"onnxruntime": BackendOutcome(_result(1.5, "onnxruntime 1"))}))]
    assert "best_backend" not in summary_columns(one) and "best_latency_ms" not in summary_columns(one, filled=False)
    assert {"best_backend", "best_latency_ms"} <= set(summary_columns(three))
    assert "energy_mj" in summary_columns(one) and "latency_tuned_ms" not in summary_columns(one)
