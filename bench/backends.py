"""Which runtime to ship a model with: TVM, ONNX Runtime, OpenVINO and PyTorch eager, fp32 and int8.

Three models, untrained (latency does not depend on the weights), BatchNorm folded:

- ``digits``: the strong digits MobileNet of ``bench/compression.py`` (1×8×8, 10 classes);
- ``32``: a candidate of ``latency_mobilenet32`` (3×32×32, 10 classes), the ``--seed``-th sample;
- ``224``: a candidate of ``latency_mobilenet224`` (3×224×224, 1000 classes), likewise.

Each at fp32 and at int8 (8-bit symmetric per-channel post-training quantization, calibrated on
``--calib`` training inputs, through the quantize pass a search uses). Engines, all built by the
project's own backends (``autotune.backends``) from the same model:

- ``tvm default``: TVM with default schedules (what the ``host`` profile builds); int8 as real
  integer arithmetic (``conv2d(int8, int8) -> int32``);
- ``tvm tuned`` (with ``--db SPACE=DIR``, a database ``autotune tune`` filled): TVM from that database;
- ``onnxruntime``: ONNX Runtime's CPU provider; int8 in QDQ form;
- ``openvino``: OpenVINO's CPU plugin from IR, fp32 inference precision; int8 from the QDQ form;
- ``pytorch eager`` (fp32 only).

Every build is checked against its PyTorch model (the fake-quantized twin at int8) at the
profile's tolerance before it is timed. All engines of a model, both precisions, are timed by one
Python harness with the same threads, repeats interleaved across engines.

Run from the repository root (about 5 minutes on 2 cores):

    python bench/backends.py [--device host] [--threads 1] [--models digits,32,224] [--db latency_mobilenet32=DIR]
                             [--act relu]

``--act`` gives every model that activation (the three are hardswish networks; a ReLU's int8
activations cannot be negative, which AVX2's int8 kernels exploit). Prints a table and writes
``results/bench/backends-<profile>[-<act>]-<YYYYMMDD>.json`` with the CPU.
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
import torch
from rich.console import Console
from rich.table import Table

import autotune
from autotune.config.device_profile import Measure

sys.path.insert(0, str(Path(__file__).resolve().parent))
from candidate_cost import ROOT, environment, python_harness, write_report  # noqa: E402
from compression import DEFAULT_ARCH  # noqa: E402

MODELS = {"digits": ("digits_cnn", None), "32": ("latency_mobilenet32", None), "224": ("latency_mobilenet224", None)}
ENGINES = ("tvm default", "tvm tuned", "onnxruntime", "openvino", "pytorch eager")
INT8 = {"scheme": "linear", "bits": 8, "symmetric": True, "granularity": "channel", "method": "ptq", "deploy": "int8"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="host", help="device profile (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1, help="threads for every engine (default: %(default)s)")
    p.add_argument("--models", default="digits,32,224", help="which of digits, 32, 224 (default: %(default)s)")
    p.add_argument("--seed", type=int, default=2, help="which sample of the latency spaces (default: %(default)s)")
    p.add_argument(
        "--act",
        choices=("relu", "relu6", "hardswish"),
        help="every model with this activation (default: each model's own; the latency spaces fix hardswish)",
    )
    p.add_argument("--calib", type=int, default=256, help="training inputs that calibrate int8 (default: 256)")
    p.add_argument("--db", action="append", default=[], metavar="SPACE=DIR", help="a tuning database per space")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "bench", help="directory for the JSON")
    return p.parse_args(argv)


def _models(
    key: str, seed: int, calib: int, profile: Any, act: str | None = None
) -> tuple[Any, dict[str, Any], dict[str, torch.nn.Module]]:
    """The task, the architecture, and the fp32 and int8 models of ``key`` (eval mode, BatchNorm folded),
    with activation ``act`` where given."""
    from autotune.compress.base import CompressContext
    from autotune.compress.pipeline import compress, plan_compression
    from autotune.models import build_model
    from autotune.models.layers import fold_batchnorm
    from autotune.preflight import sample_configs
    from autotune.quiet import QuietLock
    from autotune.task import make_trial_config, prepare_task

    space_name, _ = MODELS[key]
    space = autotune.load_space(space_name)
    task = prepare_task(space, profile)
    torch.manual_seed(seed)
    if key == "digits":
        arch = {**DEFAULT_ARCH, **({"act": act} if act else {})}
        params = {f"arch.{k}": v for k, v in arch.items()}
        model = build_model(task.family, arch, task.data.input_shape, task.data.num_classes)
    else:
        params = {**sample_configs(space, seed + 1, seed)[-1], **({"arch.act": act} if act else {})}
        model, _ = task.build(make_trial_config(params, space, trial_id="b", seed=seed, passes=task.passes))
    model = model.eval()
    fold_batchnorm(model)
    from autotune.compress import PASSES

    settings = {**PASSES.get("quantize").Settings.defaults(), **INT8, "calib_batches": max(1, calib // 64)}
    ctx = CompressContext(space=space, data=task.data, train=None, seed=seed, cache_dir=Path(tempfile.gettempdir()),
                          lock=QuietLock(None))  # fmt: skip
    int8 = compress(model, plan_compression({"quantize": settings}), ctx).model.eval()
    return task, params, {"fp32": model, "int8": int8}


def _builds(key: str, task: Any, models: dict[str, torch.nn.Module], profile: Any, dbs: dict[str, Path],
            work: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:  # fmt: skip
    """Every engine's build of both precisions, checked against PyTorch: the calls to time, and facts."""
    import tvm
    from tvm import relax

    from autotune.backends import BACKENDS, Job
    from autotune.backends.runtime import run_all
    from autotune.compiler import compile_artifact
    from autotune.compress.fakequant import activation_bits
    from autotune.exporter import export_program
    from autotune.numerics import check_numerics, tolerance_for
    from autotune.quiet import QuietLock
    from autotune.records import Deployment
    from autotune.tuning import TuningRequest

    shape, xs = task.data.input_shape, task.data.x_test[:8]
    x = np.ascontiguousarray(xs[:1])
    calls: dict[str, Any] = {}
    facts: dict[str, dict[str, Any]] = {}
    dev = tvm.cpu()
    xt, xtorch = tvm.runtime.tensor(x, dev), torch.from_numpy(x)
    space = MODELS[key][0]
    for precision, model in models.items():
        tol = tolerance_for(profile, precision=precision, act_bits=activation_bits(model))
        program, exported, _ = export_program(model, shape)
        tvm_builds = {"tvm default": None}
        if space in dbs:
            tvm_builds["tvm tuned"] = TuningRequest(trials=0, db_dir=str(dbs[space]))
        for engine, request in tvm_builds.items():
            art = compile_artifact(program, profile=profile, out_dir=work / f"{key}-{precision}-{engine[4:]}",
                                   input_shape=shape, precision=precision, weight_granularity="channel",
                                   tuning=request)  # fmt: skip
            diff = check_numerics(art, exported, xs, profile=profile, tolerance=tol).max_abs_diff
            vm = relax.VirtualMachine(tvm.runtime.load_module(art.path), dev)
            calls[f"{engine} {precision}"] = lambda main=vm["main"]: main(xt)
            facts[f"{engine} {precision}"] = {"max_abs_diff": diff, "ran_as": art.deploy_precision,
                                               "int8_ops": f"{art.int8_ops}/{art.compute_ops}",
                                               "tuned_share": art.tuned_share}  # fmt: skip
        for name in ("onnxruntime", "openvino"):
            backend = BACKENDS.get(name)
            job = Job(model=exported, profile=profile, inputs=xs, out_dir=work / f"{key}-{precision}-{name}",
                      lock=QuietLock(None), deployment=Deployment(precision, "channel"))  # fmt: skip
            job.out_dir.mkdir(parents=True, exist_ok=True)
            path, export_s = backend.convert(job)
            run, ran_as = backend.session(str(path), threads=profile.measure.threads, precision=precision)
            art = backend.artifact(job, path, export_s, 0.0, ran_as)
            diff = check_numerics(art, exported, xs, profile=profile, tolerance=tol,
                                  run=lambda b, run=run: run_all(run, b)).max_abs_diff  # fmt: skip
            calls[f"{name} {precision}"] = lambda run=run: run(x)
            facts[f"{name} {precision}"] = {"max_abs_diff": diff, "ran_as": ran_as}
        if precision == "fp32":
            calls["pytorch eager fp32"] = lambda m=exported: m(xtorch)
            facts["pytorch eager fp32"] = {"max_abs_diff": 0.0, "ran_as": "fp32"}
    return calls, facts


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    os.environ.update({"TVM_NUM_THREADS": str(args.threads), "TVM_BIND_THREADS": "0"})  # before TVM loads
    torch.set_num_threads(args.threads)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    console = Console(width=130)
    profile = autotune.load_profile(args.device)
    profile = profile.model_copy(update={"measure": profile.measure.model_copy(update={"threads": args.threads})})
    dbs = {k: Path(v) for k, _, v in (d.partition("=") for d in args.db)}
    report: dict[str, Any] = {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "models": {}}
    report["environment"] = environment(profile, args.threads)
    from importlib import metadata

    report["environment"]["versions"]["openvino"] = metadata.version("openvino")
    report["databases"] = {k: str(v) for k, v in dbs.items()}
    table = Table(title=f"Runtimes, batch 1, {args.threads} thread(s), {report['environment']['cpu']}")
    for c in ("model", "precision", "engine", "latency ms", "CoV", "vs fastest", "int8 speedup", "ran as", "max|diff|"):
        table.add_column(c, justify="left" if c in ("model", "precision", "engine", "ran as") else "right")
    with tempfile.TemporaryDirectory(prefix="bench-backends-") as wd:
        for key in args.models.split(","):
            task, params, models = _models(key, args.seed, args.calib, profile, args.act)
            calls, facts = _builds(key, task, models, profile, dbs, Path(wd))
            with torch.inference_mode():
                timed = python_harness(calls, Measure(warmup=5, number=3, repeat=9, min_repeat_ms=100))
            fastest = min(t["latency_ms"] for t in timed.values())
            rows = []
            for name, t in timed.items():
                engine, precision = name.rsplit(" ", 1)
                fp32 = timed.get(f"{engine} fp32", {}).get("latency_ms")
                speedup = fp32 / t["latency_ms"] if precision == "int8" and fp32 else None
                rows.append({"engine": engine, "precision": precision, **facts[name], "latency_ms": t["latency_ms"],
                             "latency_cov": t["latency_cov"], "int8_speedup": speedup})  # fmt: skip
                table.add_row(key, precision, engine, f"{t['latency_ms']:.4f}", f"{t['latency_cov']:.3f}",
                              f"{t['latency_ms'] / fastest:.2f}×", f"{speedup:.2f}×" if speedup else "",
                              str(facts[name]["ran_as"]), f"{facts[name]['max_abs_diff']:.2g}")  # fmt: skip
            report["models"][key] = {"space": MODELS[key][0], "input_shape": list(task.data.input_shape),
                                     "params": params, "engines": rows}  # fmt: skip
            console.print(f"timed {key}: fastest {min(timed, key=lambda n: timed[n]['latency_ms'])}")
    console.print(table)
    stamp = dt.date.today().strftime("%Y%m%d")
    write_report(args.out, f"backends-{profile.name}-{args.act + '-' if args.act else ''}{stamp}", report)


if __name__ == "__main__":
    main()
