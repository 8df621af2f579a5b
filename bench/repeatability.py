"""Test-retest: how far one build's measured latency moves between timings a few seconds apart, under
each timing protocol, on this machine.

``--candidates`` random architectures of ``--space`` are compiled once each (default schedules, as
``host`` builds them) and timed ``--timings`` times, round-robin over the candidates in a shuffled
order, so a candidate's timings lie tens of seconds apart. Each timing runs, back to back:

* ``runner``: the profile's runner as a search calls it (``latency_ms``: the median of repeats in
  one short window, repeated until that median's ~95 % interval is within ``ci_target``);
* ``paired, conv ref``: ``autotune.measure.paired.time_paired`` against the convolutional reference
  network (``autotune.reference.reference_model``), the candidate / reference ratio;
* ``paired, MLP ref``: the same against the MLP reference (the drift check's network before it);
* ``long window``: the candidate's own median over the conv-paired rounds (a wider window, no
  reference), to tell the pairing's effect from the window's.

Per protocol and candidate: max / min over its timings, and the share of its timings within ±5 %
and ±10 % of its median; the table gives the median over candidates and the worst one.

Run from the repository root (about 5 minutes on 2 cores with the defaults):

    python bench/repeatability.py [--space latency_mobilenet32] [--candidates 8] [--timings 6] [--seed 0]

Prints a table and writes ``results/bench/repeatability-<space>-<YYYYMMDD>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

import autotune

sys.path.insert(0, str(Path(__file__).resolve().parent))
from candidate_cost import ROOT, environment, write_report  # noqa: E402

from autotune.task import worker_env  # noqa: E402

PROTOCOLS = ("runner", "paired, conv ref", "paired, MLP ref", "long window")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="host", help="device profile (local runner)")
    p.add_argument("--space", default="latency_mobilenet32")
    p.add_argument("--candidates", type=int, default=8)
    p.add_argument("--timings", type=int, default=6, help="timings of each candidate per protocol")
    p.add_argument("--rounds", type=int, nargs=2, default=[20, 40], help="paired rounds: at least, at most")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "results" / "bench", help="where the JSON goes")
    return p.parse_args(argv)


def _compile(model: Any, profile: Any, shape: tuple[int, ...], out: Path) -> Any:
    from autotune.deploy import export_and_compile
    from autotune.quiet import QuietLock

    return export_and_compile(model, profile, input_shape=shape, out_dir=out, lock=QuietLock(None))


def _loaded(path: str, x: np.ndarray) -> Any:
    """A warmed-up Relax VM of ``path`` with ``x`` set, and its ``vm_repeat`` and seconds per call."""
    import tvm
    from tvm import relax

    from autotune.measure.paired import vm_repeat

    dev = tvm.cpu()
    vm = relax.VirtualMachine(tvm.runtime.load_module(path), dev)
    vm.set_input("main", tvm.runtime.tensor(np.ascontiguousarray(x, dtype=np.float32), dev))
    for _ in range(10):
        vm.invoke_stateful("main")
    rep = vm_repeat(vm, dev)
    return vm, rep, min(rep(5) for _ in range(3))


def spread(values: list[float]) -> dict[str, float]:
    v = np.asarray(values)
    med = np.median(v)
    return {
        "max_over_min": float(v.max() / v.min()),
        "within_5pct": float(np.mean(np.abs(v / med - 1) <= 0.05)),
        "within_10pct": float(np.mean(np.abs(v / med - 1) <= 0.10)),
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    profile = autotune.load_profile(args.device)
    assert "tvm" not in sys.modules, "TVM sizes its thread pool at import: set the profile's threads first"
    os.environ.update(worker_env(profile))
    import optuna
    import torch

    from autotune.measure import RUNNERS
    from autotune.measure.paired import calls_for, time_paired
    from autotune.models import build_model
    from autotune.reference import reference_model
    from autotune.space import sample_params
    from autotune.task import make_trial_config, prepare_task

    space = autotune.load_space(args.space)
    task = prepare_task(space, profile)
    shape, classes = task.data.input_shape, task.data.num_classes
    x = np.ascontiguousarray(task.data.x_test[:1])
    work = Path(tempfile.mkdtemp(prefix="repeatability-"))
    refs = {
        "paired, conv ref": (_compile(reference_model(shape, classes), profile, shape, work / "conv"), x),
        "paired, MLP ref": (
            _compile(reference_model((int(np.prod(shape)),), classes), profile, (int(np.prod(shape)),), work / "mlp"),
            x.reshape(1, -1),
        ),
    }
    loaded_refs = {k: _loaded(a.path, xr) for k, (a, xr) in refs.items()}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=args.seed))
    cands = []
    for i in range(args.candidates):
        cfg = make_trial_config(sample_params(space, study.ask()), space, trial_id=f"p{i}", seed=i)
        torch.manual_seed(i)
        model = build_model(task.family, cfg.arch, shape, classes).eval()
        cands.append(_compile(model, profile, shape, work / str(i)))
        print(f"  compiled {i + 1}/{args.candidates}", file=sys.stderr, flush=True)
    vms = [_loaded(a.path, x) for a in cands]
    ms = profile.measure.min_repeat_ms
    timings: dict[str, list[list[float]]] = {p: [[] for _ in cands] for p in PROTOCOLS}
    order = random.Random(args.seed)
    for t in range(args.timings):
        for i in order.sample(range(len(cands)), len(cands)):
            timings["runner"][i].append(RUNNERS.get("local").measure(cands[i], profile, x).latency_ms)
            _, rep, per_call = vms[i]
            for name, (_, ref_rep, ref_call) in loaded_refs.items():
                n0 = profile.measure.number
                number = (calls_for(per_call, ms, n0), calls_for(ref_call, ms, n0))
                pt = time_paired(rep, ref_rep, number=number, min_rounds=args.rounds[0], max_rounds=args.rounds[1])
                timings[name][i].append(pt.ratio)
                if name == "paired, conv ref":
                    timings["long window"][i].append(pt.candidate_ms)
        print(f"  timing {t + 1}/{args.timings} done", file=sys.stderr, flush=True)
    summary = {}
    for p in PROTOCOLS:
        per = [spread(v) for v in timings[p]]
        summary[p] = {
            "median_max_over_min": float(np.median([s["max_over_min"] for s in per])),
            "worst_max_over_min": float(max(s["max_over_min"] for s in per)),
            "within_5pct": float(np.mean([s["within_5pct"] for s in per])),
            "within_10pct": float(np.mean([s["within_10pct"] for s in per])),
        }
    table = Table(title=f"test-retest, {args.space}: {args.candidates} candidates × {args.timings} timings")
    for col in ("protocol", "max/min (median cand.)", "max/min (worst)", "within ±5 %", "within ±10 %"):
        table.add_column(col)
    for p, s in summary.items():
        table.add_row(p, f"{s['median_max_over_min']:.3f}", f"{s['worst_max_over_min']:.3f}",
                      f"{s['within_5pct']:.0%}", f"{s['within_10pct']:.0%}")  # fmt: skip
    Console().print(table)
    report = {
        "environment": environment(profile, profile.measure.threads),
        "date": dt.date.today().isoformat(),
        "space": args.space,
        "candidates": args.candidates,
        "timings": args.timings,
        "rounds": args.rounds,
        "summary": summary,
        "per_candidate": {p: timings[p] for p in PROTOCOLS},
    }
    write_report(args.out, f"repeatability-{args.space}-{dt.date.today():%Y%m%d}", report)


if __name__ == "__main__":
    main()
