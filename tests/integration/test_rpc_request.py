"""A session that never starts: the server ends it at ``session_timeout_s`` and the runner asks again.

The first server is a socket that speaks TVM's RPC handshake and then answers as TVM's server does
when a session's forked process hangs (``RPCSessionTimeoutError``, seen on the emulated device under
load); the second is a real ``tvm.rpc.Server`` on 127.0.0.1.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator

import pytest

from autotune.config.device_profile import Runner
from autotune.errors import CandidateFailed
from autotune.measure import rpc as rpc_runner

pytestmark = [pytest.mark.tvm]


@pytest.fixture
def hung_server() -> Iterator[tuple[str, int]]:
    """A server that accepts one client and ends its session as timed out."""
    from tvm.rpc import _ffi_api, base

    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            assert struct.unpack("<i", base.recvall(conn, 4))[0] == base.RPC_MAGIC
            (keylen,) = struct.unpack("<i", base.recvall(conn, 4))
            base.recvall(conn, keylen)
            conn.sendall(struct.pack("<ii", base.RPC_CODE_SUCCESS, len(b"server:k")) + b"server:k")
            conn.settimeout(5)
            conn.recv(1 << 16)  # the client's first request, never served
            _ffi_api.ReturnException(conn.fileno(), "RPCSessionTimeoutError: Your 1.0s session has expired")
            while conn.recv(1 << 16):  # until the client hangs up: closing first would reset it
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()
    listener.close()
    thread.join(timeout=10)


@pytest.fixture
def real_server() -> Iterator[tuple[str, int]]:
    from tvm import rpc

    server = rpc.Server("127.0.0.1", port=9300, port_end=9400)
    yield "127.0.0.1", server.port
    server.terminate()


def _runner(retries: int) -> Runner:
    return Runner(kind="rpc", tracker="127.0.0.1:1", key="k", retries=retries, session_timeout_s=30)


def test_a_session_that_never_starts_is_requested_again(monkeypatch, hung_server, real_server, caplog):
    offered = iter([hung_server, real_server])
    monkeypatch.setattr(rpc_runner, "_ask_tracker", lambda runner, stage: (*next(offered), ""))
    remote = rpc_runner._request(_runner(retries=1), "measure")
    assert int(remote.get_function("runtime.NumThreads")()) >= 1  # the real server's session answers
    assert "did not start a session" in caplog.text and "attempt 1 of 2" in caplog.text


def test_without_retries_the_timeout_is_the_reason(monkeypatch, hung_server):
    monkeypatch.setattr(rpc_runner, "_ask_tracker", lambda runner, stage: (*hung_server, ""))
    with pytest.raises(CandidateFailed, match="cannot open a session on 127.0.0.1:.*RPCSessionTimeoutError") as info:
        rpc_runner._request(_runner(retries=0), "measure")
    assert info.value.stage == "measure"
