"""How faithfully the search's latency ranks candidates: TVM builds against ONNX Runtime, per candidate.

Random MobileNets from the latency-only spaces ``latency_mobilenet32`` (3×32×32, 10 classes) and
``latency_mobilenet224`` (3×224×224, 1000 classes), untrained (latency does not depend on the
weights), BatchNorm folded, each through the project's own build (``export_program`` →
``compile_artifact``) several ways:

- ``tvm naive``: TVM's untuned lowering (``tuning.default_schedules: false``), scalar loop nests;
- ``tvm default``: default schedules (``autotune.tuning.default``), what the ``host`` profile builds;
- ``tvm space-tuned`` (with ``--db SPACE=DIR``): compiled from a database that ``autotune tune`` filled
  for that space, default schedules for the kernels it lacks; the candidates are drawn outside
  ``tune``'s sample (a candidate in it is skipped and another drawn);
- ``tvm tuned alone`` (with ``--per-candidate N``): the first N candidates of the 32×32 space, each
  tuned on its own with ``--per-candidate-trials`` MetaSchedule trials into a fresh database;

and beside them ONNX Runtime (CPU provider), a second ONNX Runtime session of the same model
(``onnxruntime retest``), OpenVINO's CPU plugin (fp32, when installed) and PyTorch eager on the same
model and input. All are timed by one Python harness (warm-up, calls per repeat calibrated to
``min_repeat_ms``, repeats interleaved across engines), same thread count. Every TVM build is checked
against PyTorch first.

Per space and engine: the median and range of the latency ratio to ONNX Runtime, and Kendall's τ of
the engine's latencies against ONNX Runtime's (how well it ranks the candidates as a deployed
runtime would) and against OpenVINO's. The retest's τ is the most any engine can reach against this
measurement of ONNX Runtime (its own repeatability); OpenVINO's says how far two deployed runtimes
agree.

Run from the repository root (about 10 minutes on 2 cores, plus the per-candidate tuning):

    autotune tune --space latency_mobilenet32 --device host --budget 1h --results-dir results/fidelity
    python bench/fidelity.py [--n32 12] [--n224 6] [--threads 1] [--seed 1] \
        [--db latency_mobilenet32=results/fidelity/tuning_db/host] [--per-candidate 3]

Prints a table and writes ``results/bench/fidelity-<profile>-<YYYYMMDD>.json`` with the CPU and, per
database, how long ``tune`` ran on it and its sample.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
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
from autotune.backends import BACKENDS
from autotune.compiler import compile_artifact
from autotune.config.device_profile import DeviceProfile, Measure
from autotune.exporter import export_program
from autotune.numerics import check_numerics
from autotune.preflight import sample_configs
from autotune.space import sample_params
from autotune.task import make_trial_config, prepare_task
from autotune.tuning import TuningRequest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from candidate_cost import ROOT, environment, python_harness, write_report  # noqa: E402

ENGINES = (
    "tvm naive",
    "tvm default",
    "tvm space-tuned",
    "tvm tuned alone",
    "onnxruntime",
    "onnxruntime retest",
    "openvino",
    "pytorch eager",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="host", help="device profile (local runner): a path or a shipped name")
    p.add_argument("--n32", type=int, default=12, help="random candidates at 3x32x32")
    p.add_argument("--n224", type=int, default=6, help="random candidates at 3x224x224")
    p.add_argument("--threads", type=int, default=1, help="threads for every engine")
    p.add_argument("--seed", type=int, default=1, help="sampler seed (the candidates)")
    p.add_argument(
        "--db",
        action="append",
        default=[],
        metavar="SPACE=DIR",
        help="a space's tuning database from 'autotune tune' (engine 'tvm space-tuned')",
    )
    p.add_argument("--per-candidate", type=int, default=0, help="32x32 candidates also tuned alone")
    p.add_argument("--per-candidate-trials", type=int, default=256, help="MetaSchedule trials for each")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "bench")
    return p.parse_args(argv)


def _variant(profile: DeviceProfile, default_schedules: bool) -> DeviceProfile:
    tuning = profile.tuning.model_copy(update={"default_schedules": default_schedules})
    return profile.model_copy(update={"tuning": tuning})


def _builds(space: str, i: int, args: argparse.Namespace, dbs: dict[str, Path], work: Path) -> dict[str, Any]:
    """The TVM builds of candidate ``i`` of ``space``: engine → (profile, tuning request or None)."""
    builds: dict[str, Any] = {"tvm naive": (False, None), "tvm default": (True, None)}
    if space in dbs:
        builds["tvm space-tuned"] = (True, TuningRequest(trials=0, db_dir=str(dbs[space])))
    if space == "latency_mobilenet32" and i < args.per_candidate:
        alone = TuningRequest(trials=args.per_candidate_trials, db_dir=str(work / "alone_db"))
        builds["tvm tuned alone"] = (True, alone)
    return builds


def _candidate(
    task: Any, params: dict[str, Any], profile: DeviceProfile, threads: int, work: Path, builds: dict[str, Any]
) -> dict[str, Any]:
    """Compile one candidate each way of ``builds``, check each against PyTorch, time every engine."""
    import tvm
    from tvm import relax

    cfg = make_trial_config(params, task.space, trial_id="c", seed=0, passes=task.passes)
    model, structure = task.build(cfg)
    program, exported, _ = export_program(model, task.data.input_shape)
    x = np.ascontiguousarray(task.data.x_test[:1])
    calls, compile_s, diffs, tuned = {}, {}, {}, {}
    dev = tvm.cpu()
    xt = tvm.runtime.tensor(x, dev)
    for name, (on, request) in builds.items():
        art = compile_artifact(program, profile=_variant(profile, on), out_dir=work / name.replace(" ", "_"),
                               input_shape=task.data.input_shape, tuning=request)  # fmt: skip
        diffs[name] = check_numerics(art, exported, task.data.x_test[:4], profile=profile).max_abs_diff
        compile_s[name] = art.compile_s
        tuned[name] = {"tuned_share": art.tuned_share, "tune_s": art.tune_s, "tuned_trials": art.tuned_trials}
        vm = relax.VirtualMachine(tvm.runtime.load_module(art.path), dev)
        calls[name] = lambda main=vm["main"]: main(xt)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(exported, (torch.from_numpy(x),), buf, dynamo=False, input_names=["x"])
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    sessions = [ort.InferenceSession(buf.getvalue(), so, providers=["CPUExecutionProvider"]) for _ in range(2)]
    xtorch = torch.from_numpy(x)
    calls["onnxruntime"] = lambda: sessions[0].run(None, {"x": x})
    calls["onnxruntime retest"] = lambda: sessions[1].run(None, {"x": x})
    if BACKENDS.get("openvino").missing() is None:
        (work / "model.onnx").write_bytes(buf.getvalue())
        ov_run, _ = BACKENDS.get("openvino").session(str(work / "model.onnx"), threads=threads, precision="fp32")
        calls["openvino"] = lambda: ov_run(x)
    calls["pytorch eager"] = lambda: exported(xtorch)
    with torch.inference_mode():
        timed = python_harness(calls, Measure(warmup=3, number=3, repeat=7, min_repeat_ms=100))
    return {
        "arch": params,
        **structure,
        "latency_ms": {e: timed[e]["latency_ms"] for e in timed},
        "latency_cov": {e: timed[e]["latency_cov"] for e in timed},
        "compile_s": compile_s,
        "max_abs_diff": diffs,
        "tuning": tuned,
    }


def _database_info(directory: Path) -> dict[str, Any]:
    """What ``autotune tune`` left in a database: its spaces' tuning time and sample, records, workloads."""
    ledger = json.loads((directory / "ledger.json").read_text())
    records = sum(1 for line in (directory / "database_tuning_record.json").open() if line.strip())
    return {"path": str(directory), "spaces": ledger.get("spaces", {}), "workloads": len(ledger["workloads"]),
            "records": records, "target": ledger["target"]}  # fmt: skip


def _tune_sample(space_name: str, info: dict[str, Any]) -> list[dict[str, Any]]:
    """The parameter sets ``autotune tune`` sampled for this space (to keep the bench's candidates out)."""
    space = autotune.load_space(space_name)
    out = []
    for entry in info["spaces"].values():
        if entry.get("space") == space.name:
            out += sample_configs(space, int(entry["samples"]), int(entry.get("seed", 0)))
    return out


def _summary(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    out = {}
    for e in ENGINES:
        have = [r for r in rows if e in r["latency_ms"]]
        if not have:
            continue
        ms = [r["latency_ms"][e] for r in have]
        ort_ms = [r["latency_ms"]["onnxruntime"] for r in have]
        ratios = [a / b for a, b in zip(ms, ort_ms, strict=True)]
        tau = kendalltau(ms, ort_ms).statistic if len(have) > 1 else float("nan")
        out[e] = {"candidates": len(have), "ratio_median": statistics.median(ratios), "ratio_min": min(ratios),
                  "ratio_max": max(ratios), "kendall_tau": float(tau)}  # fmt: skip
        both = [r for r in have if "openvino" in r["latency_ms"]]
        if len(both) > 1:
            ov_ms = [r["latency_ms"]["openvino"] for r in both]
            out[e]["kendall_tau_openvino"] = float(kendalltau([r["latency_ms"][e] for r in both], ov_ms).statistic)
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
    for c in ("space", "candidates", "engine", "ratio median", "ratio range", "Kendall τ vs ORT", "τ vs OpenVINO"):
        table.add_column(c, justify="left" if c in ("space", "engine") else "right")
    dbs = {k: Path(v) for k, _, v in (d.partition("=") for d in args.db)}
    report["databases"] = {k: _database_info(v) for k, v in dbs.items()}
    with tempfile.TemporaryDirectory(prefix="bench-fidelity-") as wd:
        for space_name, n in (("latency_mobilenet32", args.n32), ("latency_mobilenet224", args.n224)):
            if n <= 0:
                continue
            task = prepare_task(autotune.load_space(space_name), profile)
            excluded = _tune_sample(space_name, report["databases"][space_name]) if space_name in dbs else []
            study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=args.seed))
            rows, skipped = [], 0
            while len(rows) < n:
                params = sample_params(task.space, study.ask())
                if params in excluded:  # in tune's sample: not a fair test of the database
                    skipped += 1
                    continue
                i = len(rows)
                work = Path(wd) / space_name / str(i)
                builds = _builds(space_name, i, args, dbs, work)
                rows.append(_candidate(task, params, profile, args.threads, work, builds))
                lat = rows[-1]["latency_ms"]
                console.print(f"  {space_name} #{i}: " + ", ".join(f"{e} {lat[e]:.4g} ms" for e in lat))
            summary = _summary(rows)
            report["spaces"][space_name] = {"candidates": rows, "summary": summary, "skipped_in_tune_sample": skipped}
            for e, s in summary.items():
                table.add_row(space_name, str(s["candidates"]), e, f"{s['ratio_median']:.2f}×",
                              f"{s['ratio_min']:.2f}–{s['ratio_max']:.2f}×", f"{s['kendall_tau']:.2f}",
                              f"{s.get('kendall_tau_openvino', float('nan')):.2f}")  # fmt: skip
    console.print(table)
    name = f"fidelity-{profile.name}-{dt.date.today():%Y%m%d}"
    write_report(args.out, name, report)


if __name__ == "__main__":
    main()
