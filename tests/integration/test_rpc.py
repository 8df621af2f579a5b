"""The rpc runner end to end on an emulated aarch64 device (QEMU user mode, see ``autotune.devices``).

The device is built once into ``~/.cache/autotune/emulated-aarch64`` (about 1 minute and 450 MB the
first time: apt and PyPI downloads) and started on free ports for this module (15-50 s). The last
test kills the device's server, so it must stay last.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
import torch

import autotune
from autotune import devices
from autotune.compiler import compile_artifact
from autotune.config.device_profile import DeviceProfile
from autotune.errors import CandidateFailed, UserError
from autotune.exporter import export_program
from autotune.measure import RUNNERS
from autotune.measure.rpc import run_remote
from autotune.measure.tracker import check_tracker
from autotune.models import MODEL_FAMILIES, build_model
from autotune.records import CompiledArtifact, Measurement

pytestmark = [pytest.mark.slow, pytest.mark.tvm]

KEY = "rpi4-emu-test"
INPUT_SHAPE = (1, 8, 8)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def device() -> Iterator[devices.EmulatedDevice]:
    if shutil.which("qemu-aarch64-static") is None and os.geteuid() != 0:
        pytest.skip("qemu-user-static is not installed, and only root can install it")
    try:
        devices.build_device()
    except UserError as err:  # apt-get or pip download failed: no package archive or PyPI here
        pytest.skip(f"cannot build the emulated aarch64 device: {err}")
    with devices.start_device(key=KEY, tracker_port=_free_port(), server_port=_free_port()) as dev:
        yield dev


def _profile(device: devices.EmulatedDevice, **runner: object) -> DeviceProfile:
    """The shipped rpi4_emulated profile, pointed at this module's device."""
    profile = autotune.load_profile("rpi4_emulated")
    update = {"tracker": device.tracker, "key": KEY, "request_timeout_s": 2.0, **runner}
    return profile.model_copy(update={"runner": profile.runner.model_copy(update=update)})


@pytest.fixture(scope="module")
def compiled(
    device: devices.EmulatedDevice, tmp_path_factory: pytest.TempPathFactory
) -> tuple[CompiledArtifact, torch.nn.Module]:
    torch.manual_seed(0)
    model = build_model(MODEL_FAMILIES.get("mobilenet"), {"stages": 1, "width_mult": 0.5}, INPUT_SHAPE, 10)
    program, exported, _ = export_program(model, INPUT_SHAPE)
    artifact = compile_artifact(
        program, profile=_profile(device), out_dir=tmp_path_factory.mktemp("rpc"), input_shape=INPUT_SHAPE
    )
    return artifact, exported


def test_check_tracker_finds_the_device_and_names_a_missing_key(device):
    check_tracker(_profile(device).runner)
    assert f"key '{KEY}': 1 registered" in devices.device_status(key=KEY)
    with pytest.raises(UserError, match="no RPC server is registered for key 'no-such-device'") as info:
        check_tracker(_profile(device, key="no-such-device").runner, file="p.yaml")
    assert info.value.key == "runner.key" and KEY in str(info.value)


def test_outputs_match_pytorch(device, compiled: tuple[CompiledArtifact, torch.nn.Module]):
    artifact, exported = compiled
    xs = np.random.default_rng(0).standard_normal((4, *INPUT_SHAPE)).astype(np.float32)
    got = run_remote(artifact, _profile(device).runner, xs)
    with torch.inference_mode():
        ref = exported(torch.from_numpy(xs)).numpy()
    assert got.shape == ref.shape
    assert float(np.max(np.abs(got - ref))) < 1e-4


def test_measurement_is_labelled_emulated(device, compiled: tuple[CompiledArtifact, torch.nn.Module]):
    profile = _profile(device)
    m = RUNNERS.get(profile.runner.kind).measure(compiled[0], profile, np.zeros((1, *INPUT_SHAPE), np.float32))
    assert isinstance(m, Measurement)
    assert m.latency_ms > 0
    repeats = m.latency_repeats  # adaptive: at least min_repeat, at most repeat
    assert profile.measure.min_repeat <= repeats <= profile.measure.repeat
    assert m.timing == "emulated" and m.energy_source == "model"
    assert m.energy_mj == pytest.approx((profile.power.active_w - profile.power.idle_w) * m.latency_ms)
    assert m.idle_w == profile.power.idle_w


def test_trial_pipeline_verifies_and_times_on_the_device(device, tmp_path, repo):
    space = autotune.load_space(repo / "tests/fixtures/tiny_cnn.yaml")
    params = {
        "arch.stages": 1,
        "arch.width_mult": 0.5,
        "arch.kernel_0": 3,
        "train.optimizer": "adam",
        "train.lr": 0.005,
        "train.epochs": 2,
    }
    profile = _profile(device).model_copy(update={"backends": ("tvm", "onnxruntime")})
    row = autotune.evaluate(params, profile, space=space, work_dir=tmp_path)
    assert row["status"] == "ok", row.get("error")
    assert row["timing"] == "emulated" and row["latency_ms"] > 0
    assert row["max_abs_diff"] < 1e-4 and row["top1_agreement"] == 1.0
    assert "aarch64" in row["target"]
    # ONNX Runtime's aarch64 wheel ran the same candidate on the device, through autotune's server
    assert row["status@onnxruntime"] == "ok", row["error@onnxruntime"]
    assert row["timing@onnxruntime"] == "emulated" and row["latency_ms@onnxruntime"] > 0
    assert row["max_abs_diff@onnxruntime"] < 1e-4
    assert row["best_backend"] in ("tvm", "onnxruntime")


def test_kernels_are_cross_compiled_and_timed_on_the_device(device, tmp_path):
    """``autotune profile`` on the emulated device: each kernel built for aarch64 and timed there."""
    from autotune.compiler.kernels import build_kernels
    from autotune.measure.kernels import time_kernels

    torch.manual_seed(0)
    model = build_model(MODEL_FAMILIES.get("mobilenet"), {"stages": 1, "width_mult": 0.5}, INPUT_SHAPE, 10)
    program, _, _ = export_program(model.eval(), INPUT_SHAPE)
    kernels = build_kernels(program, _profile(device), out_dir=tmp_path)
    assert kernels and all(open(k.path, "rb").read(20)[18] == 0xB7 for k in kernels)  # ELF e_machine: AArch64
    seconds = time_kernels(kernels, _profile(device))
    assert set(seconds) == {k.name for k in kernels} and all(s > 0 for s in seconds.values())


def test_int8_runs_sdot_on_a_dotprod_device_and_matches_its_twin(device, tmp_path, repo):
    """An int8 candidate cross-compiled for a CPU with Arm's dot product (the rpi5's Cortex-A76) runs
    its 1x1 convolutions on ``sdot`` (counted in the disassembly) and matches its fake-quantized twin
    on the emulated device (QEMU's CPU has the instruction)."""
    import subprocess

    from autotune.compress import PASSES, CompressContext
    from autotune.compress.pipeline import compress, plan_compression
    from autotune.data import load_data
    from autotune.numerics import check_numerics, tolerance_for
    from autotune.quiet import QuietLock

    digits = load_data("digits", val=0.2, test=0.2, seed=0)
    torch.manual_seed(0)
    model = build_model(MODEL_FAMILIES.get("mobilenet"), {"stages": 1, "width_mult": 0.5}, INPUT_SHAPE, 10).eval()
    space = autotune.load_space(repo / "tests/fixtures/tiny_compress.yaml")
    ctx = CompressContext(space=space, data=digits, train=None, seed=0, cache_dir=tmp_path, lock=QuietLock(None))
    settings = {**PASSES.get("quantize").Settings.defaults(), "granularity": "channel", "deploy": "int8"}
    q = compress(model, plan_compression({"quantize": settings}), ctx).model.eval()
    emulated = _profile(device)
    rpi5 = autotune.load_profile("rpi5")
    target = {**emulated.target, "mcpu": rpi5.target["mcpu"], "mattr": rpi5.target["mattr"]}  # +dotprod
    profile = emulated.model_copy(update={"target": target})
    program, exported, _ = export_program(q, INPUT_SHAPE)
    art = compile_artifact(program, profile=profile, out_dir=tmp_path / "int8", input_shape=INPUT_SHAPE,
                           precision="int8", weight_granularity="channel")  # fmt: skip
    assert art.int8_path == "dotprod" and art.int8_ops > 0
    if shutil.which("aarch64-linux-gnu-objdump"):
        text = subprocess.run(["aarch64-linux-gnu-objdump", "-d", art.path], capture_output=True, text=True).stdout
        assert sum(1 for line in text.splitlines() if "\tsdot" in line) > 0
    tol = tolerance_for(profile, precision="int8", act_bits=8)
    report = check_numerics(art, exported, digits.x_test[:32], profile=profile, tolerance=tol,
                            run=lambda xs: run_remote(art, profile.runner, xs))  # fmt: skip
    assert report.samples == 32 and report.top1_agreement >= tol.min_top1


def test_the_device_fills_its_own_kernel_table(device, compiled: tuple[CompiledArtifact, torch.nn.Module], tmp_path):
    """An RPC profile's compile leaves the kernels' library beside the model; the kernels the table
    lacks are timed from it on the device, once each, and a second fill times none."""
    from pathlib import Path

    from autotune.compiler.workloads import read_workloads
    from autotune.kernel_table import KernelTable, table_path
    from autotune.predictor import environment_key
    from autotune.records import KERNELS_LIBRARY

    artifact, _ = compiled
    assert (Path(artifact.path).parent / KERNELS_LIBRARY).is_file()
    profile = _profile(device)
    workloads = read_workloads(Path(artifact.path).parent)
    path, key = table_path(profile, tmp_path), environment_key(profile)
    assert KernelTable.load(path, key).fill(artifact.path, workloads, profile) == len({w.key for w in workloads})
    table = KernelTable.load(path, key)  # read back from the file
    assert set(table.entries) == {w.key for w in workloads}
    assert table.fill(artifact.path, workloads, profile) == 0


def test_key_without_server_fails_within_request_timeout(device, compiled: tuple[CompiledArtifact, torch.nn.Module]):
    profile = _profile(device, key="no-such-device", request_timeout_s=1.5)
    with pytest.raises(CandidateFailed, match="no free device for key 'no-such-device'") as info:
        RUNNERS.get("rpc").measure(compiled[0], profile, np.zeros((1, *INPUT_SHAPE), np.float32))
    assert info.value.stage == "measure"
    # it gave up at request_timeout_s (the reason says so), rather than blocking on the tracker
    assert "within 1.5 s" in info.value.reason


def test_session_past_its_timeout_fails_the_candidate(device, compiled: tuple[CompiledArtifact, torch.nn.Module]):
    profile = _profile(device, session_timeout_s=1.0)
    profile = profile.model_copy(update={"measure": profile.measure.model_copy(update={"min_repeat_ms": 500})})
    with pytest.raises(CandidateFailed, match="session ran past runner.session_timeout_s = 1 s"):
        RUNNERS.get("rpc").measure(compiled[0], profile, np.zeros((1, *INPUT_SHAPE), np.float32))
    x = np.zeros((1, *INPUT_SHAPE), np.float32)
    assert run_remote(compiled[0], _profile(device, request_timeout_s=10.0).runner, x).shape == (1, 10)  # back


def test_lost_device_fails_the_candidate(device, compiled: tuple[CompiledArtifact, torch.nn.Module]):
    """Kill the server while it times a long measurement: one retry, then 'device lost'. Keep this test last."""
    profile = _profile(device, retries=1)
    profile = profile.model_copy(
        update={"measure": profile.measure.model_copy(update={"warmup": 0, "repeat": 100, "min_repeat_ms": 200})}
    )
    loads = device.server_log.read_text().count("load_module")  # TVM's server logs each load

    measured = threading.Event()

    def kill_while_timing() -> None:
        while device.server_log.read_text().count("load_module") == loads and not measured.is_set():
            time.sleep(0.1)
        if not measured.is_set():
            time.sleep(0.5)  # into the 20 s of timing
            device.kill_server()

    killer = threading.Thread(target=kill_while_timing, daemon=True)
    killer.start()
    errors: list[BaseException] = []
    try:  # returns once the retry finds no server: a lost device fails the candidate, it does not hang
        RUNNERS.get("rpc").measure(compiled[0], profile, np.zeros((1, *INPUT_SHAPE), np.float32))
    except CandidateFailed as err:
        errors.append(err)
    measured.set()
    killer.join()
    assert not killer.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], CandidateFailed), errors
    assert errors[0].stage == "measure" and errors[0].reason.startswith("device lost:")
    assert "no free device" in errors[0].reason  # the retry found no server for the key
