"""The profile's runner section (local or rpc) and the tracker preflight check."""

from __future__ import annotations

import socket

import pytest

import autotune
from autotune.errors import UserError
from autotune.measure.tracker import check_tracker

PROFILE = """
name: p
target: {kind: llvm, mtriple: aarch64-linux-gnu, mcpu: cortex-a72}
compiler: aarch64-linux-gnu-gcc
power: {idle_w: 1, active_w: 2, source: datasheet}
"""

RPC = "runner: {kind: rpc, tracker: '127.0.0.1:9190', key: rpi4, request_timeout_s: 5, retries: 2}\n"


def test_runner_defaults_to_local(write_yaml):
    assert autotune.load_profile(write_yaml(PROFILE)).runner.kind == "local"


def test_rpc_runner_loads(write_yaml):
    runner = autotune.load_profile(write_yaml(PROFILE + RPC)).runner
    assert (runner.kind, runner.key, runner.tracker_address) == ("rpc", "rpi4", ("127.0.0.1", 9190))
    assert (runner.request_timeout_s, runner.retries, runner.session_timeout_s, runner.emulated) == (5, 2, 120, False)


def test_shipped_emulated_profile_loads():
    profile = autotune.load_profile("rpi4_emulated")
    assert profile.runner.kind == "rpc" and profile.runner.emulated
    assert profile.runner.tracker_address == ("127.0.0.1", 9190)


BAD_RUNNERS = [
    # (runner section, key the message must name, words it must contain)
    ("{kind: rpc, tracker: localhost, key: k}", "runner.tracker", "host:port"),
    ("{kind: rpc, tracker: '127.0.0.1:70000', key: k}", "runner.tracker", "65535"),
    ("{kind: rpc, tracker: ':9190', key: k}", "runner.tracker", "host:port"),
    ("{kind: rpc, tracker: '127.0.0.1:9190'}", "runner", "needs key"),
    ("{kind: rpc, key: k}", "runner", "needs tracker"),
    ("{kind: rpc, tracker: '127.0.0.1:9190', key: ''}", "runner.key", "at least 1"),
    ("{kind: local, key: k}", "runner", "no RPC settings, got key"),
    ("{kind: rcp}", "runner.kind", "'local' or 'rpc'"),
    ("{kind: rpc, tracker: '127.0.0.1:9190', key: k, retries: -1}", "runner.retries", "greater than or equal"),
    ("{kind: rpc, tracker: '127.0.0.1:9190', key: k, request_timeout_s: 0}", "runner.request_timeout_s", "greater"),
    ("{kind: rpc, tracker: '127.0.0.1:9190', key: k, trackr: x}", "runner.trackr", "did you mean 'tracker'"),
]


@pytest.mark.parametrize(("section", "key", "words"), BAD_RUNNERS)
def test_bad_runner_names_the_key(write_yaml, section, key, words):
    path = write_yaml(PROFILE + f"runner: {section}\n")
    with pytest.raises(UserError) as info:
        autotune.load_profile(path)
    assert info.value.key == key
    assert words in str(info.value)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_check_tracker_on_a_closed_port_fails_fast(write_yaml, monkeypatch):
    """One bounded connection attempt, not TVM's ``TrackerSession`` (which retries for 60 s)."""
    from autotune.measure import tracker as tracker_module

    port = _closed_port()
    runner = autotune.load_profile(write_yaml(PROFILE + RPC.replace("9190", str(port)))).runner
    attempts = []
    connect = socket.create_connection

    def counted(address, timeout=None, *args, **kwargs):
        attempts.append((address, timeout))
        return connect(address, timeout, *args, **kwargs)

    monkeypatch.setattr(tracker_module.socket, "create_connection", counted)
    with pytest.raises(UserError, match="runner.tracker") as info:
        check_tracker(runner, file="p.yaml")
    assert attempts == [(("127.0.0.1", port), tracker_module._TRACKER_TIMEOUT_S)]  # once, with a timeout
    message = str(info.value)
    assert f"127.0.0.1:{port}" in message and "'rpi4'" in message
    assert f"python -m tvm.exec.query_rpc_tracker --host 127.0.0.1 --port {port}" in message
