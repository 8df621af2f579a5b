"""A search measured over TVM RPC on a loopback device: a real tracker and RPC server on 127.0.0.1,
served by this machine's own Python (``emulate.start_device(native=True)``), lost mid-run."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from conftest import search_args

import autotune
from autotune import emulate

pytestmark = [pytest.mark.slow, pytest.mark.tvm, pytest.mark.ray]

KEY = "loopback-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def loopback(tmp_path) -> Iterator[emulate.EmulatedDevice]:
    ports = dict(tracker_port=_free_port(), server_port=_free_port())
    with emulate.start_device(tmp_path / "device", key=KEY, native=True, timeout_s=120, **ports) as dev:
        yield dev


def test_search_over_rpc_records_a_lost_device_and_finishes(tmp_path, repo, loopback, write_yaml):
    fast = (repo / "tests/fixtures/host_fast.yaml").read_text().replace("name: host_fast", "name: loopback")
    runner = f"runner: {{kind: rpc, tracker: '{loopback.tracker}', key: {KEY}, request_timeout_s: 3, retries: 0}}\n"
    profile = write_yaml(fast + runner, name="loopback.yaml")
    res = tmp_path / "results"
    args = search_args(res, "lost", "--concurrency", "1", "--no-early-stopping", trials=2)
    args[args.index("--device") + 1] = str(profile)
    proc = subprocess.Popen(
        [sys.executable, "-m", "autotune.cli", *args], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    board = res / "lost" / "leaderboard.csv"
    deadline = time.monotonic() + 600
    while not (board.exists() and len(autotune.read_leaderboard(res / "lost")) >= 1):
        assert proc.poll() is None, proc.communicate()[1].decode()[-3000:]
        assert time.monotonic() < deadline, "no trial finished in 10 minutes"
        time.sleep(0.1)
    loopback.kill_server()  # the device goes away while the second trial trains
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()[-3000:]

    first, second = autotune.read_leaderboard(res / "lost")
    assert first["status"] == "ok", first.get("error")
    assert first["timing"] == "device" and first["latency_ms"] > 0 and first["max_abs_diff"] < 1e-4
    assert first["cpu_model"] == f"rpc:{KEY}"
    assert second["status"] == "failed"
    assert f"no free device for key '{KEY}'" in second["error"]  # the reason, with the stage before it
