"""The TVM RPC tracker, asked directly: registered servers by key, and the ``rpc`` runner's pre-flight.

TVM's own ``TrackerSession`` retries an unreachable tracker for 60 s; these calls fail within seconds.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Iterator

from autotune.config.device_profile import Runner
from autotune.errors import UserError

__all__ = ["check_tracker", "registered_servers", "tracker"]

#: Seconds to wait for the tracker to accept a connection and answer a summary.
_TRACKER_TIMEOUT_S = 3.0


@contextlib.contextmanager
def tracker(host: str, port: int) -> Iterator[socket.socket]:
    """A connection to the tracker after TVM's magic handshake (``TrackerSession`` retries for 60 s).

    Raises:
        OSError: the tracker is unreachable, silent for ``_TRACKER_TIMEOUT_S`` or not a tracker.
    """
    with socket.create_connection((host, port), timeout=_TRACKER_TIMEOUT_S) as sock:
        from tvm.rpc import base  # after connecting: an unreachable tracker fails without importing TVM

        sock.sendall(struct.pack("<i", base.RPC_TRACKER_MAGIC))
        if struct.unpack("<i", base.recvall(sock, 4))[0] != base.RPC_TRACKER_MAGIC:
            raise OSError(f"{host}:{port} is not a TVM RPC tracker")
        yield sock


def registered_servers(host: str, port: int) -> dict[str, int]:
    """Count the RPC servers registered at the tracker, by device key (busy ones included).

    Raises:
        OSError: the tracker cannot be reached or does not answer within a few seconds.
    """
    with tracker(host, port) as sock:
        from tvm.rpc import base

        base.sendjson(sock, [base.TrackerCode.SUMMARY])
        code, summary = base.recvjson(sock)
    if code != base.TrackerCode.SUCCESS:
        raise OSError(f"the tracker at {host}:{port} answered {code} to a summary request")
    counts: dict[str, int] = {}
    for server in summary["server_info"]:
        key = str(server["key"]).removeprefix("server:")
        counts[key] = counts.get(key, 0) + 1
    return counts


def check_tracker(runner: Runner, *, file: str | None = None) -> None:
    """Check, in a few seconds, that the tracker answers and a server is registered for the key.

    Call it before a search starts; a device that is merely busy passes.

    Args:
        file: the profile's path, named in the error.

    Raises:
        UserError: the tracker is unreachable, or no server is registered for ``runner.key``.
    """
    host, port = runner.tracker_address
    query = f"query it with: python -m tvm.exec.query_rpc_tracker --host {host} --port {port}"
    try:
        servers = registered_servers(host, port)
    except OSError as err:
        raise UserError(
            f"cannot reach the RPC tracker at {host}:{port} (for key {runner.key!r}): {err}",
            file=file,
            key="runner.tracker",
            hint=f"start the tracker and the device's RPC server, then {query}",
        ) from None
    if servers.get(str(runner.key), 0) < 1:
        known = ", ".join(sorted(servers)) or "none"
        raise UserError(
            f"no RPC server is registered for key {runner.key!r} at the tracker {host}:{port} (keys: {known})",
            file=file,
            key="runner.key",
            hint=f"start the device's server with --tracker {host}:{port} --key {runner.key}, then {query}",
        )
