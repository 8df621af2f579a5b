"""What MetaSchedule tuning buys on one candidate: untuned and tuned TVM against ONNX Runtime and PyTorch.

The candidate is the default space's best-known configuration (``BEST``), trained once with
``autotune.evaluate.evaluate`` (or loaded from ``--weights``), or with ``--big`` a MobileNetV2-like
3x224x224 candidate of ``latency_mobilenet224`` (untrained: latency only). Its exported program is
compiled three times with ``autotune.compiler.compile_artifact``:

* untuned (the search's default);
* tuned with ``--trials`` MetaSchedule trials into a fresh (cold) tuning database;
* tuned again with the same request: the warm database answers every workload, nothing is measured.

All engines then run at batch 1 with ``--threads`` threads (default: the profile's ``measure.threads``)
in one process and one Python harness (``candidate_cost.python_harness``: warm-up, calibrated calls
per repeat, repeats interleaved across engines): untuned TVM, tuned TVM, ONNX Runtime (legacy
TorchScript ONNX export) and PyTorch eager under ``torch.inference_mode()``. Both TVM modules are
also timed with TVM's ``time_evaluator``, as the search times them. ``max |Δ|`` is the largest
absolute output difference from PyTorch over the profile's numerics samples. The heaviest kernel's
achieved GFLOP/s is its FLOPs over the best time MetaSchedule measured for it, against this machine's
fp32 peak measured in the same run (``autotune.measure.peak.fma_peak_gflops``: an FMA-bound kernel, a
true upper bound, same threads; torch's BLAS matmul is listed beside it: a tuned kernel can beat it).
The JSON lists every tuned workload with its trials and best time per call.

Run from the repository root (digits: a few minutes at 64-128 trials on a small CPU):

    python bench/tuning.py [--device host] [--trials 64] [--threads N] [--weights weights.pt] [--big]

Prints two tables and writes them, with versions, commit, target, CPU, threads and load average, to
``<out>/tuning[-mobilenet224]-<profile>-<YYYYMMDD>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from candidate_cost import ROOT, environment, python_harness
from rich.console import Console
from rich.table import Table

import autotune
from autotune.compiler import compile_artifact
from autotune.config.device_profile import DeviceProfile
from autotune.devices.calibrate import measure_peak_gflops
from autotune.evaluate import evaluate
from autotune.exporter import export_program
from autotune.measure.base import summarize_latency
from autotune.measure.peak import fma_peak_gflops
from autotune.models import build_model
from autotune.records import CompiledArtifact
from autotune.task import Task, make_trial_config, prepare_task, worker_env
from autotune.tuning import TuningDatabase, TuningRequest

#: A good configuration of the default space (digits_cnn); the other parameters take their defaults.
BEST = {"arch.stages": 2, "arch.width_mult": 0.75, "train.optimizer": "adam", "train.lr": 0.005}
#: MobileNetV2-like: 5 stages of 2 inverted residuals, expansion 6, 3x3 depthwise, no SE.
BIG = {"arch.stages": 5, "arch.depth": 2, "arch.width_mult": 1.0, "arch.kernel": 3, "arch.expand": 6, "arch.se": False}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="host", help="device profile: a path or a shipped name")
    p.add_argument("--trials", type=int, default=64, help="MetaSchedule trials for the whole model")
    p.add_argument("--threads", type=int, help="threads for every engine (default: the profile's measure.threads)")
    p.add_argument("--weights", type=Path, help="weights.pt of the BEST digits candidate (skips training)")
    p.add_argument("--big", action="store_true", help="the 3x224x224 candidate of latency_mobilenet224 instead")
    p.add_argument("--seed", type=int, default=0, help="training and tuning seed")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "bench", help="directory for the JSON")
    p.add_argument("--work-dir", type=Path, help="where models and the tuning database go (default: temporary)")
    args = p.parse_args(argv)
    if args.trials < 1 or (args.threads is not None and args.threads < 1):
        p.error("--trials and --threads must be >= 1")
    if args.big and args.weights:
        p.error("--weights is for the digits candidate; the --big candidate is untrained")
    return args


def candidate(task: Task, params: dict[str, Any], args: argparse.Namespace, work: Path) -> tuple[torch.nn.Module, dict]:
    """The candidate's eval-mode model and what is known about it (accuracy, where the weights are)."""
    cfg = make_trial_config(params, task.space, trial_id="bench", seed=args.seed)
    info: dict[str, Any] = {"space": task.space.name, "params": cfg.params, "input_shape": task.data.input_shape}
    weights = args.weights
    if task.space.trains and weights is None:
        row = evaluate(cfg, task, run="bench_tuning", work_dir=work / "trained")
        if row["status"] != "ok":
            raise SystemExit(f"training the candidate failed: {row.get('error')}")
        info.update(accuracy=row["accuracy"], val_accuracy=row["val_accuracy"], train_s=row["train_s"])
        weights = work / "trained" / "weights.pt"
    torch.manual_seed(args.seed)
    model = build_model(task.family, cfg.arch, task.data.input_shape, task.data.num_classes)
    if weights is not None:
        model.load_state_dict(torch.load(weights, weights_only=True))
        info["weights"] = str(weights)
    return model.eval(), info


def _best_schedules(db: TuningDatabase) -> dict[str, tuple[float, Any]]:
    """Per workload key (as in the ledger): the best mean seconds of its valid records, and its PrimFunc."""
    from tvm.s_tir import meta_schedule as ms
    from tvm_ffi import structural_hash

    best: dict[str, tuple[float, Any]] = {}
    for r in ms.database.JSONDatabase(work_dir=str(db.directory), allow_missing=False).get_all_tuning_records():
        secs = [float(s) for s in r.run_secs or []]
        if secs and max(secs) < 1e9:  # failed builds and runs are recorded as 1e10 s
            key = str(structural_hash(r.workload.mod))
            if statistics.fmean(secs) < best.get(key, (float("inf"), None))[0]:
                best[key] = (statistics.fmean(secs), r.workload.mod)
    return best


def heaviest_kernel(db: TuningDatabase) -> dict[str, Any] | None:
    """The tuned workload with the most FLOPs per call: its best measured time and GFLOP/s."""
    from tvm.s_tir.analysis import estimate_tir_flops

    best = _best_schedules(db)
    if not best:
        return None
    names = {k: v["task"] for k, v in json.loads(db.ledger_file.read_text())["workloads"].items()}
    key, (secs, mod) = max(best.items(), key=lambda kv: estimate_tir_flops(kv[1][1]))
    flops = float(estimate_tir_flops(mod))
    return {"task": names.get(key, "?"), "mflop": flops / 1e6, "best_us": secs * 1e6, "gflops": flops / secs / 1e9}


def tuned_workloads(db: TuningDatabase) -> list[dict[str, Any]]:
    """Every tuned workload: its task, the trials the ledger credits and its best time per call, slowest first."""
    best = _best_schedules(db)
    ledger = json.loads(db.ledger_file.read_text())["workloads"]
    rows = [
        {"task": v["task"], "trials": v["trials"], "best_us": best[k][0] * 1e6} for k, v in ledger.items() if k in best
    ]
    return sorted(rows, key=lambda w: -w["best_us"])


def compare_engines(
    model: torch.nn.Module, arts: dict[str, CompiledArtifact], xs: np.ndarray, profile: DeviceProfile, threads: int
) -> list[dict[str, Any]]:
    """Time every engine at batch 1 in one harness; TVM modules also with TVM's time evaluator."""
    import tvm
    from tvm import relax

    from autotune.measure.local import runtime_threads
    from autotune.numerics import run_compiled

    m, x = profile.measure, np.ascontiguousarray(xs[:1])
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (torch.from_numpy(x),), f"{tmp}/m.onnx", dynamo=False, input_names=["x"])
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        sess = ort.InferenceSession(f"{tmp}/m.onnx", so, providers=["CPUExecutionProvider"])
    dev = tvm.cpu()
    vms = {name: relax.VirtualMachine(tvm.runtime.load_module(a.path), dev) for name, a in arts.items()}
    xt, xtorch = tvm.runtime.tensor(x, dev), torch.from_numpy(x)
    with torch.inference_mode():
        ref = [model(torch.from_numpy(xi[None])).numpy() for xi in xs]
        outputs = {f"tvm {k}": [run_compiled(vm, xi[None]) for xi in xs] for k, vm in vms.items()}
        outputs["onnxruntime"] = [sess.run(None, {"x": xi[None]})[0] for xi in xs]
        diff = {k: max(float(np.max(np.abs(o - r))) for o, r in zip(v, ref, strict=True)) for k, v in outputs.items()}
        calls = {f"tvm {k}": (lambda f=vm["main"]: f(xt)) for k, vm in vms.items()}
        calls |= {"onnxruntime": lambda: sess.run(None, {"x": x}), "pytorch eager": lambda: model(xtorch)}
        timed = python_harness(calls, m)
    rows = []
    for name, vm in vms.items():
        vm.set_input("main", xt)
        timer = vm.time_evaluator(
            "invoke_stateful", dev, number=m.number, repeat=m.repeat, min_repeat_ms=m.min_repeat_ms
        )
        stats = summarize_latency(list(timer("main").results))
        rows.append({"engine": f"tvm {name}", "harness": "time_evaluator", **stats, "number": None})
    rows += [{"engine": k, "harness": "python", **v} for k, v in timed.items()]
    engine_threads = {"onnxruntime": threads, "pytorch eager": torch.get_num_threads()}
    return [
        {**r, "max_abs_diff": diff.get(r["engine"], 0.0), "threads": engine_threads.get(r["engine"], runtime_threads())}
        for r in rows
    ]


def _f(v: float | None, fmt: str = ".2f") -> str:
    return "—" if v is None else format(v, fmt)


def tuning_table(phases: list[dict[str, Any]], trials: int) -> Table:
    t = Table(title=f"Tuning ({trials} trials requested for the whole model)")
    for col in ["database", "measured trials", "db hits", "db misses", "db records", "tune s", "compile s", "wall s"]:
        t.add_column(col, justify="left" if col == "database" else "right")
    for p in phases:
        t.add_row(
            p["database"],
            str(p["tuned_trials"]),
            str(p["tune_db_hits"]),
            str(p["tune_db_misses"]),
            str(p["db_records"]),
            _f(p["tune_s"]),
            _f(p["compile_s"]),
            _f(p["wall_s"]),
        )
    return t


def engine_table(engines: list[dict[str, Any]], title: str) -> Table:
    t = Table(title=title)
    for col in ["engine", "harness", "median ms", "p90 ms", "CoV", "vs untuned", "max |Δ| vs torch"]:
        t.add_column(col, justify="left" if col in ("engine", "harness") else "right")
    base = {e["harness"]: e["latency_ms"] for e in engines if e["engine"] == "tvm untuned"}
    for e in engines:
        t.add_row(
            e["engine"],
            e["harness"],
            _f(e["latency_ms"], ".4f"),
            _f(e["latency_p90_ms"], ".4f"),
            f"{100 * e['latency_cov']:.1f}%",
            f"{base[e['harness']] / e['latency_ms']:.2f}x" if e["harness"] in base else "—",
            f"{e['max_abs_diff']:.2e}",
        )
    return t


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    profile = autotune.load_profile(args.device)
    threads = args.threads or profile.measure.threads
    profile = profile.model_copy(update={"measure": profile.measure.model_copy(update={"threads": threads})})
    os.environ.update(worker_env(profile))  # TVM reads its thread count when first imported
    os.environ.setdefault("TVM_THREAD_POOL_SPIN_COUNT", "0")
    torch.set_num_threads(threads)
    console = Console(width=None if sys.stdout.isatty() else 150)
    started = dt.datetime.now().astimezone()
    load_before = os.getloadavg()

    space = autotune.load_space("latency_mobilenet224" if args.big else "digits_cnn")
    task = prepare_task(space, profile)
    with nullcontext(args.work_dir) if args.work_dir else tempfile.TemporaryDirectory(prefix="bench-tuning-") as wd:
        work = Path(wd)
        model, info = candidate(task, BIG if args.big else BEST, args, work)
        program, exported, _ = export_program(model, task.data.input_shape)
        db = TuningDatabase(work / "tuning_db")
        if db.record_count():
            raise SystemExit(f"{db.directory} is not empty: the cold tuning needs a fresh database")
        arts: dict[str, CompiledArtifact] = {}
        phases = []
        for name, request in [
            ("untuned", None),
            ("tuned", TuningRequest(trials=args.trials, db_dir=str(db.directory), seed=args.seed)),
            ("warm", TuningRequest(trials=args.trials, db_dir=str(db.directory), seed=args.seed)),
        ]:
            t0 = time.perf_counter()
            art = compile_artifact(
                program, profile=profile, out_dir=work / name, input_shape=task.data.input_shape, tuning=request
            )
            wall = time.perf_counter() - t0
            arts[name] = art
            if request is not None:
                phases.append(
                    {
                        "database": "cold" if name == "tuned" else "warm",
                        **{k: getattr(art, k) for k in ("tuned_trials", "tune_db_hits", "tune_db_misses", "tune_s")},
                        "compile_s": art.compile_s,
                        "wall_s": wall,
                        "db_records": db.record_count(),
                    }
                )
            console.log(f"compiled {name} in {wall:.1f} s")
        kernel = heaviest_kernel(db)
        workloads = tuned_workloads(db)
        del arts["warm"]  # the same schedules as 'tuned'
        xs = task.data.x_test[: profile.numerics.samples] if space.trains else None
        if xs is None:
            xs = np.random.default_rng(args.seed).standard_normal((4, *task.data.input_shape)).astype(np.float32)
        engines = compare_engines(exported, arts, xs, profile, threads)
    load_after = os.getloadavg()
    peak = fma_peak_gflops(threads)  # this machine's fp32 peak, same threads, same run
    blas, blas_n = measure_peak_gflops(threads)
    if kernel:
        kernel.update(peak_gflops=peak, peak_source="FMA-bound kernel (autotune.measure.peak)")
        kernel.update(blas_gflops=blas, blas_source=f"torch.mm {blas_n}x{blas_n}, best of 256-2048")
        kernel["fraction_of_peak"] = kernel["gflops"] / peak

    console.print(tuning_table(phases, args.trials))
    shape = "x".join(map(str, task.data.input_shape))
    cold = phases[0]
    title = (
        f"Batch-1 latency, {space.name} candidate ({shape}), {threads} thread(s); "
        f"tuned: {cold['tuned_trials']} trials in {cold['tune_s'] / 60:.1f} min"
    )
    console.print(engine_table(engines, title))
    if kernel:
        console.print(
            f"heaviest kernel {kernel['task']}: {kernel['mflop']:.2f} MFLOP in {kernel['best_us']:.1f} µs "
            f"= {kernel['gflops']:.1f} GFLOP/s, {100 * kernel['fraction_of_peak']:.0f} % of the "
            f"{peak:.0f} GFLOP/s fp32 FMA peak ({threads} thread(s); torch.mm reaches {blas:.0f})"
        )
    top = ", ".join(f"{w['task']} {w['best_us']:.1f} µs ({w['trials']} trials)" for w in workloads[:5])
    console.print(f"slowest kernels per call: {top}")
    if "accuracy" in info:
        console.print(f"candidate test accuracy {info['accuracy']:.3f} (trained in {info['train_s']:.0f} s)")
    console.print(f"load average (1, 5, 15 min) before: {load_before}, after: {load_after}")

    report = {
        "date": started.isoformat(timespec="seconds"),
        "candidate": info,
        **environment(profile, threads),
        "load_avg_before": load_before,
        "load_avg_after": load_after,
        "trials": args.trials,
        "seed": args.seed,
        "tuning": phases,
        "heaviest_kernel": kernel,
        "workloads": workloads,
        "engines": engines,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"tuning{'-mobilenet224' if args.big else ''}-{profile.name}-{started:%Y%m%d}.json"
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
