"""Latency prediction: the kernel-level predictor (``autotune.kernel_predictor``: a candidate's fused
kernels, each timed once alone into the profile's kernel table, summed with fitted per-kind scales
and per-call overhead) against the network-level one (``autotune.predictor``: whole-network
structural features), per space, and a second device learned from the first one's table.

Per space, ``--n`` random architectures (untrained: latency does not depend on the weights) are
built, compiled by TVM for the profile (default schedules, as ``host`` builds them) and timed with
the profile's runner; the workloads each one's library holds that the table lacks are timed alone
from that library. The first ``--train`` candidates are the measured history; the rest are held
out. The kernel predictor sees only the table the training candidates filled (a held-out
candidate's other kernels are estimated by the table's model, as in a search), and, as a bound on
how additive latency is, the whole table (``kernels, full table``). ``chosen by CV`` is what a search
uses: the network-level predictor, the kernel-level one or a weighted blend of both, whichever
cross-validates best on the training candidates (``autotune.blend``; its weight on the kernels).

The second device: the same candidates compiled for ``--second-target`` (default: this CPU limited
to AVX2, ``mcpu=x86-64-v3``, so the code differs), ``--second-train`` of the training candidates
measured there, their kernels timed into its own table (as its first trials would fill it); its
predictor starts from the first profile's table (``autotune.kernel_predictor``: a kernel only that
one timed is mapped through the kernels both timed). ``--reuse RAW`` takes the first profile's
measurements from an earlier run of the same settings and measures only the second device.

With a paired profile (``--device host_paired``) each candidate's latency is timed in rounds beside
the reference network (``autotune.measure.paired``), as a search with that profile times it (both
devices), and so is each kernel of the table.

Run from the repository root (about 40 minutes on 2 cores with the defaults):

    python bench/predictor.py [--spaces digits_cnn latency_mobilenet32 latency_mobilenet224]
        [--n 140 135 40] [--train 100 100 28] [--second-train 20] [--seed 0]

Prints a table and writes ``results/bench/predictor-<profile>-<YYYYMMDD>.json`` (the CPU, the figures,
each candidate's latencies) and, not committed, every measurement with each candidate's kernels and
the table beside it (``.raw.json.gz``); ``--raw FILE...`` re-analyses saved measurements (merged).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

import autotune

sys.path.insert(0, str(Path(__file__).resolve().parent))
from candidate_cost import ROOT, environment, git_commit, write_report  # noqa: E402

from autotune.blend import choose  # noqa: E402
from autotune.kernel_predictor import KernelPredictor  # noqa: E402  (imported now: the run is long)
from autotune.kernel_table import KernelTable, TableEntry  # noqa: E402
from autotune.predictor import LatencyPredictor  # noqa: E402
from autotune.task import worker_env  # noqa: E402

#: Random train / held-out splits for the spread of the held-out share (``_splits``).
SPLITS = 20


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="host", help="device profile (local runner)")
    p.add_argument("--spaces", nargs="+", default=["digits_cnn", "latency_mobilenet32", "latency_mobilenet224"])
    p.add_argument("--n", nargs="+", type=int, default=[140, 135, 40], help="candidates per space")
    p.add_argument("--train", nargs="+", type=int, default=[100, 100, 28], help="measured history per space")
    p.add_argument("--second-target", default="x86-64-v3", help="mcpu of the second profile ('' for none)")
    p.add_argument("--second-train", type=int, default=20, help="measurements on the second profile")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--raw", type=Path, nargs="+", help="re-analyse saved results (merged) instead of measuring")
    p.add_argument("--reuse", type=Path, help="take the first profile's measurements from this raw file (same "
                   "spaces, candidates and seed) and measure the second profile only")  # fmt: skip
    p.add_argument("--out", type=Path, default=ROOT / "results" / "bench", help="where the JSON goes")
    return p.parse_args(argv)


def _second(profile: Any, mcpu: str) -> Any:
    target = {**profile.target, "mcpu": mcpu}
    return profile.model_copy(update={"name": f"{profile.name}_{mcpu}", "target": target})


def _compile_and_time(program: Any, profile: Any, x: Any, out: Path, table: Any) -> dict[str, Any]:
    from autotune.compiler import compile_artifact
    from autotune.compiler.workloads import read_workloads
    from autotune.measure import RUNNERS

    art = compile_artifact(program, profile=profile, out_dir=out, input_shape=tuple(x.shape[1:]))
    m = RUNNERS.get("local").measure(art, profile, x[:1])
    workloads = read_workloads(out) or []
    t0 = time.perf_counter()
    timed = table.fill(art.path, workloads, profile) if table is not None else 0
    return {
        "latency_ms": m.latency_ms,
        "compile_s": art.compile_s,
        "kernels_timed": timed,
        "kernel_time_s": time.perf_counter() - t0,
        "workloads": [w.__dict__ for w in workloads],
    }


def _candidates(space_name: str, n: int, seed: int, profile: Any) -> Any:
    """The space's task and its first ``n`` random candidates in order, as (index, model)."""
    import optuna
    import torch

    from autotune.models import build_model
    from autotune.space import sample_params
    from autotune.task import make_trial_config, prepare_task

    space = autotune.load_space(space_name)
    task = prepare_task(space, profile)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))

    def models() -> Any:
        for i in range(n):
            cfg = make_trial_config(sample_params(space, study.ask()), space, trial_id=f"p{i}", seed=i)
            torch.manual_seed(i)
            yield i, build_model(task.family, cfg.arch, task.data.input_shape, task.data.num_classes).eval()

    return task, models()


def _pair(space_name: str, profiles: list[Any], work: Path) -> None:
    """As a trial pairs its timings with the reference network, when the profile does."""
    from autotune.quiet import QuietLock
    from autotune.reference import install_pairing
    from autotune.task import prepare_task

    space = autotune.load_space(space_name)
    for i, p in enumerate(profiles):
        if p.measure.paired:
            install_pairing(prepare_task(space, p), work / space_name / f"cache{i}", QuietLock(None), work)


def measure_space(
    space_name: str, n: int, n_second: int, args: argparse.Namespace, work: Path, first: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Build, compile and time ``n`` random candidates; the first ``n_second`` and the held-out ones also on
    the second profile, whose kernel table the first ``n_second`` fill (as its own first trials would).
    ``first``: the first profile's measurements of the same candidates (``--reuse``): only the second
    profile is measured."""
    from autotune.exporter import export_program
    from autotune.predictor import environment_key, structure_features

    profile = autotune.load_profile(args.device)
    second = _second(profile, args.second_target) if args.second_target else None
    assert first is None or second is not None, "--reuse measures the second profile only"
    _pair(space_name, [p for p in (profile, second) if p is not None], work)
    task, models = _candidates(space_name, n, args.seed, profile)
    table = KernelTable.load(work / f"{space_name}.kernels.jsonl", environment_key(profile))
    table2 = KernelTable.load(work / f"{space_name}.second.kernels.jsonl", environment_key(second)) if second else None
    x = np.ascontiguousarray(task.data.x_test[:1])
    cands = []
    for i, model in models:
        program, _, _ = export_program(model, task.data.input_shape)
        if first is None:
            c = {"features": structure_features(model, task.data.input_shape)}
            c |= _compile_and_time(program, profile, x, work / space_name / str(i), table)
        else:
            c = {k: v for k, v in first["candidates"][i].items() if not k.startswith("second_")}
        if second is not None and (i < n_second or i >= args.train_of[space_name]):
            b = _compile_and_time(program, second, x, work / space_name / f"{i}b", table2 if i < n_second else None)
            keys = [w["key"] for w in b["workloads"]]
            assert keys == [w["key"] for w in c["workloads"]], f"candidate {i}: not the same kernels as measured"
            c |= {"second_latency_ms": b["latency_ms"], "second_kernels_timed": b["kernels_timed"]}
        cands.append(c)
        print(f"  {space_name} {i + 1}/{n}: {c['latency_ms']:.4f} ms, {c['kernels_timed']} new kernels "
              f"(table {len(table) or len(first['table'] if first else ())})", file=sys.stderr, flush=True)  # fmt: skip
    entries = first["table"] if first is not None else {k: e.__dict__ for k, e in table.entries.items()}
    second_entries = {k: e.__dict__ for k, e in table2.entries.items()} if table2 is not None else {}
    return {"candidates": cands, "table": entries, "second_table": second_entries}


def _errors(pred: list[float | None], truth: list[float]) -> dict[str, Any]:
    e = np.array([p / y - 1 if p is not None else np.inf for p, y in zip(pred, truth, strict=True)])
    return {
        "held_out": len(e),
        "within_5pct": float(np.mean(np.abs(e) <= 0.05)),
        "within_10pct": float(np.mean(np.abs(e) <= 0.10)),
        "median_abs_error": float(np.median(np.abs(e))),
        "max_abs_error": float(np.max(np.abs(e))),
    }


def analyse(data: dict[str, Any], n_train: int, n_second: int) -> dict[str, Any]:
    """Fit each predictor on the first ``n_train`` candidates, score the rest."""
    cands = data["candidates"]
    train, test = cands[:n_train], cands[n_train:]
    truth = [c["latency_ms"] for c in test]

    shapes = {w["key"]: w["args"] for c in cands for w in c["workloads"]}  # (older tables lack them)

    def table_of(keys: set[str] | None, which: str = "table") -> KernelTable:
        t = KernelTable(Path("/nonexistent"), {})
        t.entries = {
            k: TableEntry(**(e | {"args": tuple((tuple(s), d) for s, d in e.get("args") or shapes.get(k, ()))}))
            for k, e in data.get(which, {}).items()
            if keys is None or k in keys
        }
        return t

    seen = {w["key"] for c in train for w in c["workloads"]}
    out: dict[str, Any] = {"train": len(train)}
    net, kp = _fit(train, table_of(seen), "latency_ms")
    scored = _scored(net, kp, test, "latency_ms")
    out["network"], out["kernels"] = scored["network"], scored["kernels"]
    full = KernelPredictor(table_of(None)).fit([c["workloads"] for c in train], [c["latency_ms"] for c in train])
    bound = _errors([p.latency_ms if p else None for p in (full.predict(c["workloads"]) for c in test)], truth)
    out["kernels, full table"] = bound | {"cv_sigma": full.sigma_}
    out["kernels"]["table_hit_rate_held_out"] = float(np.mean([w["key"] in seen for c in test for w in c["workloads"]]))
    out["chosen by CV"] = scored["chosen by CV"]
    out["random splits"] = _splits(cands, n_train, table_of)
    two = [c for c in train[:n_second] if "second_latency_ms" in c]
    held = [c for c in test if "second_latency_ms" in c]
    if two and held:  # A's table is B's donor; B's own holds the kernels of its measured candidates
        own = table_of(None, "second_table")
        net2, kp2 = _fit(two, own, "second_latency_ms", donor=table_of(seen))
        scored = _scored(net2, kp2, held, "second_latency_ms")
        hits = [w["key"] in own.entries for c in held for w in c["workloads"]]
        out["second device, kernels"] = scored["kernels"] | {
            "train": len(two), "own_table": len(own), "own_hit_rate_held_out": float(np.mean(hits)),
            "scales": kp2.scales(donor=True),
            "ratio_model": None if kp2.ratio_model is None else {
                "shared_kernels": kp2.ratio_model.size, "cv_sigma": kp2.ratio_model.sigma},
        }  # fmt: skip
        out["second device, network"] = scored["network"] | {"train": len(two)}
        out["second device, chosen by CV"] = scored["chosen by CV"] | {"train": len(two)}
        if own:  # as before B timed kernels of its own: the donor's table alone
            _, alone = _fit(two, table_of(set()), "second_latency_ms", donor=table_of(seen))
            donor_only = _scored(net2, alone, held, "second_latency_ms")["kernels"]
            out["second device, kernels, donor only"] = donor_only | {"train": len(two)}
    return out


def _splits(cands: list[dict[str, Any]], n_train: int, table_of: Any) -> dict[str, Any]:
    """The same fits over ``SPLITS`` random splits of the same candidates (a held-out set of a few dozen
    moves the share a candidate at a time): per predictor, the mean and the worst share within ±10 %."""
    rng = np.random.default_rng(100)
    shares: dict[str, list[float]] = {"network": [], "kernels": [], "smaller CV error": [], "chosen by CV": []}
    for _ in range(SPLITS):
        order = rng.permutation(len(cands))
        train, test = [cands[i] for i in order[:n_train]], [cands[i] for i in order[n_train:]]
        net, kp = _fit(train, table_of({w["key"] for c in train for w in c["workloads"]}), "latency_ms")
        scored = _scored(net, kp, test, "latency_ms")
        scored["smaller CV error"] = scored["kernels" if kp.sigma_ < net.sigma_ else "network"]  # no blend
        for name, v in shares.items():
            v.append(scored[name]["within_10pct"])
    return {
        "splits": SPLITS,
        "held_out": len(cands) - n_train,
        **{
            name: {"mean_within_10pct": float(np.mean(v)), "worst_within_10pct": float(np.min(v))}
            for name, v in shares.items()
        },
    }


def _fit(
    train: list[dict[str, Any]], table: KernelTable, key: str, donor: KernelTable | None = None
) -> tuple[Any, Any]:
    """The network-level and the kernel-level predictor (on ``table``) fitted on ``train``'s ``key`` latencies."""
    y = [c[key] for c in train]
    net = LatencyPredictor().fit([c["features"] for c in train], y)
    return net, KernelPredictor(table, donor=donor).fit([c["workloads"] for c in train], y)


def _scored(net: Any, kp: Any, test: list[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    """Held-out errors of the network-level and kernel-level predictors and of the search's choice."""
    truth = [c[key] for c in test]
    preds = {
        "network": [net.predict(c["features"]) for c in test],
        "kernels": [kp.predict(c["workloads"]) for c in test],
    }
    out = {
        name: _errors([p.latency_ms if p else None for p in ps], truth) | {"cv_sigma": fitted.sigma_}
        for (name, ps), fitted in zip(preds.items(), (net, kp), strict=True)
    }
    return out | {"chosen by CV": _chosen(net, kp, test, key)}


def _chosen(net: Any, kernels: Any, test: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """What a search uses (``latency_pred_model``): the network-level predictor, the kernel-level one or
    a blend of both, whichever cross-validates best (``autotune.blend.choose``)."""
    blend = choose(net, kernels)
    preds = [blend.predict(net.predict(c["features"]), kernels.predict(c["workloads"])) for c in test]
    errs = _errors([p.latency_ms if p else None for p in preds], [c[key] for c in test])
    return errs | {"model": blend.model, "kernel_weight": blend.weight, "cv_sigma": blend.sigma}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    profile = autotune.load_profile(args.device)
    assert "tvm" not in sys.modules, "TVM sizes its thread pool at import: set the profile's threads first"
    os.environ.update(worker_env(profile))  # the profile's thread count, as a search's workers run
    args.train_of = dict(zip(args.spaces, args.train, strict=True))
    stamp = dt.date.today().strftime("%Y%m%d")
    name = f"predictor-{args.device}-{stamp}"
    raw = args.out / f"{name}.raw.json.gz"  # every measurement (not committed: megabytes)
    if args.raw:
        reports = [_read_raw(p) for p in args.raw]
        report = reports[0] | {"spaces": {k: v for r in reports for k, v in r["spaces"].items()}}
        report["reanalysed"] = {"git_commit": git_commit(), "date": stamp, "raw": [p.name for p in args.raw]}
    else:
        first = _read_raw(args.reuse) if args.reuse else None
        report = {"environment": environment(profile, profile.measure.threads), "spaces": {}}
        report["args"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        if first is not None:  # the first profile's candidates, their number and split as measured then
            assert first["args"]["device"] == args.device, f"{args.reuse} was measured with {first['args']['device']}"
            report["reused"] = {"raw": args.reuse.name, "environment": first["environment"]}
            args.spaces, args.n = list(first["spaces"]), [len(d["candidates"]) for d in first["spaces"].values()]
            args.train_of = {k: d["train"] for k, d in first["spaces"].items()}
            args.seed = int(first["args"]["seed"])
        with tempfile.TemporaryDirectory(prefix="predictor-") as tmp:
            for space, n in zip(args.spaces, args.n, strict=True):
                t0 = time.perf_counter()
                given = first["spaces"][space] if first is not None else None
                data = measure_space(space, n, args.second_train, args, Path(tmp), given)
                report["spaces"][space] = data | {"measure_s": time.perf_counter() - t0, "train": args.train_of[space]}
                args.out.mkdir(parents=True, exist_ok=True)
                raw.write_bytes(gzip.compress(json.dumps(report).encode()))  # kept before any analysis
    table = Table(title="latency prediction on held-out candidates")
    for col in ("space", "predictor", "train", "held out", "±5 %", "±10 %", "median err", "worst err"):
        table.add_column(col)
    for space, data in report["spaces"].items():
        data["analysis"] = analyse(data, data["train"], args.second_train)
        for pred, r in data["analysis"].items():
            if isinstance(r, dict) and "within_10pct" in r:
                table.add_row(space, pred, str(r.get("train", data["analysis"]["train"])), str(r["held_out"]),
                              f"{r['within_5pct']:.0%}", f"{r['within_10pct']:.0%}",
                              f"{r['median_abs_error']:.1%}", f"{r['max_abs_error']:.1%}")  # fmt: skip
    Console(width=150).print(table)
    for space, data in report["spaces"].items():
        r = data["analysis"]["random splits"]
        print(f"{space}, {r['splits']} random splits ({r['held_out']} held out), within ±10 %: " + "; ".join(
            f"{name} {v['mean_within_10pct']:.0%} mean, {v['worst_within_10pct']:.0%} worst"
            for name, v in r.items() if isinstance(v, dict)))  # fmt: skip
    write_report(args.out, name, _summary(report))
    if not args.raw:
        print(f"measurements: {raw}")


def _read_raw(path: Path) -> dict[str, Any]:
    return json.loads(gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_text())


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    """The report without each candidate's kernel list and the table (sizes and latencies kept)."""
    keep = ("latency_ms", "second_latency_ms", "compile_s", "kernels_timed", "second_kernels_timed")
    spaces = {
        name: {
            **{k: v for k, v in data.items() if k not in ("candidates", "table", "second_table")},
            "table_size": len(data["table"]),
            "second_table_size": len(data.get("second_table", ())),
            "candidates": [
                {k: c[k] for k in keep if k in c} | {"kernels": len(c["workloads"])} for c in data["candidates"]
            ],
        }
        for name, data in report["spaces"].items()
    }
    return {**report, "spaces": spaces}


if __name__ == "__main__":
    main()
