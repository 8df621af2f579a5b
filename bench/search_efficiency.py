"""Search efficiency: how fast each search strategy finds a good accuracy/latency front, and how well
the latency predictor predicts.

Part 1, the predictor: ``--predictor-candidates`` (default 160) architectures sampled uniformly from
the space are built untrained, compiled by TVM and timed on the profile (latency does not depend on
the weights). The predictor (``autotune.predictor``) is fitted on the first ``--predictor-train``
(default 100) and scored on the rest: the share predicted within ±10 % (floor 80 %, goal 90 %),
and, since that held-out set is small, the same over 20 random splits of the same data. These
measurements (with each candidate's kernels, timed into the profile's kernel table) are the
profile's predictor history the ``autotune`` runs of part 2 start with, as a second run on a
profile would; each trial then uses the kernel-level or the network-level predictor or a blend of
both, whichever cross-validates best (``autotune.blend``, ``latency_pred_model``). With a paired
profile (``--device host_paired``) part 1 times its candidates paired with the reference network,
as the searches' trials are, and the runs share its calibration.

Part 2, the searches: the same ``--trials``-trial search (default 24, concurrency 2, ASHA on)
with the space's latency constraint tightened to ``--latency-max`` ms (default: the latency that a
third of part 1's architectures meet, so about two thirds break it on the machine at hand; 0.08 ms
did that on the Intel Xeon, on AMD EPYC Zen 5 only 10 % broke it; the shipped 5 ms bound breaks none,
so nothing could be screened) run for each strategy and each of ``--seeds`` (default 0 1 2):

- ``autotune``: multi-objective TPE (constraint-aware) + the latency predictor + constraint-first
- ``tpe``: the same sampler, every candidate trained (``--no-predictor --no-constraint-first``)
- ``random``: uniform random sampling, every candidate trained

Each run's hypervolume (held-out test accuracy ↑, latency ↓; feasible ``ok`` rows; reference point
accuracy ``--min-accuracy`` (default 0.5) and latency = the constraint) is computed after every
finished trial against the wall time since the run started. Headline: the share of random
sampling's wall time that autotune needs to reach random sampling's final hypervolume, per seed
(floor ≤ 50 % in each seed).

With ``--equal-wall`` the strategies get equal wall time instead of equal trials: per seed random
sampling runs its ``--trials`` first, then each other strategy runs until that run's wall time is
spent (at most 4× the trials). A screened trial costs a compile instead of a training, so at equal
trials autotune stops long before random sampling does; at equal wall it keeps searching. Its
hypervolume after its first ``--trials`` trials is reported too (equal trials, from the same run).

Run from the repository root (about 30 minutes on 2 cores):

    python bench/search_efficiency.py [--trials 24] [--seeds 0 1 2] [--latency-max MS]

and on the 3x32x32 space (``shapes``: MobileNets that need a few epochs, accuracy 0.3-0.7):

    python bench/search_efficiency.py --space shapes_mobilenet32 --trials 16 --min-accuracy 0.3 \
        --predictor-candidates 60 --predictor-train 40

Also reported: the same for the seed-averaged hypervolume curves (against random's mean wall time).
Prints two tables; writes ``results/bench/search_efficiency[-<space>]-<profile>-<YYYYMMDD>.json`` (the
space named unless it is the default; rewritten after every run, ``"complete": false`` until the
last, so a killed bench keeps what it finished; each run with its trials' status, screening,
accuracy, latency and predicted latency) and a plot of hypervolume against wall time beside
it (``.png``, not committed). ``--work DIR`` keeps part 1 and the runs' result
directories in DIR; a later invocation with the same ``--work``, space, profile and part-1 sizes,
on code that builds the same (the predictor's environment: ``BUILD_VERSION``, the CPU, TVM; else
the history would be set aside and the searches would start without it),
reuses part 1 (its measurements, kernel table and calibration) and measures only the searches, for
example one strategy again after a change (``--strategies autotune``), to combine with
``--summarize``. ``--summarize JSON [JSON ...]`` re-prints a saved result (recomputing
the summary figures from its curves); several results of the same settings, say one seed per
session with the same ``--latency-max``, are combined into the first file given.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from efficiency_report import combine, curve, plot, summarize  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
STRATEGIES: dict[str, dict[str, Any]] = {
    "autotune": {"sampler": "tpe", "predictor": True, "constraint_first": True},
    "tpe": {"sampler": "tpe", "predictor": False, "constraint_first": False},
    "random": {"sampler": "random", "predictor": False, "constraint_first": False},
}


def predictor_part(space_path: Path, device: str, n: int, n_train: int, results: Path, seed: int) -> dict[str, Any]:
    """Time ``n`` random untrained candidates; fit on ``n_train``, score the rest; keep the history."""
    import numpy as np
    import optuna
    import torch

    import autotune
    from autotune.compiler import compile_artifact
    from autotune.compiler.workloads import read_workloads
    from autotune.exporter import export_program
    from autotune.kernel_table import KernelTable, table_path
    from autotune.measure import RUNNERS
    from autotune.models import build_model
    from autotune.predictor import (
        LatencyPredictor,
        environment_key,
        history_path,
        record_measurement,
        structure_features,
    )
    from autotune.space import sample_params
    from autotune.task import make_trial_config, prepare_task

    space, profile = autotune.load_space(space_path), autotune.load_profile(device)
    task = prepare_task(space, profile)
    key, hist = environment_key(profile), history_path(profile, results)
    table = KernelTable.load(table_path(profile, results), key)
    if profile.measure.paired:  # timed as a trial times them: paired with the reference network, whose
        from autotune.quiet import QuietLock  # calibration the runs share (``<results>/.predictor``)
        from autotune.reference import install_pairing

        install_pairing(task, results / ".predictor-reference", QuietLock(None), results / ".predictor")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    feats, lats = [], []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="predictor-") as work:
        for i in range(n):
            cfg = make_trial_config(sample_params(space, study.ask()), space, trial_id=f"p{i}", seed=i)
            torch.manual_seed(i)
            model = build_model(task.family, cfg.arch, task.data.input_shape, task.data.num_classes).eval()
            f = structure_features(model, task.data.input_shape)
            program, _, _ = export_program(model, task.data.input_shape)
            art = compile_artifact(
                program, profile=profile, out_dir=Path(work) / str(i), input_shape=task.data.input_shape
            )
            m = RUNNERS.get("local").measure(art, profile, task.data.x_test[:1])
            workloads = read_workloads(Path(art.path).parent) or []
            new = table.fill(art.path, workloads, profile)  # the kernel table, as a search fills it
            record_measurement(hist, key, f, m.latency_ms, run="bench-predictor", trial_id=cfg.trial_id,
                               kernels=[w.__dict__ for w in workloads], new_kernels=new)  # fmt: skip
            feats.append(f)
            lats.append(m.latency_ms)
            print(f"  predictor data {i + 1}/{n}: {m.latency_ms:.4f} ms", file=sys.stderr, flush=True)
    collect_s = time.perf_counter() - t0
    pred = LatencyPredictor().fit(feats[:n_train], lats[:n_train])
    errs = np.array([pred.predict(f).latency_ms / y - 1 for f, y in zip(feats[n_train:], lats[n_train:], strict=True)])
    # the held-out set is small: the same score over 20 random train/held-out splits of the same data
    rng, splits = np.random.default_rng(0), []
    for _ in range(20):
        idx = rng.permutation(n)
        p = LatencyPredictor().fit([feats[i] for i in idx[:n_train]], [lats[i] for i in idx[:n_train]])
        e = np.array([p.predict(feats[i]).latency_ms / lats[i] - 1 for i in idx[n_train:]])
        splits.append(float(np.mean(np.abs(e) <= 0.10)))
    return {
        "within_10pct_random_splits": {"mean": float(np.mean(splits)), "min": min(splits), "max": max(splits)},
        "candidates": n,
        "train": n_train,
        "held_out": int(len(errs)),
        "within_10pct": float(np.mean(np.abs(errs) <= 0.10)),
        "within_5pct": float(np.mean(np.abs(errs) <= 0.05)),
        "median_abs_error": float(np.median(np.abs(errs))),
        "max_abs_error": float(np.max(np.abs(errs))),
        "cv_sigma": pred.sigma_,
        "latency_range_ms": [float(min(lats)), float(max(lats))],
        "share_over_constraint": None,
        "collect_s": collect_s,
        "latencies_ms": lats,
    }


def search_part(
    space_path: Path,
    device: str,
    strategy: str,
    seed: int,
    trials: int,
    concurrency: int,
    base: Path,
    history: Path,
    time_budget_s: float | None = None,
) -> dict[str, Any]:
    import autotune

    results = base / f"{strategy}-s{seed}"
    if results.exists():  # left by an earlier invocation with the same --work: run again
        shutil.rmtree(results)
    results.mkdir(parents=True)
    if history.exists():  # every run starts from the same predictor history and kernel table ('autotune' uses them)
        (results / ".predictor").mkdir()
        for path in history.parent.glob(f"{history.stem}*.json*"):  # (a paired profile's reference calibration too)
            shutil.copy(path, results / ".predictor" / path.name)
    t0 = time.time()
    rows = autotune.search(
        str(space_path), device, name="run", results_dir=results, trials=trials, concurrency=concurrency,
        seed=seed, reference_every=0, time_budget_s=time_budget_s, **STRATEGIES[strategy],
    )  # fmt: skip
    wall = time.time() - t0
    statuses = {s: sum(r["status"] == s for r in rows) for s in ("ok", "infeasible", "pruned", "failed")}
    return {
        "strategy": strategy,
        "seed": seed,
        "wall_s": wall,
        "time_budget_s": time_budget_s,
        "t0": t0,
        "statuses": statuses,
        "screened": sum(bool(r.get("screened")) for r in rows),
        "train_s": sum(float(r.get("train_s") or 0) for r in rows),
        "rows": [
            {
                k: r.get(k)
                for k in (
                    "trial_id",
                    "status",
                    "screened",
                    "accuracy",
                    "latency_ms",
                    "latency_pred_ms",
                    "latency_pred_model",
                    "train_s",
                    "finished_at",
                )
            }
            for r in rows
        ],  # fmt: skip
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="digits_cnn")
    p.add_argument("--device", default="host")
    p.add_argument("--trials", type=int, default=24)
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--latency-max", type=float, help="the bench space's latency constraint (ms; default: part 1's "
                   "33rd percentile)")  # fmt: skip
    p.add_argument("--min-accuracy", type=float, default=0.5, help="the hypervolume's reference accuracy")
    p.add_argument("--predictor-candidates", type=int, default=160)
    p.add_argument("--predictor-train", type=int, default=100)
    p.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=list(STRATEGIES))
    p.add_argument("--equal-wall", action="store_true", help="give each strategy random sampling's wall time "
                   "of the seed (up to 4x the trials) instead of equal trials")  # fmt: skip
    p.add_argument("--out", type=Path, default=ROOT / "results" / "bench")
    p.add_argument("--work", type=Path, metavar="DIR", help="keep part 1 and the runs in DIR (default: a temporary "
                   "directory); part 1 found there with the same settings is reused, not measured again")  # fmt: skip
    p.add_argument("--summarize", type=Path, nargs="+", metavar="JSON", help="re-print (and update) a saved "
                   "result; no runs. Several results of the same settings (say, one seed each) are combined "
                   "into the first file given")  # fmt: skip
    args = p.parse_args(argv)
    if args.summarize:
        try:
            report = combine([json.loads(path.read_text()) for path in args.summarize])
        except ValueError as e:
            p.error(str(e))
        summarize(report)
        args.summarize[0].write_text(json.dumps(report, indent=1) + "\n")
        return
    if not 0 < args.predictor_train < args.predictor_candidates:
        p.error("--predictor-train must be between 0 and --predictor-candidates")
    if args.equal_wall and "random" not in args.strategies:
        p.error("--equal-wall needs the random strategy (its wall time is the budget)")
    os.environ.setdefault("TVM_NUM_THREADS", "1")
    os.environ.setdefault("TVM_BIND_THREADS", "0")
    from candidate_cost import environment

    import autotune
    from autotune.api import resolve_space_path
    from autotune.predictor import MIN_TO_PREDICT, history_path

    if args.predictor_train < MIN_TO_PREDICT:
        p.error(f"--predictor-train must be at least {MIN_TO_PREDICT} (the predictor predicts from that many)")
    profile = autotune.load_profile(args.device)
    started = dt.datetime.now().astimezone()
    with contextlib.ExitStack() as stack:
        if args.work is None:
            base = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="search-efficiency-")))
        else:
            base = args.work.resolve()
            base.mkdir(parents=True, exist_ok=True)
        spec = yaml.safe_load(resolve_space_path(args.space).read_text())
        space_path = base / "space.yaml"
        space_path.write_text(yaml.safe_dump(spec, sort_keys=False))
        from autotune.predictor import environment_key

        settings = {"space": args.space, "device": args.device, "candidates": args.predictor_candidates,
                    "train": args.predictor_train, "environment": environment_key(profile)}  # fmt: skip
        saved = base / "part1.json"
        kept = json.loads(saved.read_text()) if saved.exists() else None
        if kept is not None and kept["settings"] == settings and (base / "history").is_dir():
            print(f"part 1: reusing {saved} (measured {kept['date']})", file=sys.stderr)
            pred = {**kept["predictor"], "reused_from": kept["date"]}
        else:
            print(f"part 1: timing {args.predictor_candidates} untrained candidates", file=sys.stderr)
            shutil.rmtree(base / "history", ignore_errors=True)
            pred = predictor_part(
                space_path, args.device, args.predictor_candidates, args.predictor_train, base / "history", 1000
            )
            if args.work is not None:
                saved.write_text(json.dumps({"settings": settings, "date": started.isoformat(timespec="seconds"),
                                             "predictor": pred}, indent=1) + "\n")  # fmt: skip
        lats = pred.pop("latencies_ms")
        if args.latency_max is None:  # two thirds of the space break it, whatever this machine's speed
            args.latency_max = float(f"{statistics.quantiles(lats, n=3)[0]:.3g}")
        spec["constraints"] = {**spec.get("constraints", {}), "latency_ms": {"max": args.latency_max}}
        space_path.write_text(yaml.safe_dump(spec, sort_keys=False))
        pred["share_over_constraint"] = sum(v > args.latency_max for v in lats) / len(lats)
        ref = (args.min_accuracy, args.latency_max)
        history = history_path(profile, base / "history")
        order = sorted(args.strategies, key=lambda s: s != "random") if args.equal_wall else args.strategies
        args.out.mkdir(parents=True, exist_ok=True)
        stem = "search_efficiency" if args.space == "digits_cnn" else f"search_efficiency-{Path(args.space).stem}"
        path = args.out / f"{stem}-{profile.name}-{started:%Y%m%d}.json"
        report = {
            "date": started.isoformat(timespec="seconds"),
            "complete": False,  # written after every run, so a killed bench keeps the runs it finished
            "space": args.space,
            "latency_max_ms": args.latency_max,
            "reference_point": {"accuracy": ref[0], "latency_ms": ref[1]},
            "trials": args.trials,
            "equal_wall": args.equal_wall,
            "concurrency": args.concurrency,
            "predictor": pred,
            "runs": [],
            **environment(profile, profile.measure.threads),
        }
        for seed in args.seeds:
            budget = None
            for strategy in order:
                print(f"part 2: {strategy}, seed {seed}", file=sys.stderr, flush=True)
                trials = args.trials * 4 if budget else args.trials
                run = search_part(space_path, args.device, strategy, seed, trials, args.concurrency, base, history,
                                  time_budget_s=budget)  # fmt: skip
                run["curve"] = curve(run["rows"], run.pop("t0"), ref)  # rows kept: what was screened, predicted
                run["final_hv"] = run["curve"][-1][1] if run["curve"] else 0.0
                report["runs"].append(run)
                path.write_text(json.dumps(report, indent=1) + "\n")
                if args.equal_wall and strategy == "random":
                    budget = run["wall_s"]
    report["complete"] = True
    summarize(report)
    path.write_text(json.dumps(report, indent=1) + "\n")
    plot(report["runs"], path.with_suffix(".png"), ref)
    print(f"wrote {path} and {path.with_suffix('.png')}")


if __name__ == "__main__":
    main()
