"""The emulated device's lifecycle: start a TVM RPC tracker and server, report their status, stop them.

``start_device`` starts an RPC tracker (this machine's Python) and the emulated RPC server (QEMU user
mode on the root filesystem ``build_device`` makes), each in its own process group, and waits until
the server is registered. With ``native=True`` this machine's own Python serves instead: a loopback
device. Timings under emulation are not the device's: a profile that uses this device sets
``emulated: true``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType

from autotune.devices.build import DEFAULT_CACHE_DIR, build_device, cache_path
from autotune.errors import UserError

__all__ = ["EmulatedDevice", "device_status", "running_device", "start_device", "stop_device"]


def _state_file(cache: Path, key: str) -> Path:
    """The pid file of the device started with ``key``."""
    return cache / f"device-{key}.json"


def _port_open(host: str, port: int, timeout_s: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


#: What a server's command line holds (``autotune.devices.server``, ``tvm.exec.rpc_server``).
_SERVER = "server"


def _group(pgid: int, marker: str) -> list[int]:
    """Pids in process group ``pgid`` whose command line holds ``marker`` (a recycled pgid is not ours)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (comm)": state, ppid, pgrp, ...
            if int(fields[2]) == pgid and marker in (stat.parent / "cmdline").read_bytes().decode(errors="replace"):
                pids.append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):  # the process ended while we looked
            continue
    return pids


def _kill_group(pgid: int, marker: str, *, grace_s: float = 5.0) -> None:
    """SIGTERM process group ``pgid`` (SIGKILL after ``grace_s``) if it is still ours, and reap our child."""
    if _group(pgid, marker):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            while _group(pgid, marker) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _group(pgid, marker):
                os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):  # not our child, or already reaped
            os.waitpid(pgid, 0)


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""


@dataclass
class EmulatedDevice:
    """A running tracker and emulated RPC server; ``stop`` (or leaving the ``with`` block) ends both.

    Attributes:
        tracker_pid: leader of the tracker's process group.
        server_pid: leader of the RPC server's process group (the server, its worker and sessions).
    """

    host: str
    tracker_port: int
    key: str
    tracker_pid: int
    server_pid: int
    cache_dir: str

    @property
    def tracker(self) -> str:
        """The tracker address as a profile writes it (``host:port``)."""
        return f"{self.host}:{self.tracker_port}"

    @property
    def server_log(self) -> Path:
        """The emulated RPC server's log."""
        return cache_path(self.cache_dir) / f"server-{self.key}.log"

    def kill_server(self) -> None:
        """Kill the RPC server's process group only, as a device that is lost (the tracker stays)."""
        _kill_group(self.server_pid, _SERVER)

    def stop(self) -> None:
        """Kill the server's and the tracker's process groups and forget the pid file."""
        self.kill_server()
        _kill_group(self.tracker_pid, "rpc_tracker")
        state = _state_file(cache_path(self.cache_dir), self.key)
        if state.is_file() and json.loads(state.read_text()).get("server_pid") == self.server_pid:
            state.unlink()

    def __enter__(self) -> EmulatedDevice:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _spawn(cmd: list[str], log_path: Path, env: dict[str, str] | None = None) -> int:
    """Start ``cmd`` in a new session (its own process group), output to ``log_path``; return its pid."""
    with log_path.open("w") as out:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )
    return proc.pid


def start_device(
    cache_dir: str | os.PathLike[str] = DEFAULT_CACHE_DIR,
    *,
    key: str = "rpi4-emu",
    tracker_port: int = 9190,
    server_port: int = 9090,
    host: str = "127.0.0.1",
    threads: int = 1,
    timeout_s: float = 300.0,
    native: bool = False,
    server_module: str = "autotune.devices.server",
    env: dict[str, str] | None = None,
) -> EmulatedDevice:
    """Build the device if needed, start a tracker and the emulated server, and wait for registration.

    The emulated server imports TVM twice under QEMU (itself, then its worker): 15-50 s here. Logs go
    to ``<cache_dir>/tracker-<key>.log`` and ``server-<key>.log``, the pids to ``device-<key>.json``.

    Args:
        key: the device key the server registers; a profile's ``runner.key``.
        threads: TVM runtime threads on the device (``TVM_NUM_THREADS``); one keeps emulated timings
            steadier on a shared machine.
        timeout_s: how long to wait for the tracker and the server to be up.
        native: serve with this machine's own Python instead (no QEMU, nothing built): a loopback
            device, so the RPC path can be exercised and its cost measured against local timing.
        server_module: the server to run: autotune's (the default) adds the device's energy meter
            and the backends (``autotune.devices.server``); ``tvm.exec.rpc_server`` is TVM's own.
        env: more environment variables for the server.

    Raises:
        UserError: the tracker port is taken, the build failed, or the server is not registered in time.
    """
    wrapper = Path(sys.executable) if native else build_device(cache_dir)
    cache = cache_path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    if _port_open(host, tracker_port):
        raise UserError(
            f"port {host}:{tracker_port} is already in use, so no tracker can be started there",
            hint="stop the device that runs there (autotune device emulate stop) or choose another port",
        )
    deadline = time.monotonic() + timeout_s
    tracker_cmd = [sys.executable, "-m", "tvm.exec.rpc_tracker", f"--host={host}", f"--port={tracker_port}"]
    tracker_pid = _spawn([*tracker_cmd, f"--port-end={tracker_port + 1}"], cache / f"tracker-{key}.log")
    device = EmulatedDevice(host, tracker_port, key, tracker_pid, 0, str(cache))
    try:
        while not _port_open(host, tracker_port):
            if time.monotonic() > deadline or not _group(tracker_pid, "rpc_tracker"):
                raise UserError(f"the RPC tracker did not start: {_tail(cache / f'tracker-{key}.log')}")
            time.sleep(0.2)
        server_cmd = [str(wrapper), "-m", server_module, f"--tracker={host}:{tracker_port}", f"--key={key}"]
        device.server_pid = _spawn(
            [*server_cmd, f"--host={host}", f"--port={server_port}", f"--port-end={server_port + 10}"],
            device.server_log,
            env={**os.environ, "TVM_NUM_THREADS": str(threads), **(env or {})},
        )
        _state_file(cache, key).write_text(json.dumps(asdict(device)))
        while _registered(device) < 1:
            if time.monotonic() > deadline or not _group(device.server_pid, _SERVER):
                raise UserError(
                    f"the RPC server did not register with the tracker in {timeout_s:.0f} s: {_tail(device.server_log)}"
                )
            time.sleep(0.5)
    except BaseException:
        device.stop()
        raise
    return device


def _registered(device: EmulatedDevice) -> int:
    """Servers registered for the device's key; 0 while the tracker does not answer."""
    from autotune.measure.rpc import registered_servers

    try:
        return registered_servers(device.host, device.tracker_port).get(device.key, 0)
    except OSError:
        return 0


def _load_state(cache: Path, key: str) -> EmulatedDevice | None:
    state = _state_file(cache, key)
    return EmulatedDevice(**json.loads(state.read_text())) if state.is_file() else None


def device_status(cache_dir: str | os.PathLike[str] = DEFAULT_CACHE_DIR, *, key: str = "rpi4-emu") -> str:
    """One line on the device started from ``cache_dir`` with ``key`` (from its pid file)."""
    device = _load_state(cache_path(cache_dir), key)
    if device is None:
        return "not running (no pid file)"
    tracker_up = _group(device.tracker_pid, "rpc_tracker")
    server_up = _group(device.server_pid, _SERVER)
    servers = _registered(device) if tracker_up else 0
    return (
        f"tracker {device.tracker} {'up' if tracker_up else 'down'} (pid {device.tracker_pid}); "
        f"server {'up' if server_up else 'down'} (pid {device.server_pid}); "
        f"key {device.key!r}: {servers} registered"
    )


def running_device(
    cache_dir: str | os.PathLike[str] = DEFAULT_CACHE_DIR, *, key: str = "rpi4-emu"
) -> EmulatedDevice | None:
    """The device started from ``cache_dir`` with ``key`` if its RPC server is still running, else None."""
    device = _load_state(cache_path(cache_dir), key)
    return device if device is not None and _group(device.server_pid, _SERVER) else None


def stop_device(cache_dir: str | os.PathLike[str] = DEFAULT_CACHE_DIR, *, key: str = "rpi4-emu") -> bool:
    """Stop the device started from ``cache_dir`` with ``key``; False when there is no pid file."""
    device = _load_state(cache_path(cache_dir), key)
    if device is not None:
        device.stop()
    return device is not None
