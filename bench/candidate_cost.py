"""What one search candidate costs, stage by stage, and how TVM's latency compares with ORT and PyTorch.

Part 1 samples ``--candidates`` architectures from the search space with a seeded Optuna
``RandomSampler`` and evaluates each with ``autotune.evaluate.evaluate`` (the function a search trial
runs), reporting its seconds in each stage: train, export, import, compile, verify, measure, and
the wall time of the whole call. Candidate ``i`` is trained with seed ``--seed + i``, as the search
seeds its trials. PyTorch trains on ``--threads`` threads, like a trial with that many CPUs.

Part 2 takes the best candidate (highest held-out accuracy among 'ok' rows) and times the same
trained model at batch 1 with ``--threads`` threads (default: the profile's ``measure.threads``):

* TVM: the ``model.so`` that ``evaluate`` compiled, timed with TVM's ``time_evaluator`` (as the
  search does) and through the Python harness below;
* ONNX Runtime: the weights exported with the legacy TorchScript ONNX exporter;
* PyTorch eager under ``torch.inference_mode()``.

ORT and PyTorch run the module ``autotune`` hands to TVM (eval mode, BatchNorm folded into the
convolutions). The Python harness warms each engine up, picks a call count per repeat that lasts
at least the profile's ``min_repeat_ms``, then times the profile's ``repeat`` repeats, interleaving
the engines repeat by repeat so load drift hits them alike; latencies are per call (median, p90
and CoV over repeats). ``max |Δ|`` is the largest absolute output difference from PyTorch over
the profile's numerics samples. TVM's worker threads are told not to spin
(``TVM_THREAD_POOL_SPIN_COUNT=0``) so they do not steal the CPU from the other engines.

Run from the repository root (about 1-3 minutes on a small CPU):

    python bench/candidate_cost.py [--space digits_cnn] [--device host] [--candidates 5] [--seed 0] [--threads N]

Prints two tables and writes them, with versions, commit, target, CPU and load average, to
``<out>/candidate_cost-<profile>-<YYYYMMDD>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import optuna
import torch
from rich.console import Console
from rich.table import Table

import autotune
from autotune.config.device_profile import DeviceProfile, Measure
from autotune.evaluate import evaluate
from autotune.measure.base import cpu_flags, summarize_latency, this_machine
from autotune.models import build_model
from autotune.models.layers import fold_batchnorm
from autotune.space import sample_params
from autotune.task import Task, make_trial_config, prepare_task, worker_env

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("train", "export", "import", "compile", "verify", "measure")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="digits_cnn", help="search space: a path or a shipped name")
    p.add_argument("--device", default="host", help="device profile: a path or a shipped name")
    p.add_argument("--candidates", type=int, default=5, help="candidates to sample and evaluate")
    p.add_argument("--seed", type=int, default=0, help="sampler seed; candidate i trains with seed + i")
    p.add_argument("--threads", type=int, help="threads for every engine (default: the profile's measure.threads)")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "bench", help="directory for the JSON")
    p.add_argument("--work-dir", type=Path, help="where candidates' files go (default: a temporary directory)")
    args = p.parse_args(argv)
    if args.candidates < 1 or (args.threads is not None and args.threads < 1):
        p.error("--candidates and --threads must be >= 1")
    return args


def run_candidates(task: Task, n: int, seed: int, work_dir: Path) -> list[dict[str, Any]]:
    """Sample ``n`` candidates at random and evaluate each; rows gain ``wall_s`` and ``work_dir``."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    rows = []
    for i in range(n):
        cfg = make_trial_config(sample_params(task.space, study.ask()), task.space, trial_id=f"c{i}", seed=seed + i)
        cand_dir = work_dir / cfg.trial_id
        t0 = time.perf_counter()
        row = evaluate(cfg, task, run="candidate_cost", work_dir=cand_dir)
        rows.append({**row, "wall_s": time.perf_counter() - t0, "work_dir": str(cand_dir)})
    return rows


def mean_split(rows: list[dict[str, Any]]) -> dict[str, float | None]:
    """Mean seconds per stage (over the candidates that reached it) and mean wall time."""
    out: dict[str, float | None] = {}
    for key in [f"{s}_s" for s in STAGES] + ["wall_s"]:
        vals = [r[key] for r in rows if r.get(key) is not None]
        out[key] = statistics.fmean(vals) if vals else None
    return out


def load_trained(task: Task, row: dict[str, Any]) -> torch.nn.Module:
    """Rebuild a candidate from its row and ``weights.pt``: eval mode, BatchNorm folded (what TVM compiled)."""
    cfg = make_trial_config(
        {k: v for k, v in row.items() if k.startswith(("arch.", "train."))},
        task.space,
        trial_id=row["trial_id"],
        seed=row["seed"],
    )
    model = build_model(task.family, cfg.arch, task.data.input_shape, task.data.num_classes)
    model.load_state_dict(torch.load(Path(row["work_dir"]) / "weights.pt", weights_only=True))
    fold_batchnorm(model.eval())
    return model


def _batch_s(fn: Callable[[], object], n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return time.perf_counter() - t0


def python_harness(calls: dict[str, Callable[[], object]], m: Measure) -> dict[str, dict[str, float]]:
    """Per-call latency of each callable: warm-up, calibrate calls per repeat, interleave the repeats.

    Calls per repeat: at least ``m.number``, enough to last ``m.min_repeat_ms`` at the fastest of three
    calibration batches (one preempted batch would otherwise shrink the repeats).
    """
    numbers: dict[str, int] = {}
    for name, fn in calls.items():
        _batch_s(fn, m.warmup)
        per_call = min(_batch_s(fn, m.number) for _ in range(3)) / m.number
        numbers[name] = max(m.number, math.ceil(m.min_repeat_ms / 1e3 / per_call))
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(m.repeat):
        for name, fn in calls.items():
            seconds[name].append(_batch_s(fn, numbers[name]) / numbers[name])
    return {name: {**summarize_latency(s), "number": numbers[name]} for name, s in seconds.items()}


def compare_engines(task: Task, profile: DeviceProfile, row: dict[str, Any], threads: int) -> list[dict[str, Any]]:
    """Time the candidate's model at batch 1 in TVM, ONNX Runtime and PyTorch eager."""
    import tvm
    from tvm import relax

    from autotune.measure.local import runtime_threads
    from autotune.numerics import run_compiled

    m, work = profile.measure, Path(row["work_dir"])
    xs = task.data.x_test[: profile.numerics.samples]
    x = np.ascontiguousarray(xs[:1])
    model = load_trained(task, row)

    onnx_path = work / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (torch.from_numpy(x),), str(onnx_path), dynamo=False, input_names=["x"])
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])

    dev = tvm.cpu()
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(work / "model.so")), dev)
    tvm_threads = runtime_threads()

    with torch.inference_mode():
        ref = [model(torch.from_numpy(xi[None])).numpy() for xi in xs]
        outputs = {
            "onnxruntime": [sess.run(None, {"x": xi[None]})[0] for xi in xs],
            "tvm": [run_compiled(vm, xi[None]) for xi in xs],
        }
        diff = {k: max(float(np.max(np.abs(o - r))) for o, r in zip(v, ref, strict=True)) for k, v in outputs.items()}
        xt, main = tvm.runtime.tensor(x, dev), vm["main"]
        xtorch = torch.from_numpy(x)
        timed = python_harness(
            {
                "onnxruntime": lambda: sess.run(None, {"x": x}),
                "pytorch eager": lambda: model(xtorch),
                "tvm": lambda: main(xt),
            },
            m,
        )

    vm.set_input("main", xt)
    for _ in range(m.warmup):
        vm.invoke_stateful("main")
    res = vm.time_evaluator("invoke_stateful", dev, number=m.number, repeat=m.repeat, min_repeat_ms=m.min_repeat_ms)(
        "main"
    )
    results = [
        ("tvm", "time_evaluator", {**summarize_latency(list(res.results)), "number": None}),
        ("tvm", "python", timed["tvm"]),
        ("onnxruntime", "python", timed["onnxruntime"]),
        ("pytorch eager", "python", timed["pytorch eager"]),
    ]
    engine_threads = {
        "tvm": tvm_threads,
        "onnxruntime": so.intra_op_num_threads,
        "pytorch eager": torch.get_num_threads(),
    }
    return [
        {"engine": e, "harness": h, **stats, "max_abs_diff": diff.get(e, 0.0), "threads": engine_threads[e]}
        for e, h, stats in results
    ]


def _f(v: float | None, fmt: str = ".2f") -> str:
    return "—" if v is None else format(v, fmt)


def split_table(rows: list[dict[str, Any]], mean: dict[str, float | None]) -> Table:
    t = Table(title="Per-candidate cost (seconds)")
    for col in ["cand", "status", "params", "epochs", "val acc", "test acc", "lat ms", *STAGES, "wall"]:
        t.add_column(col, justify="left" if col in ("cand", "status") else "right")
    for r in rows:
        t.add_row(
            r["trial_id"],
            r["status"],
            str(r.get("params", "—")),
            str(r.get("epochs", "—")),
            _f(r.get("val_accuracy"), ".3f"),
            _f(r.get("accuracy"), ".3f"),
            _f(r.get("latency_ms"), ".3f"),
            *(_f(r.get(f"{s}_s")) for s in STAGES),
            _f(r["wall_s"]),
        )
    wall = mean["wall_s"] or 0.0
    shares = [f"{_f(mean[f'{s}_s'])} ({100 * (mean[f'{s}_s'] or 0.0) / wall:.0f}%)" for s in STAGES]
    t.add_row("mean", "", "", "", "", "", "", *shares, _f(mean["wall_s"]), style="bold", end_section=True)
    return t


def engine_table(engines: list[dict[str, Any]], row: dict[str, Any]) -> Table:
    t = Table(title=f"Batch-1 latency of candidate {row['trial_id']} ({engines[0]['threads']} thread(s), ms per call)")
    for col in ["engine", "harness", "median", "p90", "CoV", "calls/repeat", "max |Δ| vs torch"]:
        t.add_column(col, justify="left" if col in ("engine", "harness") else "right")
    for e in engines:
        t.add_row(
            e["engine"],
            e["harness"],
            _f(e["latency_ms"], ".4f"),
            _f(e["latency_p90_ms"], ".4f"),
            f"{100 * e['latency_cov']:.1f}%",
            "auto" if e["number"] is None else str(e["number"]),
            f"{e['max_abs_diff']:.2e}",
        )
    t.add_row(
        "tvm",
        "search (evaluate)",
        _f(row["latency_ms"], ".4f"),
        _f(row["latency_p90_ms"], ".4f"),
        f"{100 * row['latency_cov']:.1f}%",
        "auto",
        _f(row.get("max_abs_diff"), ".2e"),
    )
    return t


def write_report(out: Path, name: str, report: dict[str, Any]) -> Path:
    """Write a bench's JSON report as ``<out>/<name>.json`` and say where."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {path}")
    return path


def git_commit() -> str | None:
    """The checkout's commit (short), or None outside a git checkout."""
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def environment(profile: DeviceProfile, threads: int) -> dict[str, Any]:
    import tvm

    from autotune.compiler import target_json

    commit = git_commit()
    flags = cpu_flags()
    isa = [
        f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "asimddp") if f in flags
    ]
    return {
        "profile": profile.name,
        "target": target_json(profile),
        "cpu": this_machine()[0],
        "llvm_cpu": tvm.target.codegen.llvm_get_system_cpu(),  # the microarchitecture, e.g. znver3
        "cpu_isa": isa,
        "threads": threads,
        "git_commit": commit,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "tvm": tvm.__version__,
            "onnxruntime": ort.__version__,
            "autotune": autotune.__version__,
        },
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    space, profile = autotune.load_space(args.space), autotune.load_profile(args.device)
    threads = args.threads or profile.measure.threads
    profile = profile.model_copy(update={"measure": profile.measure.model_copy(update={"threads": threads})})
    os.environ.update(worker_env(profile))  # TVM reads its thread count when first imported (inside evaluate)
    os.environ.setdefault("TVM_THREAD_POOL_SPIN_COUNT", "0")
    torch.set_num_threads(threads)
    console = Console(width=None if sys.stdout.isatty() else 150)
    started = dt.datetime.now().astimezone()

    env = environment(profile, threads)
    task = prepare_task(space, profile)
    with nullcontext(args.work_dir) if args.work_dir else tempfile.TemporaryDirectory(prefix="candidate_cost-") as wd:
        rows = run_candidates(task, args.candidates, args.seed, Path(wd))
        ok = [r for r in rows if r["status"] == "ok" and r.get("accuracy") is not None]
        best = max(ok, key=lambda r: r["accuracy"]) if ok else None
        engines = compare_engines(task, profile, best, threads) if best else []
    load_avg = os.getloadavg()

    mean = mean_split(rows)
    console.print(split_table(rows, mean))
    for r in rows:
        if r.get("error"):
            console.print(f"[red]{r['trial_id']}[/red] {r['status']}: {r['error']}")
    if best:
        console.print(engine_table(engines, best))
    else:
        console.print("[red]no candidate finished with status 'ok': no engine comparison[/red]")
    console.print(f"load average (1, 5, 15 min): {load_avg[0]:.2f} {load_avg[1]:.2f} {load_avg[2]:.2f}")

    report = {
        "date": started.isoformat(timespec="seconds"),
        "space": space.name,
        "seed": args.seed,
        **env,
        "load_avg": load_avg,
        "candidates": [{k: v for k, v in r.items() if k != "work_dir"} for r in rows],
        "mean_s": mean,
        "best_trial_id": best["trial_id"] if best else None,
        "engines": engines,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"candidate_cost-{profile.name}-{started:%Y%m%d}.json"
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
