"""What each build refinement buys: one model's build with and without it, kernel by kernel.

The model is one of ``bench/backends.py``'s (``--model digits|32|224``, ``--act``), quantized as
there (``--precision int8``, the default) or not (``fp32``). Besides the build as a search makes
it, the build is made again with each refinement of ``ABLATIONS`` switched off (one at a time);
every build's kernels are compiled alone (``autotune.compiler.kernels.build_kernels``) and timed as
``autotune profile`` times them (``autotune.measure.kernels.time_kernels``), all builds in turn for
``--rounds`` rounds, each kernel keeping its fastest round (1 thread). The sums leave out the
runtime's own per-call work and most of a shared machine's noise, so differences of a few per cent
show; they also leave out what passes between kernels through memory (each kernel is timed
on inputs in cache). So each whole build is timed too, the builds' repeats interleaved by one
harness (median and CoV).

    python bench/ablation.py [--model 224] [--act relu] [--precision fp32] [--only NAME ...] [--rounds 7]

Prints a table and writes ``results/bench/ablation-<model>[-<act>][-fp32]-<YYYYMMDD>.json`` with the
CPU. ``--only`` times only the named refinements (the int8 ones change nothing in an fp32 build).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from candidate_cost import ROOT, environment, python_harness, write_report  # noqa: E402

#: A refinement: the module attribute that makes it, and what stands in for it switched off.
ABLATIONS: dict[str, tuple[str, str, Any]] = {
    "scalings_inward": ("autotune.compiler.simplify", "scalings_inward", lambda mod: mod),
    "rounded_clips": ("autotune.compiler.simplify", "rounded_clips", lambda mod: mod),
    "even_pixel_vectors": ("autotune.compiler.dot_rewrite", "_padded_pixels", lambda p, lanes: -(-p // lanes) * lanes),
    "nonneg_kernels": ("autotune.compiler.dot_rewrite", "non_negative", lambda *_: False),
    "int8_inputs": ("autotune.compiler.build", "int8_inputs", lambda mod: (mod, 0)),
    "narrow_depthwise_unroll": ("autotune.tuning.default", "NARROW_DEPTHWISE", 0),
    "depthwise_lanes": ("autotune.tuning.default", "_depthwise_lanes", lambda width, divisor, lanes: divisor),
    "inlined_conversions": ("autotune.tuning.default", "INLINED_CONVERSION_LANES", 1 << 10),
    "byte_phases": ("autotune.compiler.int8_inputs", "INT8_PHASES_BYTES", 1 << 62),
    "rounded_conversions": ("autotune.compiler.build", "rounded_conversions", lambda mod, target: (mod, 0)),
    "pixel_matmuls": ("autotune.compiler.simplify", "pixel_matmuls", lambda mod: mod),
}


@contextlib.contextmanager
def _without(name: str | None) -> Iterator[None]:
    """The build with refinement ``name`` switched off (None: as it is)."""
    if name is None:
        yield
        return
    module_name, attr, stand_in = ABLATIONS[name]
    module = importlib.import_module(module_name)
    kept = getattr(module, attr)
    setattr(module, attr, stand_in)
    try:
        yield
    finally:
        setattr(module, attr, kept)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=("digits", "32", "224"), default="224", help="default: %(default)s")
    p.add_argument("--act", choices=("relu", "relu6", "hardswish"), help="every layer's activation (as backends.py)")
    p.add_argument("--seed", type=int, default=2, help="which sample of the latency spaces (default: %(default)s)")
    p.add_argument("--precision", choices=("int8", "fp32"), default="int8", help="default: %(default)s")
    p.add_argument("--only", nargs="+", choices=tuple(ABLATIONS), help="these refinements (default: all)")
    p.add_argument("--rounds", type=int, default=7, help="timing rounds over all kernels (default: %(default)s)")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "bench", help="directory for the JSON")
    args = p.parse_args(argv)
    os.environ.update({"TVM_NUM_THREADS": "1", "TVM_BIND_THREADS": "0"})  # before TVM loads
    import tvm
    from backends import _models
    from rich.console import Console
    from rich.table import Table
    from tvm import relax

    import autotune
    from autotune.compiler import compile_artifact
    from autotune.compiler.kernels import build_kernels
    from autotune.config.device_profile import Measure
    from autotune.exporter import export_program
    from autotune.measure.kernels import time_kernels

    profile = autotune.load_profile("host")
    task, params, models = _models(args.model, args.seed, 256, profile, args.act)
    program, _, _ = export_program(models[args.precision], task.data.input_shape)
    builds: dict[str, list[Any]] = {}
    whole: dict[str, Any] = {}
    x = tvm.runtime.tensor(np.ascontiguousarray(task.data.x_test[:1]), tvm.cpu())
    with tempfile.TemporaryDirectory(prefix="bench-ablation-") as wd:
        for name in (None, *(args.only or ABLATIONS)):
            build = "all" if name is None else f"without {name}"
            with _without(name):
                builds[build] = build_kernels(program, profile, out_dir=Path(wd) / build / "kernels",
                                              precision=args.precision, weight_granularity="channel")  # fmt: skip
                art = compile_artifact(program, profile=profile, out_dir=Path(wd) / build / "model",
                                       input_shape=task.data.input_shape, precision=args.precision,
                                       weight_granularity="channel")  # fmt: skip
            vm = relax.VirtualMachine(tvm.runtime.load_module(art.path), tvm.cpu())
            whole[build] = lambda main=vm["main"]: main(x)
        best: dict[str, dict[str, float]] = {build: {} for build in builds}
        for _ in range(args.rounds):  # each kernel's median by the profile's policy, its fastest round kept
            for build, kernels in builds.items():
                for name, seconds in time_kernels(kernels, profile).items():
                    best[build][name] = min(best[build].get(name, float("inf")), seconds)
        models_ms = python_harness(whole, Measure(warmup=10, number=20, repeat=10 * args.rounds, min_repeat_ms=20))
    env = environment(profile, 1)
    report: dict[str, Any] = {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "environment": env,
                              "model": args.model, "act": args.act, "precision": args.precision, "params": params,
                              "rounds": args.rounds, "builds": []}  # fmt: skip
    total = {b: sum(best[b][k.name] * k.calls * 1e6 for k in kernels) for b, kernels in builds.items()}
    table = Table(title=f"{args.precision} build of model {args.model}{f' ({args.act})' if args.act else ''}, "
                        f"1 thread, {env['cpu']}")  # fmt: skip
    for c in ("build", "kernels", "kernel µs (sum)", "all faster by", "whole model µs", "CoV", "all faster by "):
        table.add_column(c, justify="left" if c == "build" else "right")
    for build, kernels in builds.items():
        gain, ms = total[build] / total["all"], models_ms[build]
        whole_gain = ms["latency_ms"] / models_ms["all"]["latency_ms"]
        report["builds"].append({"build": build, "kernels": len(kernels), "kernels_us": total[build],
                                 "all_faster_by": gain, "model_us": ms["latency_ms"] * 1e3,
                                 "model_cov": ms["latency_cov"], "all_faster_by_whole": whole_gain,
                                 "per_kernel_us": {k.name: best[build][k.name] * k.calls * 1e6
                                                   for k in kernels}})  # fmt: skip
        first = build == "all"
        table.add_row(build, str(len(kernels)), f"{total[build]:.1f}", "" if first else f"{gain:.3f}×",
                      f"{ms['latency_ms'] * 1e3:.1f}", f"{ms['latency_cov']:.3f}",
                      "" if first else f"{whole_gain:.3f}×")  # fmt: skip
    Console(width=130).print(table)
    fp32 = "-fp32" if args.precision == "fp32" else ""
    name = f"ablation-{args.model}{f'-{args.act}' if args.act else ''}{fp32}-{dt.date.today().strftime('%Y%m%d')}"
    write_report(args.out, name, report)


if __name__ == "__main__":
    main()
