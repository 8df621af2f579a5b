"""An emulated Raspberry-Pi-like aarch64 device: a TVM RPC server under QEMU user mode, on this machine.

``build_device`` makes (once) an aarch64 root filesystem with Debian's CPython 3.11 and TVM's aarch64
wheels; ``start_device`` starts an RPC tracker (this machine's Python) and the emulated RPC server, each
in its own process group, and waits until the server is registered. No binfmt_misc, chroot or
debootstrap is needed: ``qemu-aarch64-static -L ROOT`` maps the root filesystem, and the Python wrapper
script passed as ``argv[0]`` (``-0``) lets the server re-exec ``sys.executable`` for its workers.

Timings under emulation are not the device's: a profile that uses this device sets ``emulated: true``.

Command line: ``python -m autotune.emulate build|start|stop|status [--cache-dir DIR] [--key KEY] ...``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType

from autotune.errors import UserError

__all__ = ["DEFAULT_CACHE_DIR", "WHEELS", "EmulatedDevice", "build_device", "device_status", "main", "start_device"]

log = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = "~/.cache/autotune/emulated-aarch64"
#: aarch64 wheels installed into the root filesystem; newer apache-tvm-ffi releases segfault with TVM 0.27.
WHEELS = (
    "apache-tvm==0.27.0.post1",
    "apache-tvm-ffi==0.1.14.post1",
    "numpy",
    "ml_dtypes",
    "typing_extensions",
    "psutil",
    "cloudpickle",
    "tornado",
)
#: Debian arm64 packages whose dependency closure makes the root filesystem.
_DEBS = ("python3.11:arm64", "libstdc++6:arm64", "libgcc-s1:arm64")
_PIP_PLATFORM = (
    "--only-binary=:all:",
    "--python-version=3.11",
    "--implementation=cp",
    "--abi=cp311",
    "--abi=abi3",
    "--abi=none",
    "--platform=manylinux_2_28_aarch64",
    "--platform=manylinux2014_aarch64",
    "--platform=manylinux_2_17_aarch64",
    "--platform=any",
)
#: Host commands the device and the rpi4 profiles need, and the Debian package that provides each.
_HOST_TOOLS = {"qemu-aarch64-static": "qemu-user-static", "aarch64-linux-gnu-gcc": "gcc-aarch64-linux-gnu"}
_WRAPPER = "python3.11-aarch64"
_READY = ".autotune-ready.json"


def _cache(cache_dir: str | os.PathLike[str]) -> Path:
    return Path(cache_dir).expanduser().resolve()


def _state_file(cache: Path, key: str) -> Path:
    """The pid file of the device started with ``key``."""
    return cache / f"device-{key}.json"


def _run(cmd: Sequence[str], *, cwd: Path | None = None, timeout_s: float = 900) -> str:
    """Run a build command; a failure becomes a ``UserError`` that shows the command and its last output."""
    log.debug("running %s", " ".join(cmd))
    try:
        done = subprocess.run(
            list(cmd), cwd=cwd, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise UserError(f"building the emulated device failed: {' '.join(cmd[:3])} ...: {err}") from None
    if done.returncode != 0:
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        raise UserError(
            f"building the emulated device failed: {' '.join(cmd[:4])} ... exited {done.returncode}: {tail}",
            hint="it needs root (apt-get) and access to Debian's package archive and PyPI",
        )
    return done.stdout


def _apt_install(packages: Sequence[str]) -> None:
    if os.geteuid() != 0:
        raise UserError(
            f"the emulated device needs {', '.join(packages)}, and only root can install them",
            hint=f"run: sudo apt-get install -y {' '.join(packages)}",
        )
    try:
        _run(["apt-get", "install", "-y", "--no-install-recommends", *packages])
    except UserError:  # stale or missing package lists
        _run(["apt-get", "update"])
        _run(["apt-get", "install", "-y", "--no-install-recommends", *packages])


def _arm64_packages() -> list[str]:
    """The arm64 dependency closure of ``_DEBS`` (about 34 packages), enabling arm64 in dpkg if needed."""
    if "arm64" not in _run(["dpkg", "--print-foreign-architectures"]).split():
        if os.geteuid() != 0:
            raise UserError("the emulated device needs arm64 packages", hint="run: sudo dpkg --add-architecture arm64")
        _run(["dpkg", "--add-architecture", "arm64"])
        _run(["apt-get", "update"])
    cmd = ["apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts"]
    cmd += ["--no-breaks", "--no-replaces", "--no-enhances", *_DEBS]
    if "python3.11:arm64" not in _run(cmd).split():  # the arm64 package lists were never downloaded
        _run(["apt-get", "update"])
    # top-level lines are package names; dpkg, tar and install-info are Essential tools nothing here runs
    skip = ("dpkg:", "tar:", "install-info:")
    return sorted({n for n in _run(cmd).splitlines() if n.endswith(":arm64") and not n.startswith((" ", *skip))})


@contextlib.contextmanager
def _locked(cache: Path) -> Iterator[None]:
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / ".build.lock").open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def build_device(cache_dir: str | os.PathLike[str] = DEFAULT_CACHE_DIR) -> Path:
    """Build the aarch64 root filesystem with Python and TVM once; later calls return at once.

    Installs ``qemu-user-static`` and ``gcc-aarch64-linux-gnu`` (the cross compiler the rpi4 profiles
    name) with apt-get when missing (as root), enables the arm64 architecture in dpkg, downloads the
    arm64 ``.deb`` closure of Python 3.11 (~14 MB) and unpacks it with ``dpkg -x``, then downloads the
    aarch64 wheels of ``WHEELS`` (~110 MB) and installs them where the emulated Python looks. About
    half a minute with warm caches; 450 MB on disk.

    Args:
        cache_dir: where the root filesystem, downloads, logs and pid file live.

    Returns:
        The wrapper script that runs the emulated ``python3.11``.

    Raises:
        UserError: not root and a package is missing, or a download or install failed.
    """
    cache = _cache(cache_dir)
    root, work = cache / "arm64root", cache / "emuwork"
    wrapper, ready = root / _WRAPPER, root / _READY
    with _locked(cache):
        missing = [pkg for tool, pkg in _HOST_TOOLS.items() if shutil.which(tool) is None]
        if missing:
            _apt_install(missing)
        if ready.is_file() and json.loads(ready.read_text()).get("wheels") == list(WHEELS):
            return wrapper
        t0 = time.perf_counter()
        debs, wheels = work / "debs", work / "whl"
        for d in (debs, wheels, root):
            d.mkdir(parents=True, exist_ok=True)
        _run(["apt-get", "download", *_arm64_packages()], cwd=debs)
        for deb in sorted(debs.glob("*.deb")):
            _run(["dpkg", "-x", str(deb), str(root)])
        pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
        _run([*pip, "download", "--no-deps", *_PIP_PLATFORM, "-d", str(wheels), *WHEELS])
        # Debian's site.py looks here; under `qemu -L ROOT` it also shadows the host's own site-packages.
        site = root / "usr/local/lib/python3.11/dist-packages"
        files = [str(w) for w in sorted(wheels.glob("*.whl"))]
        _run([*pip, "install", "--no-deps", "--no-index", "--upgrade", "--target", str(site), *_PIP_PLATFORM, *files])
        qemu = shutil.which("qemu-aarch64-static")
        wrapper.write_text(f'#!/bin/sh\nexec {qemu} -L "{root}" -0 "{wrapper}" "{root}/usr/bin/python3.11" "$@"\n')
        wrapper.chmod(0o755)
        version = _run([str(wrapper), "-c", "import tvm, tvm.rpc; print(tvm.__version__)"], timeout_s=300).strip()
        ready.write_text(json.dumps({"wheels": list(WHEELS), "tvm": version}))
        log.info("built the emulated aarch64 device (TVM %s) in %.0f s", version, time.perf_counter() - t0)
    return wrapper


def _port_open(host: str, port: int, timeout_s: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


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
        return _cache(self.cache_dir) / f"server-{self.key}.log"

    def kill_server(self) -> None:
        """Kill the RPC server's process group only, as a device that is lost (the tracker stays)."""
        _kill_group(self.server_pid, "rpc_server")

    def stop(self) -> None:
        """Kill the server's and the tracker's process groups and forget the pid file."""
        self.kill_server()
        _kill_group(self.tracker_pid, "rpc_tracker")
        state = _state_file(_cache(self.cache_dir), self.key)
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
    server_module: str = "tvm.exec.rpc_server",
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
        server_module: the server to run (``autotune.measure.rpc_server`` adds the device's energy
            meter; native only: the emulated root filesystem has TVM but not autotune).
        env: more environment variables for the server.

    Raises:
        UserError: the tracker port is taken, the build failed, or the server is not registered in time.
    """
    wrapper = Path(sys.executable) if native else build_device(cache_dir)
    cache = _cache(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    if _port_open(host, tracker_port):
        raise UserError(
            f"port {host}:{tracker_port} is already in use, so no tracker can be started there",
            hint="stop the device that runs there (python -m autotune.emulate stop) or choose another port",
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
            if time.monotonic() > deadline or not _group(device.server_pid, "rpc_server"):
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
    device = _load_state(_cache(cache_dir), key)
    if device is None:
        return "not running (no pid file)"
    tracker_up = _group(device.tracker_pid, "rpc_tracker")
    server_up = _group(device.server_pid, "rpc_server")
    servers = _registered(device) if tracker_up else 0
    return (
        f"tracker {device.tracker} {'up' if tracker_up else 'down'} (pid {device.tracker_pid}); "
        f"server {'up' if server_up else 'down'} (pid {device.server_pid}); "
        f"key {device.key!r}: {servers} registered"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``build`` / ``start`` / ``stop`` / ``status`` of the emulated device; returns the exit code (1: user error)."""
    parser = argparse.ArgumentParser(prog="python -m autotune.emulate", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("build", "start", "stop", "status"))
    parser.add_argument("--cache-dir", default=DEFAULT_CACHE_DIR, help="default: %(default)s")
    parser.add_argument("--key", default="rpi4-emu", help="device key (default: %(default)s)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (start only)")
    parser.add_argument("--tracker-port", type=int, default=9190, help="(start only)")
    parser.add_argument("--server-port", type=int, default=9090, help="(start only)")
    parser.add_argument("--threads", type=int, default=1, help="TVM runtime threads on the device (start only)")
    parser.add_argument("--native", action="store_true", help="a loopback device: this machine's Python, no QEMU")
    args = parser.parse_args(argv)
    cache = _cache(args.cache_dir)
    try:
        if args.action == "build":
            print(f"built: {build_device(cache)}")
        elif args.action == "start":
            running = _load_state(cache, args.key)
            if running and _group(running.server_pid, "rpc_server"):
                print(f"already running: {device_status(cache, key=args.key)}")
                return 0
            t0 = time.perf_counter()
            device = start_device(
                cache,
                key=args.key,
                tracker_port=args.tracker_port,
                server_port=args.server_port,
                host=args.host,
                threads=args.threads,
                native=args.native,
            )
            print(f"started in {time.perf_counter() - t0:.0f} s: tracker {device.tracker}, key {device.key!r}")
            print(f"query it: python -m tvm.exec.query_rpc_tracker --host {device.host} --port {device.tracker_port}")
        elif args.action == "stop":
            device = _load_state(cache, args.key)
            if device is not None:
                device.stop()
            print("stopped" if device else "not running (no pid file)")
        else:
            print(device_status(cache, key=args.key))
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
