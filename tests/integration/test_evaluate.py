"""One candidate end to end with a real TVM compile: numerics, measurement, failure rows."""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import autotune
from autotune.compiler import compile_artifact
from autotune.config.device_profile import DeviceProfile
from autotune.evaluate import evaluate
from autotune.exporter import export_program
from autotune.models import MODEL_FAMILIES, build_model
from autotune.numerics import check_numerics, load_vm, run_compiled
from autotune.quiet import QuietLock
from autotune.task import make_trial_config, prepare_task

pytestmark = [pytest.mark.slow, pytest.mark.tvm]

TINY = {
    "arch.stages": 2,
    "arch.width_mult": 0.5,
    "arch.kernel_0": 3,
    "arch.kernel_1": 5,
    "arch.se": True,
    "arch.act": "hardswish",
    "train.optimizer": "adam",
    "train.lr": 0.005,
}


@pytest.fixture
def space(repo):
    return autotune.load_space(repo / "tests/fixtures/tiny_cnn.yaml")


@pytest.fixture
def profile(repo):
    return autotune.load_profile(repo / "tests/fixtures/host_fast.yaml")


def test_compiled_model_matches_pytorch(tmp_path, profile):
    torch.manual_seed(0)
    model = build_model(MODEL_FAMILIES.get("mobilenet"), {"stages": 3, "se": True, "act": "hardswish"}, (1, 8, 8), 10)
    for m in model.modules():  # non-trivial BatchNorm statistics, so a wrong fold would show
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    model.eval()
    program, exported, _ = export_program(model, (1, 8, 8))
    art = compile_artifact(program, profile=profile, out_dir=tmp_path, input_shape=(1, 8, 8))
    assert os.path.getsize(art.path) == art.artifact_bytes > 0
    assert art.peak_mem_bytes > art.weights_bytes > 0
    vm = load_vm(art)
    xs = np.random.default_rng(0).standard_normal((8, 1, 1, 8, 8)).astype(np.float32)
    with torch.no_grad():
        for x in xs:
            np.testing.assert_allclose(run_compiled(vm, x), model(torch.from_numpy(x)).numpy(), atol=1e-4, rtol=1e-4)
    report = check_numerics(art, exported, xs[:, 0], profile=profile)
    assert report.max_abs_diff < 1e-4 and report.top1_agreement == 1.0


def test_a_waiting_timer_gets_in_between_compile_phases(tmp_path, profile):
    """Compiling holds the quiet lock shared per phase: a trial waiting to time a candidate gets it
    before the compile ends, not after the whole compile."""
    import threading

    started, order = threading.Event(), []

    class Watched(QuietLock):
        @contextlib.contextmanager
        def shared(self):
            started.set()
            with super().shared():
                yield

    def timer():
        started.wait()
        with QuietLock(tmp_path / "run").exclusive():  # its own descriptors, as another trial's
            order.append("timed")

    torch.manual_seed(0)
    model = build_model(MODEL_FAMILIES.get("mobilenet"), {"stages": 2}, (1, 8, 8), 10).eval()
    program, _, _ = export_program(model, (1, 8, 8))
    thread = threading.Thread(target=timer)
    thread.start()
    lock = Watched(tmp_path / "run")
    compile_artifact(program, profile=profile, out_dir=tmp_path / "c", input_shape=(1, 8, 8), lock=lock)
    order.append("compiled")
    thread.join()
    assert order == ["timed", "compiled"]


class _SteadyMeter:
    """A meter that reads a constant 3 W on ``clock``: idle and busy alike, so nothing is above idle."""

    name = "steady"

    def __init__(self, clock):
        self.clock = clock

    def read_j(self):
        return 3.0 * self.clock.now


class _FakeClock:
    """The measurement's clock: still while kernels run, advanced only by ``sleep`` (the idle reading)."""

    def __init__(self):
        self.now = 100.0

    def perf_counter(self):
        return self.now

    def monotonic(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def test_metered_energy_is_above_idle(tmp_path, profile, monkeypatch):
    from autotune.measure.local import LocalRunner
    from autotune.sandbox import run_isolated

    model = build_model(MODEL_FAMILIES.get("mobilenet"), {"stages": 1, "width_mult": 0.5}, (1, 8, 8), 10).eval()
    program, _, _ = export_program(model, (1, 8, 8))
    art = compile_artifact(program, profile=profile, out_dir=tmp_path, input_shape=(1, 8, 8))
    clock = _FakeClock()  # the meter, the idle reading and the timing window read one clock
    monkeypatch.setattr("autotune.measure.energy.time", clock)
    monkeypatch.setattr("autotune.measure.base.time", clock)
    monkeypatch.setattr("autotune.measure.local.open_meter", lambda kind: _SteadyMeter(clock))
    local = LocalRunner()  # its own idle-power readings, none from earlier tests
    # in a forked child, as a trial times: TVM's runtime pool, once started here, would pin this
    # process's later training to one core
    m = run_isolated(lambda send: local.measure(art, profile, np.zeros((1, 1, 8, 8), np.float32)))
    assert m.energy_source == "steady" and m.idle_w == pytest.approx(3.0, rel=0.01)
    # 3 W over the window, less 3 W idle, on one clock: nothing above idle
    assert m.energy_mj == 0.0


def test_evaluate_candidate_row(tmp_path, space, profile):
    row = autotune.evaluate(TINY, profile, space=space, work_dir=tmp_path)
    assert row["status"] == "ok", row.get("error")
    assert row["accuracy"] > 0.5 and row["val_accuracy"] > 0.5  # chance is 0.1
    assert row["latency_ms"] > 0 and row["latency_p90_ms"] >= row["latency_ms"]
    assert row["latency_ci_high_ms"] >= row["latency_ms"] >= row["latency_ci_low_ms"]
    assert row["max_abs_diff"] < 1e-4 and row["top1_agreement"] == 1.0
    assert row["energy_source"] in ("model", "rapl", "nvml") and row["energy_mj"] > 0
    if row["energy_source"] == "model":
        assert row["energy_mj"] == pytest.approx((profile.power.active_w - profile.power.idle_w) * row["latency_ms"])
        assert row["idle_w"] == profile.power.idle_w
    assert row["params"] > 0 and row["macs"] > row["params"]
    assert row["size_bytes"] <= 4 * row["params"] and row["size_bytes"] > 0  # fp32 weights, BN folded away
    assert row["cpu_model"] and row["tvm_version"] and row["torch_version"]  # the environment fingerprint
    assert row["deploy_precision"] == "fp32" and row["int8_ops"] == 0 < row["compute_ops"]
    assert row["epochs"] == 6 and row["train_s"] > 0 and row["compile_s"] > 0
    assert row["quiet_wait_s"] == 0.0  # no other trial: nothing to wait for
    assert (tmp_path / "model.so").exists() and (tmp_path / "weights.pt").exists()


def test_numerics_mismatch_fails_the_trial(tmp_path, space):
    strict = DeviceProfile.model_validate(
        {
            "name": "strict",
            "target": {"host": True},
            "numerics": {"atol": 1e-15, "rtol": 0},
            "measure": {"repeat": 3, "number": 1, "min_repeat_ms": 0},
            "power": {"idle_w": 1, "active_w": 2, "source": "test"},
        }
    )
    row = autotune.evaluate({**TINY, "train.epochs": 1}, strict, space=space, work_dir=tmp_path)
    if row["status"] == "ok":  # bit-exact outputs are possible in principle; then nothing to check
        assert row["max_abs_diff"] <= 1e-15
    else:
        assert row["status"] == "failed"
        assert row["error"].startswith("verify: compiled output differs from PyTorch: max_abs_diff=")
        assert row.get("latency_ms") is None  # no row claims a latency for an unverified model


def test_diverging_training_is_a_failed_row(tmp_path, space, profile):
    row = autotune.evaluate(
        {**TINY, "train.optimizer": "sgd", "train.lr": 1e12}, profile, space=space, work_dir=tmp_path
    )
    assert row["status"] == "failed"
    assert row["error"].startswith("train: loss is")


def _hold_exclusive(lock_dir, seconds, ready, released):
    with QuietLock(lock_dir).exclusive():
        ready.set()
        time.sleep(seconds)
        released.set()  # (still holding: set before the lock goes)


def test_latency_only_space(tmp_path, write_yaml, profile):
    space = autotune.load_space(
        write_yaml(
            """
        task: {data: synthetic, model: mobilenet, input_shape: [3, 32, 32], num_classes: 100}
        arch: {stages: 2, width_mult: 0.5}
        objectives: {macs: max, latency_ms: min}
        """
        )
    )
    row = autotune.evaluate({}, profile, space=space, work_dir=tmp_path)
    assert row["status"] == "ok", row.get("error")
    assert row["train_s"] == 0 and row.get("accuracy") is None
    assert row["latency_ms"] > 0 and row["macs"] > 0

    # another trial timing a candidate holds the machine: this one stands still, and says so
    ctx = mp.get_context("fork")
    ready, released = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_exclusive, args=(tmp_path / "quiet", 3.0, ready, released))
    holder.start()
    assert ready.wait(10)
    task = prepare_task(space, profile)
    cfg = make_trial_config({}, space, trial_id="waits", seed=0)
    lock = QuietLock(tmp_path / "quiet")
    waited = evaluate(cfg, task, work_dir=tmp_path / "waits", lock=lock)
    assert released.is_set()  # it could not finish before the holder let go (checked before joining it)
    holder.join()
    assert waited["status"] == "ok", waited.get("error")
    assert waited["quiet_wait_s"] == lock.waited_s  # and its row reports the lock's own count of the wait


#: A search worker in a fresh process (this one has run torch's OpenMP threads, which a forked child
#: cannot use): one torch thread, the warm-up, then a trial in a forked child.
WARMED_WORKER = """
import json, sys
import torch
torch.set_num_threads(1)
import autotune
from autotune.evaluate import evaluate, warm_up
from autotune.quiet import QuietLock
from autotune.sandbox import run_isolated
from autotune.task import make_trial_config, prepare_task
space, profile = autotune.load_space(sys.argv[1]), autotune.load_profile(sys.argv[2])
task = prepare_task(space, profile)
warm_up(task, QuietLock(None))
cfg = make_trial_config(json.loads(sys.argv[3]), space, trial_id="warmed", seed=0)
row = run_isolated(lambda send: dict(evaluate(cfg, task, work_dir=sys.argv[4], lock=QuietLock(None))))
print(json.dumps({k: row.get(k) for k in ("status", "error", "latency_ms", "top1_agreement", "max_abs_diff")}))
"""


def test_a_warmed_up_worker_forks_trials_that_still_compile_time_and_match(tmp_path, repo, space, profile, caplog):
    from autotune.evaluate import warm_up

    args = [repo / "tests/fixtures/tiny_cnn.yaml", repo / "tests/fixtures/host_fast.yaml", json.dumps(TINY), tmp_path]
    done = subprocess.run([sys.executable, "-c", WARMED_WORKER, *map(str, args)], capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    row = json.loads(done.stdout.strip().splitlines()[-1])
    assert row["status"] == "ok", row["error"]
    assert row["latency_ms"] > 0 and row["top1_agreement"] == 1.0 and row["max_abs_diff"] <= 1e-4

    def broken(*args, **kwargs):
        raise RuntimeError("no compiler here")

    task = prepare_task(space, profile)
    with caplog.at_level("DEBUG", logger="autotune.evaluate"), pytest.MonkeyPatch.context() as mp_:
        mp_.setattr(sys.modules["autotune.evaluate"], "export_and_compile", broken)  # (the module, not the API)
        warm_up(task, QuietLock(None))  # best effort: the trial meets the failure in its own stage
    assert "warming up the worker failed" in caplog.text and "no compiler here" in caplog.text


def test_plugin_task(tmp_path, repo, profile, monkeypatch):
    monkeypatch.chdir(repo / "examples/plugin_task")
    space = autotune.load_space("space.yaml")
    row = autotune.evaluate(
        {"arch.width": 16, "arch.depth": 2, "train.optimizer": "adam", "train.lr": 0.01},
        profile,
        space=space,
        work_dir=tmp_path,
    )
    assert row["status"] == "ok", row.get("error")
    assert row["accuracy"] > 0.5  # three classes: chance is 0.33


@pytest.mark.skipif(shutil.which("aarch64-linux-gnu-gcc") is None, reason="needs gcc-aarch64-linux-gnu")
def test_cross_compiles_for_raspberry_pi(tmp_path):
    rpi4 = autotune.load_profile("rpi4")
    model = build_model(MODEL_FAMILIES.get("mobilenet"), {"stages": 2}, (1, 8, 8), 10).eval()
    program, _, _ = export_program(model, (1, 8, 8))
    art = compile_artifact(program, profile=rpi4, out_dir=tmp_path, input_shape=(1, 8, 8))
    header = open(art.path, "rb").read(20)
    assert header[:4] == b"\x7fELF"
    assert int.from_bytes(header[18:20], "little") == 183  # EM_AARCH64
