"""Every runner in RUNNERS keeps the Runner contract: it implements the protocol, times a compiled model
or raises CandidateFailed, and its pre-flight check raises UserError naming the key to fix."""

from __future__ import annotations

import inspect
import socket

import numpy as np
import pytest

import autotune
from autotune.errors import CandidateFailed, UserError
from autotune.measure import RUNNERS, Runner
from autotune.records import CompiledArtifact, Measurement

METHODS = ("check", "measure", "executor", "metaschedule_runner", "tunes_in_place", "fingerprint")

CROSS = """
name: p
target: {kind: llvm, mtriple: aarch64-linux-gnu, mcpu: cortex-a72}
compiler: aarch64-linux-gnu-gcc
power: {idle_w: 1, active_w: 2, source: datasheet}
"""


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _unreachable(write_yaml, **runner):
    extra = "".join(f", {k}: {v}" for k, v in runner.items())
    section = f"runner: {{kind: rpc, tracker: '127.0.0.1:{_closed_port()}', key: rpi4, request_timeout_s: 2{extra}}}\n"
    return autotune.load_profile(write_yaml(CROSS + section))


def _fake_artifact(tmp_path) -> CompiledArtifact:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "model.so"
    path.write_bytes(b"not a library")
    return CompiledArtifact(
        path=str(path), target="{}", input_shape=(1, 8, 8), artifact_bytes=13, weights_bytes=0, peak_mem_bytes=0,
        peak_mem_source="tvm_memory_plan", export_s=0.0, import_s=0.0, compile_s=0.0,
    )  # fmt: skip


@pytest.mark.parametrize("name", RUNNERS.names())
def test_every_runner_implements_the_protocol(name):
    runner = RUNNERS.get(name)
    assert isinstance(runner, Runner) and runner.name == name
    for method in METHODS:
        assert callable(getattr(runner, method)), method
        assert getattr(type(runner), method) is not getattr(Runner, method), f"{name} does not implement {method}"
        assert inspect.signature(getattr(runner, method)).parameters.keys() >= {"profile"}


def test_runners_are_the_local_and_rpc_kinds_of_a_profile():
    assert RUNNERS.names() == ["local", "rpc"]


def test_local_runner_refuses_a_target_of_another_machine(write_yaml, repo):
    with pytest.raises(UserError, match="cannot run on this") as err:
        RUNNERS.get("local").check(autotune.load_profile(write_yaml(CROSS)), file="p.yaml")
    assert err.value.key == "runner.kind"
    host = autotune.load_profile(repo / "tests/fixtures/host_fast.yaml")
    RUNNERS.get("local").check(host)
    assert RUNNERS.get("local").tunes_in_place(host) and RUNNERS.get("local").executor(None, host) is None


def test_rpc_runner_against_an_unreachable_tracker_fails_cleanly(write_yaml, tmp_path):
    profile = _unreachable(write_yaml)
    rpc = RUNNERS.get("rpc")
    with pytest.raises(UserError) as err:
        rpc.check(profile, file="p.yaml")
    assert err.value.key == "runner.tracker" and "p.yaml" in str(err.value)
    art, x = _fake_artifact(tmp_path), np.zeros((1, 1, 8, 8), np.float32)
    with pytest.raises(CandidateFailed) as failed:
        rpc.measure(art, profile, x)
    assert failed.value.stage == "measure" and "tracker" in failed.value.reason
    with pytest.raises(CandidateFailed) as failed:
        rpc.executor(art, profile)(x)
    assert failed.value.stage == "verify"
    assert not rpc.tunes_in_place(profile)  # a real device: tuning measures there
    assert rpc.tunes_in_place(_unreachable(write_yaml, emulated="true"))  # an emulated one runs here


@pytest.mark.slow
@pytest.mark.tvm
def test_local_runner_times_a_compiled_model(tmp_path, repo):
    import torch

    from autotune.compiler import compile_artifact
    from autotune.exporter import export_program
    from autotune.models import MODEL_FAMILIES, build_model
    from autotune.sandbox import run_isolated

    profile = autotune.load_profile(repo / "tests/fixtures/host_fast.yaml")
    torch.manual_seed(0)
    model = build_model(MODEL_FAMILIES.get("mobilenet"), {"stages": 1, "width_mult": 0.5}, (1, 8, 8), 10).eval()
    program, _, _ = export_program(model, (1, 8, 8))
    art = compile_artifact(program, profile=profile, out_dir=tmp_path, input_shape=(1, 8, 8))
    local = RUNNERS.get("local")
    # in a forked child, as a trial times: TVM's runtime pool would otherwise start in the test process
    m = run_isolated(lambda send: local.measure(art, profile, np.zeros((1, 1, 8, 8), np.float32)))
    assert isinstance(m, Measurement) and m.latency_ms > 0 and m.timing == "local"
    assert m.latency_ci_low_ms <= m.latency_ms <= m.latency_ci_high_ms
    from tvm.s_tir import meta_schedule as ms

    assert isinstance(local.metaschedule_runner(profile), ms.runner.Runner)
    with pytest.raises(CandidateFailed) as failed:
        local.measure(_fake_artifact(tmp_path / "x"), profile, np.zeros((1, 1, 8, 8), np.float32))
    assert failed.value.stage == "measure"


def test_the_local_runner_names_a_thread_pool_that_is_not_the_profiles():
    from autotune.measure.local import pool_warning

    assert pool_warning(1, 1, {"TVM_NUM_THREADS": "1"}) is None
    assert "asks for 2" in pool_warning(2, 1, {"TVM_NUM_THREADS": "1"})
    assert "TVM_NUM_THREADS=1" in pool_warning(1, 1, {})  # the pool TVM sized itself is named
