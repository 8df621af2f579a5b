"""Searches measured over TVM RPC on a loopback device: a real tracker and RPC server on 127.0.0.1,
served by this machine's own Python (``devices.start_device(native=True)``): one that loses the device
mid-run, and one that times every candidate on two devices."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import numpy as np
import optuna
import pytest
from conftest import search_args

import autotune
from autotune import devices
from autotune.errors import UserError

pytestmark = [pytest.mark.slow, pytest.mark.tvm, pytest.mark.ray]

KEY = "loopback-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(where) -> devices.EmulatedDevice:
    # a port found free can be taken before the tracker binds it (CI saw "the RPC tracker did not
    # start" once): a second try on other ports, and never the same port twice
    def attempt(n: int) -> devices.EmulatedDevice:
        tracker = _free_port()
        ports = dict(tracker_port=tracker, server_port=next(p for p in iter(_free_port, None) if p != tracker))
        return devices.start_device(where / f"device{n}", key=KEY, native=True, timeout_s=120, **ports)

    try:
        return attempt(0)
    except UserError:
        return attempt(1)


@pytest.fixture(scope="module")
def loopback(tmp_path_factory) -> Iterator[devices.EmulatedDevice]:
    """One device for the module's tests (about 20 s to start); the test that kills one has its own."""
    with _start(tmp_path_factory.mktemp("loopback")) as dev:
        yield dev


@pytest.fixture
def doomed(tmp_path) -> Iterator[devices.EmulatedDevice]:
    with _start(tmp_path) as dev:
        yield dev


def test_search_over_rpc_records_a_lost_device_and_finishes(tmp_path, repo, doomed, write_yaml):
    fast = (repo / "tests/fixtures/host_fast.yaml").read_text().replace("name: host_fast", "name: loopback")
    runner = f"runner: {{kind: rpc, tracker: '{doomed.tracker}', key: {KEY}, request_timeout_s: 3, retries: 0}}\n"
    profile = write_yaml(fast + runner, name="loopback.yaml")
    res = tmp_path / "results"
    args = search_args(res, "lost", "--concurrency", "1", "--no-early-stopping", trials=2)
    args[args.index("--device") + 1] = str(profile)
    proc = subprocess.Popen(
        [sys.executable, "-m", "autotune.cli", *args], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    board = res / "lost" / "leaderboard.csv"
    deadline = time.monotonic() + 600  # a guard against a hang, not a timing: the asserts are on the rows

    def finished() -> bool:
        return board.exists() and len(autotune.read_leaderboard(res / "lost")) >= 1

    while not finished() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, proc.communicate()[1].decode()[-3000:]  # still running: the second trial
    assert finished(), "no trial's row before the device was killed"
    doomed.kill_server()  # the device goes away while the second trial trains
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()[-3000:]

    first, second = autotune.read_leaderboard(res / "lost")
    assert first["status"] == "ok", first.get("error")
    assert first["timing"] == "device" and first["latency_ms"] > 0
    assert first["max_abs_diff"] < 1e-4
    assert first["cpu_model"] == f"rpc:{KEY}"
    assert second["status"] == "failed"
    assert f"no free device for key '{KEY}'" in second["error"]  # the reason, with the stage before it


def test_two_device_search_times_every_candidate_on_both(tmp_path, repo, loopback, write_yaml):
    fast = (repo / "tests/fixtures/host_fast.yaml").read_text().replace("name: host_fast", "name: loop")
    runner = f"runner: {{kind: rpc, tracker: '{loopback.tracker}', key: {KEY}, request_timeout_s: 10}}\n"
    other = write_yaml(fast + runner, name="loop.yaml")
    space_text = (repo / "tests/fixtures/tiny_cnn.yaml").read_text()
    objectives, constraints = "{accuracy: max, latency_ms: min", "{latency_ms: {max: 50}"
    space_text = space_text.replace(objectives, objectives + ", latency_ms@loop: min")
    space_text = space_text.replace(constraints, constraints + ", latency_ms@loop: {max: 50}")
    space = write_yaml(space_text, name="space.yaml")
    res = tmp_path / "results"
    rows = autotune.search(
        space, [repo / "tests/fixtures/host_fast.yaml", other], name="two", results_dir=res, trials=2,
        concurrency=1, early_stopping=False, reference_every=0,
    )  # fmt: skip
    assert len(rows) == 2
    for row in autotune.read_leaderboard(res / "two"):  # as a reader of the CSV sees it
        assert row["status"] == "ok", row.get("error")
        assert row["device"] == "host_fast" and row["timing"] == "local" and row["latency_ms"] > 0
        assert row["timing@loop"] == "device" and row["latency_ms@loop"] > 0
        assert row["max_abs_diff@loop"] < 1e-4  # checked against PyTorch on that device too
        assert row["latency_ci_high_ms@loop"] >= row["latency_ms@loop"] >= row["latency_ci_low_ms@loop"]
        assert row["energy_source@loop"] == "model" and row["pareto_rank@loop"] >= 1 and row["pareto_rank"] >= 1
    header = (res / "two" / "leaderboard.csv").read_text().splitlines()[0].split(",")
    fixed = header.index("finished_at")
    device_cols = [c for c in header if "@" in c]
    assert header[fixed + 1 : fixed + 1 + len(device_cols)] == sorted(device_cols)  # after the fixed columns
    study = optuna.load_study(study_name="autotune", storage=f"sqlite:///{res / 'two' / 'study.db'}")
    assert len(study.directions) == 3  # the second device's latency is an objective of the study
    assert all(len(t.values) == 3 for t in study.trials)
    assert json.loads((res / "two" / "run.json").read_text())["devices"] == ["loop"]
    assert (res / "two" / "profile@loop.yaml").exists()  # --resume measures on the same devices
    again = autotune.search(name="two", results_dir=res, resume=True)  # all done: nothing runs, nothing lost

    def key(r):
        return r["trial_id"], r["latency_ms@loop"]

    assert [key(r) for r in again] == [key(r) for r in rows]


def test_objective_naming_an_unknown_device_is_refused(tmp_path, repo, write_yaml):
    space_text = (
        (repo / "tests/fixtures/tiny_cnn.yaml")
        .read_text()
        .replace("objectives: {accuracy: max, latency_ms: min}", "objectives: {accuracy: max, latency_ms@rpi5: min}")
    )
    space = write_yaml(space_text, name="space.yaml")
    with pytest.raises(autotune.UserError, match="'latency_ms@rpi5' names a device or backend that is not in"):
        autotune.search(space, repo / "tests/fixtures/host_fast.yaml", name="x", results_dir=tmp_path / "r")
    assert not (tmp_path / "r" / "x").exists()


def _still_rapl(root):
    """A powercap tree whose package counter stands still: what the device reads is exact (0 W), with
    no wall-clock rate to assert (the meter's units are unit-tested in tests/unit/measure/test_energy.py)."""
    d = root / "intel-rapl:0"
    d.mkdir(parents=True)
    (d / "max_energy_range_uj").write_text(str(2**40))
    (d / "energy_uj").write_text("123456789")


def test_energy_is_read_on_the_device_through_the_session(tmp_path, repo):
    from autotune.compiler import compile_artifact
    from autotune.exporter import export_program
    from autotune.measure import RUNNERS
    from autotune.models import MODEL_FAMILIES, build_model

    _still_rapl(tmp_path / "powercap")
    ports = dict(tracker_port=_free_port(), server_port=_free_port())
    env = {"AUTOTUNE_POWERCAP": str(tmp_path / "powercap")}
    with devices.start_device(
        tmp_path / "device", key="metered", native=True, timeout_s=120,
        server_module="autotune.devices.server", env=env, **ports,
    ) as dev:  # fmt: skip
        host = autotune.load_profile(repo / "tests/fixtures/host_fast.yaml")
        runner = host.runner.model_copy(update={"kind": "rpc", "tracker": dev.tracker, "key": "metered"})
        timing = host.measure.model_copy(update={"min_repeat_ms": 100})  # a window of 0.5 s, not 5 ms
        profile = host.model_copy(update={"runner": runner, "measure": timing})
        model = build_model(MODEL_FAMILIES.get("mobilenet"), {"stages": 1, "width_mult": 0.5}, (1, 8, 8), 10)
        program, _, _ = export_program(model.eval(), (1, 8, 8))
        art = compile_artifact(program, profile=host, out_dir=tmp_path / "art", input_shape=(1, 8, 8))
        x = np.zeros((1, 1, 8, 8), np.float32)
        m = RUNNERS.get("rpc").measure(art, profile, x)
        modelled = RUNNERS.get("rpc").measure(art, profile.model_copy(update={"meter": "none"}), x)
    assert m.energy_source == "rapl" and m.timing == "device"
    assert m.idle_w == 0.0  # the device's own counter, read over the session (not the profile's idle_w)
    assert m.energy_mj == 0.0  # a still counter: nothing above idle
    assert modelled.energy_source == "model" and modelled.idle_w == profile.power.idle_w


#: Tune a tiny MobileNet on the RPC device in a fresh interpreter (argv: tracker, key, database, out):
#: a fork of this test process, whose TVM runtime pool earlier tests started, can crash in TVM.
TUNE_REMOTE = """
import dataclasses, json, sys
import torch
import autotune
from autotune.compiler import compile_artifact
from autotune.exporter import export_program
from autotune.models import MODEL_FAMILIES, build_model
from autotune.tuning import TuningRequest

tracker, key, db, out = sys.argv[1:]
host = autotune.load_profile("tests/fixtures/host_fast.yaml")
runner = host.runner.model_copy(update={"kind": "rpc", "tracker": tracker, "key": key})
profile = host.model_copy(update={"runner": runner, "compiler": "gcc"})
torch.manual_seed(0)
model = build_model(MODEL_FAMILIES.get("mobilenet"), {"stages": 1, "width_mult": 0.5}, (1, 8, 8), 10)
program, _, _ = export_program(model.eval(), (1, 8, 8))
request = TuningRequest(trials=8, db_dir=db)
art = compile_artifact(program, profile=profile, out_dir=out, input_shape=(1, 8, 8), tuning=request)
print(json.dumps(dataclasses.asdict(art)))
"""


def test_tuning_measures_on_the_rpc_device(tmp_path, repo, loopback):
    """MetaSchedule's RPC runner times the candidates on the device; the builder exports with the
    profile's compiler (here the native gcc, through the same cross-compiler path)."""
    from autotune.tuning import TuningDatabase

    db = TuningDatabase(tmp_path / "db")
    loads = loopback.server_log.read_text().count("load_module")
    args = [loopback.tracker, KEY, str(db.directory), str(tmp_path / "art")]
    env = {**os.environ, "TVM_NUM_THREADS": "1"}
    r = subprocess.run(
        [sys.executable, "-c", TUNE_REMOTE, *args], cwd=repo, capture_output=True, text=True, timeout=600, env=env
    )
    assert r.returncode == 0, r.stderr[-3000:]
    art = json.loads(r.stdout.strip().splitlines()[-1])
    assert art["tuned_trials"] > 0 and db.record_count() == art["tuned_trials"]
    assert loopback.server_log.read_text().count("load_module") >= loads + art["tuned_trials"]  # each build ran there


def test_a_backend_runs_where_the_device_server_offers_it(tmp_path, repo, loopback):
    """autotune's server builds and times ONNX Runtime on the device; TVM's plain server cannot."""
    from autotune.backends import BACKENDS, Job
    from autotune.backends.base import NotOnDevice
    from autotune.models import MODEL_FAMILIES, build_model
    from autotune.quiet import QuietLock

    host = autotune.load_profile(repo / "tests/fixtures/host_fast.yaml")
    model = build_model(MODEL_FAMILIES.get("mobilenet"), {"stages": 1, "width_mult": 0.5}, (1, 8, 8), 10).eval()
    xs = np.random.default_rng(0).standard_normal((4, 1, 8, 8)).astype(np.float32)

    def job(tracker: str, key: str, out: str) -> Job:
        runner = host.runner.model_copy(update={"kind": "rpc", "tracker": tracker, "key": key})
        return Job(model=model, profile=host.model_copy(update={"runner": runner}), inputs=xs,
                   out_dir=tmp_path / out, lock=QuietLock(None))  # fmt: skip

    result = BACKENDS.get("onnxruntime").deploy(job(loopback.tracker, KEY, "ours"))
    assert result.measurement.timing == "device" and result.measurement.latency_ms > 0
    assert result.numerics is not None and result.numerics.max_abs_diff < 1e-4
    ports = dict(tracker_port=_free_port(), server_port=_free_port())
    with devices.start_device(tmp_path / "plain", key="plain", native=True, timeout_s=120,
                              server_module="tvm.exec.rpc_server", **ports) as plain:  # fmt: skip
        with pytest.raises(NotOnDevice, match="not on device: its RPC server is not autotune's"):
            BACKENDS.get("onnxruntime").deploy(job(plain.tracker, "plain", "plain"))


def test_profile_a_trial_on_an_rpc_device(tmp_path, repo, loopback, write_yaml):
    """``autotune profile --device`` with an rpc profile: the kernels are timed on the device."""
    space = write_yaml(
        """
        name: profiled
        task: {data: synthetic, model: mobilenet, input_shape: [3, 32, 32], num_classes: 10}
        arch: {stages: 2, width_mult: 0.5, kernel: 3, expand: 2, se: false, act: relu}
        objectives: {macs: max, latency_ms: min}
        """,
        name="space.yaml",
    )
    (row,) = autotune.search(space, repo / "tests/fixtures/host_fast.yaml", name="p", results_dir=tmp_path, trials=1)
    fast = (repo / "tests/fixtures/host_fast.yaml").read_text().replace("name: host_fast", "name: over_rpc")
    runner = f"runner: {{kind: rpc, tracker: '{loopback.tracker}', key: {KEY}, request_timeout_s: 10}}\n"
    device = write_yaml(fast + runner, name="over_rpc.yaml")
    r = subprocess.run([sys.executable, "-m", "autotune.cli", "profile", str(tmp_path / "p"), row["trial_id"],
                        "--device", str(device), "--json"], capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    prof = json.loads(r.stdout)
    assert prof["device"] == "over_rpc" and len(prof["kernels"]) >= 4
    assert all(k["us_per_call"] > 0 for k in prof["kernels"])
    assert prof["overhead_ms"] == pytest.approx(prof["latency_ms"] - prof["kernels_ms"])
    stopped = write_yaml(fast + runner.replace(KEY, "nobody").replace("10}", "1}"), name="nobody.yaml")
    bad = subprocess.run([sys.executable, "-m", "autotune.cli", "profile", str(tmp_path / "p"), row["trial_id"],
                          "--device", str(stopped)], capture_output=True, text=True)  # fmt: skip
    assert bad.returncode == 1 and "nobody" in bad.stderr and "Traceback" not in bad.stderr
