"""The int8 dot-product kernels alone: each instruction set this CPU runs, on the 1×1 convolutions of
MobileNets, with signed activations and with activations that cannot be negative (AVX2's variant
without the sign transfer, ``autotune.compiler.dot_kernels.nonneg_variant``).

Each kernel is ``schedule_dot(conv_kernel(...))`` compiled for the host, timed by one Python harness
with the repeats of every kernel of a shape interleaved (``TVM_NUM_THREADS`` = ``--threads``).

    python bench/int8_kernels.py [--threads 1]

Prints a table (µs per call, GMAC/s) and writes ``results/bench/int8_kernels-<YYYYMMDD>.json`` with
the CPU.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from candidate_cost import ROOT, environment, python_harness, write_report  # noqa: E402

#: (input channels, output channels, map side): MobileNetV2's expand and project layers at 56, 14, 7.
SHAPES = [(24, 144, 56), (144, 24, 56), (96, 576, 14), (576, 96, 14), (160, 960, 7)]


def _variants() -> list[tuple[Any, Any]]:
    """(target, instruction set) for each kernel variant this CPU runs."""
    import tvm

    from autotune.compiler.dot_kernels import ISAS, dot_path, nonneg_variant

    host = tvm.target.Target({"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu()})
    runs = [(host, ISAS[dot_path(host)])] if dot_path(host) in ISAS else []
    if dot_path(host) == "vnni":
        runs.append((tvm.target.Target({"kind": "llvm", "mcpu": "x86-64-v3"}), ISAS["avx2"]))
    return runs + [(t, nonneg_variant(isa)) for t, isa in runs if nonneg_variant(isa) != isa]


def _kernel(shape: tuple[int, int, int], target: Any, isa: Any, work: Path) -> Any:
    """The compiled kernel of ``shape`` and its arguments, as a call."""
    import tvm

    from autotune.compiler.dot_kernels import DEPTH, conv_kernel, schedule_dot

    cin, cout, side = shape
    k4, p = -(-cin // DEPTH) * DEPTH, -(-side * side // isa.lanes) * isa.lanes
    func = schedule_dot(conv_kernel(cout, k4, p, isa))
    lib = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target=target)
    path = work / f"{isa.tag}_{cin}_{cout}_{side}.so"  # (a distinct path: a reloaded path is cached)
    lib.export_library(str(path))
    main = tvm.runtime.load_module(str(path))["main"]
    rng, dev = np.random.default_rng(0), tvm.cpu()
    low = 0 if isa.nonneg or isa.activations == "uint8" else -128
    a = rng.integers(low, 128, (k4 // DEPTH, p, DEPTH)).astype(isa.activations)
    w = rng.integers(-127, 128, (cout, k4)).astype(np.int8)
    args = [
        tvm.runtime.tensor(a, dev),
        tvm.runtime.tensor(w, dev),
        tvm.runtime.tensor(np.zeros((cout, p), "int32"), dev),
    ]
    return lambda: main(*args)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1, help="TVM threads (default: %(default)s)")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "bench", help="directory for the JSON")
    args = p.parse_args(argv)
    os.environ.update({"TVM_NUM_THREADS": str(args.threads), "TVM_BIND_THREADS": "0"})  # before TVM loads
    from rich.console import Console
    from rich.table import Table

    import autotune
    from autotune.config.device_profile import Measure

    variants = _variants()
    if not variants:
        sys.exit("this CPU has no dot-product instruction the kernels use (AVX-512 VNNI, AVX2)")
    report: dict[str, Any] = {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "kernels": []}
    report["environment"] = environment(autotune.load_profile("host"), args.threads)
    table = Table(title=f"int8 1×1 kernels, {args.threads} thread(s), {report['environment']['cpu']}")
    for c in ("layer", "kernel", "µs", "CoV", "GMAC/s", "vs signed"):
        table.add_column(c, justify="left" if c in ("layer", "kernel") else "right")
    with tempfile.TemporaryDirectory(prefix="bench-int8-kernels-") as wd:
        for shape in SHAPES:
            calls = {isa.tag: _kernel(shape, target, isa, Path(wd)) for target, isa in variants}
            timed = python_harness(calls, Measure(warmup=20, number=20, repeat=15, min_repeat_ms=50))
            macs = shape[0] * shape[1] * shape[2] ** 2
            for tag, t in timed.items():
                signed = timed.get(tag.removesuffix("u7"), t)["latency_ms"]
                row = {"layer": list(shape), "kernel": tag, "latency_us": t["latency_ms"] * 1e3,
                       "latency_cov": t["latency_cov"], "gmacs": macs / t["latency_ms"] / 1e6,
                       "vs_signed": signed / t["latency_ms"]}  # fmt: skip
                report["kernels"].append(row)
                table.add_row(f"{shape[0]}→{shape[1]} at {shape[2]}×{shape[2]}", tag, f"{row['latency_us']:.1f}",
                              f"{t['latency_cov']:.3f}", f"{row['gmacs']:.1f}", f"{row['vs_signed']:.2f}×")  # fmt: skip
    Console(width=110).print(table)
    write_report(args.out, f"int8_kernels-{dt.date.today().strftime('%Y%m%d')}", report)


if __name__ == "__main__":
    main()
