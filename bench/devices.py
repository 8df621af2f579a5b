"""Timing on a device over TVM RPC against timing locally: the same compiled candidates, one run.

Starts a loopback device (a real RPC tracker and server on 127.0.0.1, served by this machine's
Python: ``autotune.devices.start_device(native=True)``), then times each candidate ``--rounds``
times with the ``local`` runner and with the ``rpc`` runner (session, upload, load, the device's
own time evaluator), interleaved local, rpc, local, ... so load drift hits both alike. Both use the
profile's ``measure`` settings, with ``number`` 1 (TVM grows it until a repeat lasts
``min_repeat_ms``), and the profile's TVM threads (the server is started with as many).
Before timing, the RPC path's outputs are checked against the local build's on held-out inputs.

Per candidate and runner: the median latency (median over rounds of each measurement's median),
the spread of repeated measurements (coefficient of variation of the per-round medians), the mean
within-measurement CoV (over the repeats of one measurement) and the wall seconds one measurement
takes. ``rpc overhead`` is the RPC median over the local median, minus 1 (floor: at most 5 %).

Candidates: the default space's best-known configuration (digits, 1x8x8) and the MobileNetV2-like
3x224x224 network of the latency-only space (``bench/tuning.py``'s ``BEST`` and ``BIG``), untrained:
timing does not depend on the weights. Run from the repository root (about 2 minutes):

    python bench/devices.py [--device host] [--rounds 7]

Prints a table and writes ``results/bench/devices-<profile>-<YYYYMMDD>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

import autotune
from autotune import devices
from autotune.config.device_profile import DeviceProfile
from autotune.task import make_trial_config, prepare_task, worker_env

sys.path.insert(0, str(Path(__file__).resolve().parent))
from candidate_cost import ROOT, environment, write_report  # noqa: E402 - the shared environment record of the benches
from tuning import BEST, BIG  # noqa: E402 - the same candidates as the tuning benchmark

CANDIDATES = {"digits default best": ("digits_cnn", BEST), "mobilenet 3x224x224": ("latency_mobilenet224", BIG)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def compile_candidate(space_name: str, params: dict[str, Any], profile: DeviceProfile, out: Path) -> tuple[Any, Any]:
    """The candidate's compiled artifact for the profile and a few held-out inputs."""
    from autotune.compiler import compile_artifact
    from autotune.exporter import export_program
    from autotune.models import build_model

    space = autotune.load_space(space_name)
    task = prepare_task(space, profile)
    cfg = make_trial_config(params, space, trial_id="bench", seed=0)
    torch.manual_seed(0)
    model = build_model(task.family, cfg.arch, task.data.input_shape, task.data.num_classes).eval()
    program, _, _ = export_program(model, task.data.input_shape)
    artifact = compile_artifact(program, profile=profile, out_dir=out, input_shape=task.data.input_shape)
    return artifact, task.data.x_test[:4]


def summarize(measurements: list[Any], walls: list[float]) -> dict[str, Any]:
    medians = [m.latency_ms for m in measurements]
    return {
        "latency_ms": statistics.median(medians),
        "round_medians_ms": medians,
        "cov_between": statistics.stdev(medians) / statistics.fmean(medians),
        "cov_within": statistics.fmean(m.latency_cov for m in measurements),
        "wall_s_per_measurement": statistics.median(walls),
        "threads": measurements[0].threads,
        "timing": measurements[0].timing,
    }


def bench_candidate(name: str, local: DeviceProfile, rpc: DeviceProfile, rounds: int, work: Path) -> dict[str, Any]:
    from autotune.measure import RUNNERS
    from autotune.numerics import load_vm, run_compiled

    space_name, params = CANDIDATES[name]
    artifact, xs = compile_candidate(space_name, params, local, work / name.replace(" ", "_"))
    vm = load_vm(artifact)
    here = np.concatenate([run_compiled(vm, x[None]) for x in xs])
    there = RUNNERS.get(rpc.runner.kind).executor(artifact, rpc)(xs)
    runs: dict[str, tuple[list[Any], list[float]]] = {"local": ([], []), "rpc": ([], [])}
    x = xs[:1]
    for _ in range(rounds):
        for label, profile in (("local", local), ("rpc", rpc)):
            t0 = time.perf_counter()
            m = RUNNERS.get(profile.runner.kind).measure(artifact, profile, x)
            runs[label][0].append(m)
            runs[label][1].append(time.perf_counter() - t0)
    res = {kind: summarize(ms, walls) for kind, (ms, walls) in runs.items()}
    return {
        "candidate": name,
        "space": space_name,
        "params": params,
        "artifact_bytes": artifact.artifact_bytes,
        "rpc_vs_local_max_abs_diff": float(np.max(np.abs(here - there))),
        "runners": res,
        "rpc_overhead": res["rpc"]["latency_ms"] / res["local"]["latency_ms"] - 1,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="host", help="the local profile; its measure settings serve both runners")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--out", type=Path, default=ROOT / "results" / "bench")
    args = p.parse_args(argv)
    local = autotune.load_profile(args.device)
    if local.runner.kind != "local":
        p.error(f"--device {args.device}: a profile measured locally is needed, got runner {local.runner.kind!r}")
    # number=1: TVM grows it until a repeat lasts min_repeat_ms, so the 100 ms network is not run 20x a repeat
    local = local.model_copy(update={"measure": local.measure.model_copy(update={"number": 1})})
    for k, v in worker_env(local).items():  # before TVM loads here: the same threads as the server's
        os.environ.setdefault(k, v)
    started = dt.datetime.now().astimezone()
    key = "bench-loopback"
    with tempfile.TemporaryDirectory(prefix="devices-") as tmp:
        ports = {"tracker_port": _free_port(), "server_port": _free_port()}
        with devices.start_device(
            Path(tmp) / "device", key=key, native=True, threads=local.measure.threads, **ports
        ) as dev:
            runner = local.runner.model_copy(
                update={"kind": "rpc", "tracker": dev.tracker, "key": key, "request_timeout_s": 30.0}
            )
            rpc = local.model_copy(update={"runner": runner})
            results = [bench_candidate(name, local, rpc, args.rounds, Path(tmp)) for name in CANDIDATES]

    table = Table(title=f"Local vs loopback RPC timing ({local.name}, {args.rounds} rounds each, interleaved)")
    cols = ("candidate", "runner", "median ms", "CoV between", "CoV within", "wall s/measure", "rpc overhead")
    for col in cols:
        table.add_column(col, justify="right")
    for r in results:
        for kind, s in r["runners"].items():
            table.add_row(
                r["candidate"], kind, f"{s['latency_ms']:.4f}", f"{100 * s['cov_between']:.2f}%",
                f"{100 * s['cov_within']:.2f}%", f"{s['wall_s_per_measurement']:.2f}",
                f"{100 * r['rpc_overhead']:+.2f}%" if kind == "rpc" else "",
            )  # fmt: skip
    Console(width=140).print(table)
    report = {
        "date": started.isoformat(timespec="seconds"),
        "rounds": args.rounds,
        "measure": local.measure.model_dump(),
        "candidates": results,
        "load_avg_end": os.getloadavg()[0],
        **environment(local, local.measure.threads),
    }
    write_report(args.out, f"devices-{local.name}-{started:%Y%m%d}", report)


if __name__ == "__main__":
    main()
