"""A TVM RPC server whose device's energy meter can be read through the session.

Run it on the device in place of ``python -m tvm.exec.rpc_server`` (same options, plus ``--meter``)::

    python -m autotune.devices.server --tracker HOST:9190 --key rpi5 --host 127.0.0.1 --port 9090

It is TVM's own server with two more global functions in every session, which the ``rpc`` runner
calls around its timing window (``autotune.measure.rpc``):

- ``autotune.meter.name()``: the meter's name (``rapl``, ``nvml``, ``jetson``), ``""`` if none reads;
- ``autotune.meter.read_j()``: the meter's cumulative joules;

and the ``autotune.backend.*`` functions that build and time a profile's other backends (ONNX
Runtime, OpenVINO) on the device, where its Python has them (``autotune.backends.remote``).

It needs TVM and autotune importable on the device (``pip install --no-deps`` of autotune, with
pydantic, pyyaml and numpy, is enough: torch is not imported). With the plain TVM server the energy
of an RPC device is the profile's model. ``AUTOTUNE_POWERCAP`` moves the RAPL sysfs root (tests).
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Sequence

__all__ = ["main", "register_meter", "session_init"]


def register_meter(kind: str = "auto") -> None:
    """Register ``autotune.meter.name`` and ``autotune.meter.read_j`` in this process; the meter is
    opened on first use (in the session's own process, where the RPC server forks one per session)."""
    import tvm

    from autotune.measure.energy import open_meter

    opened: list = []

    def meter():  # noqa: ANN202 - an EnergyMeter or None
        if not opened:
            opened.append(open_meter(kind))
        return opened[0]

    def name() -> str:
        m = meter()
        return m.name if m is not None else ""

    def read_j() -> float:
        m = meter()
        if m is None:
            raise RuntimeError("no energy meter can be read on this device")
        return float(m.read_j())

    tvm.register_global_func("autotune.meter.name", name, override=True)
    tvm.register_global_func("autotune.meter.read_j", read_j, override=True)


def session_init(meter: str = "auto") -> None:
    """What each session's process registers: the meter's functions and the backends'."""
    from autotune.backends.remote import register_backends

    register_meter(meter)
    register_backends()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m autotune.devices.server", description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    p.add_argument("--port", type=int, default=9090)
    p.add_argument("--port-end", type=int, default=9199)
    p.add_argument("--tracker", default=None, help="the tracker, HOST:PORT")
    p.add_argument("--key", default="", help="the device key to register")
    p.add_argument("--custom-addr", default=None, help="address to report to the tracker")
    p.add_argument("--meter", default="auto", help="auto | none | rapl | nvml | jetson (default: %(default)s)")
    args = p.parse_args(argv)
    from tvm import rpc

    tracker = None
    if args.tracker:
        host, _, port = args.tracker.rpartition(":")
        tracker = (host, int(port))
    server = rpc.Server(
        args.host,
        args.port,
        args.port_end,
        key=args.key,
        tracker_addr=tracker,
        custom_addr=args.custom_addr,
        server_init_callback=functools.partial(session_init, args.meter),
    )
    server.proc.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
