"""How faithfully the search's latency ranks candidates: TVM builds against ONNX Runtime, per candidate.

Random MobileNets from the latency-only spaces ``latency_mobilenet32`` (3×32×32, 10 classes) and
``latency_mobilenet224`` (3×224×224, 1000 classes), untrained (latency does not depend on the
weights), BatchNorm folded, each through the project's own build (``export_program`` →
``compile_artifact``) twice:

- ``tvm naive``: TVM's untuned lowering (``tuning.default_schedules: false``), scalar loop nests;
- ``tvm default``: default schedules (``autotune.tuning.default``), what the ``host`` profile builds;

and beside them ONNX Runtime (CPU provider) and PyTorch eager on the same model and input. All four
are timed by one Python harness (warm-up, calls per repeat calibrated to ``min_repeat_ms``, repeats
interleaved across engines), same thread count. Every TVM build is checked against PyTorch first.

Per space and engine: the median and range of the latency ratio to ONNX Runtime, and Kendall's τ of
the engine's latencies against ONNX Runtime's (how well it ranks the candidates as a deployed
runtime would). Not yet here: TVM from a space-tuned database and per-candidate tuned TVM (they
need ``autotune tune``, issue 17).

Run from the repository root (about 10 minutes on 2 cores):

    python bench/fidelity.py [--n32 12] [--n224 6] [--threads 1] [--seed 1]

Prints a table and writes ``results/bench/fidelity-<profile>-<YYYYMMDD>.json`` with the CPU.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import os
import statistics
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import optuna
import torch
from rich.console import Console
from rich.table import Table
from scipy.stats import kendalltau

import autotune
from autotune.compiler import compile_artifact
from autotune.config.device_profile import DeviceProfile, Measure
from autotune.exporter import export_program
from autotune.numerics import check_numerics
from autotune.space import sample_params
from autotune.task import make_trial_config, prepare_task

sys.path.insert(0, str(Path(__file__).resolve().parent))
from candidate_cost import ROOT, environment, python_harness, write_report  # noqa: E402

ENGINES = ("tvm naive", "tvm default", "onnxruntime", "pytorch eager")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="host", help="device profile (local runner): a path or a shipped name")
    p.add_argument("--n32", type=int, default=12, help="random candidates at 3x32x32")
    p.add_argument("--n224", type=int, default=6, help="random candidates at 3x224x224")
    p.add_argument("--threads", type=int, default=1, help="threads for every engine")
    p.add_argument("--seed", type=int, default=1, help="sampler seed (the candidates)")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "bench")
    return p.parse_args(argv)


def _variant(profile: DeviceProfile, default_schedules: bool) -> DeviceProfile:
    tuning = profile.tuning.model_copy(update={"default_schedules": default_schedules})
    return profile.model_copy(update={"tuning": tuning})


def _candidate(task: Any, params: dict[str, Any], profile: DeviceProfile, threads: int, work: Path) -> dict[str, Any]:
    """Compile one candidate both ways, check both against PyTorch, time the four engines."""
    import tvm
    from tvm import relax

    cfg = make_trial_config(params, task.space, trial_id="c", seed=0, passes=task.passes)
    model, structure = task.build(cfg)
    program, exported, _ = export_program(model, task.data.input_shape)
    x = np.ascontiguousarray(task.data.x_test[:1])
    calls, compile_s, diffs = {}, {}, {}
    dev = tvm.cpu()
    xt = tvm.runtime.tensor(x, dev)
    for name, on in (("tvm naive", False), ("tvm default", True)):
        art = compile_artifact(program, profile=_variant(profile, on), out_dir=work / name.replace(" ", "_"),
                               input_shape=task.data.input_shape)  # fmt: skip
        diffs[name] = check_numerics(art, exported, task.data.x_test[:4], profile=profile).max_abs_diff
        compile_s[name] = art.compile_s
        vm = relax.VirtualMachine(tvm.runtime.load_module(art.path), dev)
        calls[name] = lambda main=vm["main"]: main(xt)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(exported, (torch.from_numpy(x),), buf, dynamo=False, input_names=["x"])
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    sess = ort.InferenceSession(buf.getvalue(), so, providers=["CPUExecutionProvider"])
    xtorch = torch.from_numpy(x)
    calls["onnxruntime"] = lambda: sess.run(None, {"x": x})
    calls["pytorch eager"] = lambda: exported(xtorch)
    with torch.inference_mode():
        timed = python_harness(calls, Measure(warmup=3, number=3, repeat=7, min_repeat_ms=100))
    return {
        "arch": params,
        **structure,
        "latency_ms": {e: timed[e]["latency_ms"] for e in ENGINES},
        "latency_cov": {e: timed[e]["latency_cov"] for e in ENGINES},
        "compile_s": compile_s,
        "max_abs_diff": diffs,
    }


def _summary(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    ort_ms = [r["latency_ms"]["onnxruntime"] for r in rows]
    out = {}
    for e in ENGINES:
        ms = [r["latency_ms"][e] for r in rows]
        ratios = [a / b for a, b in zip(ms, ort_ms, strict=True)]
        tau = kendalltau(ms, ort_ms).statistic if len(rows) > 1 else float("nan")
        out[e] = {"ratio_median": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
                  "kendall_tau": float(tau)}  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    os.environ.update({"TVM_NUM_THREADS": str(args.threads), "TVM_BIND_THREADS": "0"})  # before TVM loads
    torch.set_num_threads(args.threads)
    console = Console(width=110)
    profile = autotune.load_profile(args.device)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    report: dict[str, Any] = {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "spaces": {}}
    report["environment"] = environment(profile, args.threads)
    table = Table(title=f"Latency against ONNX Runtime ({args.threads} thread(s), {report['environment']['cpu']})")
    for c in ("space", "candidates", "engine", "ratio median", "ratio range", "Kendall τ vs ORT"):
        table.add_column(c, justify="left" if c in ("space", "engine") else "right")
    with tempfile.TemporaryDirectory(prefix="bench-fidelity-") as wd:
        for space_name, n in (("latency_mobilenet32", args.n32), ("latency_mobilenet224", args.n224)):
            if n <= 0:
                continue
            task = prepare_task(autotune.load_space(space_name), profile)
            study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=args.seed))
            rows = []
            for i in range(n):
                params = sample_params(task.space, study.ask())
                rows.append(_candidate(task, params, profile, args.threads, Path(wd) / space_name / str(i)))
                lat = rows[-1]["latency_ms"]
                console.print(f"  {space_name} #{i}: " + ", ".join(f"{e} {lat[e]:.4g} ms" for e in ENGINES))
            summary = _summary(rows)
            report["spaces"][space_name] = {"candidates": rows, "summary": summary}
            for e in ENGINES:
                s = summary[e]
                table.add_row(space_name, str(n), e, f"{s['ratio_median']:.2f}×",
                              f"{s['ratio_min']:.2f}–{s['ratio_max']:.2f}×", f"{s['kendall_tau']:.2f}")  # fmt: skip
    console.print(table)
    name = f"fidelity-{profile.name}-{dt.date.today():%Y%m%d}"
    write_report(args.out, name, report)


if __name__ == "__main__":
    main()
