"""Hypervolume curves, headline figures, tables and plot of ``bench/search_efficiency.py``'s report.

A report is the bench's JSON: ``runs`` (one per strategy and seed, each with its ``curve`` of
(seconds since the run started, hypervolume)), ``predictor`` (part 1's scores) and the settings.
Reports of the same settings made in separate sessions (say, one seed each) are combined by
:func:`combine` before :func:`summarize`.
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

STRATEGY_ORDER = ("autotune", "tpe", "random")
# settings that must agree for runs of two reports to be compared
SAME = ("space", "latency_max_ms", "reference_point", "trials", "equal_wall", "concurrency", "profile", "cpu",
        "cpu_isa")  # fmt: skip


def hypervolume(points: Sequence[tuple[float, float]], ref: tuple[float, float]) -> float:
    """Area dominated by ``points`` (accuracy ↑, latency ↓) and bounded by ``ref`` (accuracy, latency)."""
    pts = sorted((lat, acc) for acc, lat in points if acc > ref[0] and lat < ref[1])
    area, best = 0.0, ref[0]
    for i, (lat, acc) in enumerate(pts):  # sweep latency upwards, keeping the best accuracy so far
        best = max(best, acc)
        nxt = pts[i + 1][0] if i + 1 < len(pts) else ref[1]
        area += (nxt - lat) * (best - ref[0])
    return area


def _seconds(iso: str, t0: float) -> float:
    return dt.datetime.fromisoformat(iso).timestamp() - t0


def curve(rows: Sequence[Mapping[str, Any]], t0: float, ref: tuple[float, float]) -> list[tuple[float, float]]:
    """(seconds since the run started, hypervolume of the rows finished by then), one point per row."""
    done = sorted(rows, key=lambda r: r.get("finished_at") or "")
    pts: list[tuple[float, float]] = []
    out = []
    for r in done:
        acc, lat = r.get("accuracy"), r.get("latency_ms")
        if r.get("status") == "ok" and isinstance(acc, int | float) and isinstance(lat, int | float):
            pts.append((float(acc), float(lat)))
        out.append((_seconds(r["finished_at"], t0), hypervolume(pts, ref)))
    return out


def _hv_after(points: Sequence[Sequence[float]], trials: int) -> float:
    """The hypervolume after the first ``trials`` finished trials of a curve."""
    return points[min(trials, len(points)) - 1][1] if points else 0.0


def time_to_reach(points: Sequence[tuple[float, float]], target: float) -> float | None:
    return next((t for t, hv in points if hv >= target - 1e-12), None)


def _mean_curve(curves: Sequence[Sequence[Sequence[float]]], grid: Sequence[float]) -> list[float]:
    """The seeds' hypervolume curves averaged at each time of ``grid`` (a run's last value holds on)."""

    def at(c: Sequence[Sequence[float]], t: float) -> float:
        return max((hv for tt, hv in c if tt <= t), default=0.0)

    return [statistics.fmean(at(c, t) for c in curves) for t in grid]


def summarize(report: dict[str, Any]) -> None:
    """Add the headline figures to ``report`` (in place) and print the tables.

    Per seed: when autotune's hypervolume first reaches random sampling's final one, as a share of
    random's wall time. Over seeds: the same for the seed-averaged curves, against random's mean
    wall time (one number for the floor, less noisy than any one seed)."""
    runs, pred = report["runs"], report["predictor"]
    by = {(r["strategy"], r["seed"]): r for r in runs}
    seeds = sorted({r["seed"] for r in runs})
    reach = []
    for seed in seeds:
        rnd, auto = by.get(("random", seed)), by.get(("autotune", seed))
        if rnd is None or auto is None:
            continue
        t = time_to_reach(auto["curve"], rnd["final_hv"]) if rnd["final_hv"] > 0 else 0.0
        reach.append({"seed": seed, "random_final_hv": rnd["final_hv"], "random_wall_s": rnd["wall_s"],
                      "autotune_final_hv": auto["final_hv"], "autotune_wall_s": auto["wall_s"],
                      "autotune_time_to_reach_s": t, "autotune_trials": len(auto["curve"]),
                      "autotune_hv_at_equal_trials": _hv_after(auto["curve"], report["trials"]),
                      "share_of_random_wall": None if t is None else t / rnd["wall_s"]})  # fmt: skip
    report["reach"] = reach
    shares = [x["share_of_random_wall"] for x in reach]
    median = statistics.median([s if s is not None else float("inf") for s in shares]) if shares else None
    report["median_share_of_random_wall"] = median if median != float("inf") else None
    averaged: dict[str, Any] = {}
    strategies = [s for s in STRATEGY_ORDER if any(r["strategy"] == s for r in runs)]
    if "random" in strategies:
        horizon = max(r["wall_s"] for r in runs)
        grid = [horizon * i / 2000 for i in range(2001)]
        mean = {s: _mean_curve([r["curve"] for r in runs if r["strategy"] == s], grid) for s in strategies}
        walls = {s: statistics.fmean(r["wall_s"] for r in runs if r["strategy"] == s) for s in strategies}
        target = mean["random"][-1]
        for s in strategies:
            t = next((g for g, hv in zip(grid, mean[s], strict=True) if hv >= target - 1e-12), None)
            averaged[s] = {"mean_final_hv": mean[s][-1], "mean_wall_s": walls[s], "time_to_random_final_s": t,
                           "share_of_random_wall": None if t is None else t / walls["random"]}  # fmt: skip
    report["seed_averaged"] = averaged

    console = Console()
    t1 = Table(title=f"Latency predictor: fitted on {pred['train']}, scored on {pred['held_out']}")
    cols = ("within ±10 %", "same, 20 random splits", "within ±5 %", "median |error|", "max |error|", "CV sigma")
    for col in cols:
        t1.add_column(col, justify="right")
    sp = pred["within_10pct_random_splits"]
    t1.add_row(
        f"{pred['within_10pct']:.0%}",
        f"{sp['mean']:.0%} ({sp['min']:.0%}-{sp['max']:.0%})",
        f"{pred['within_5pct']:.0%}", f"{pred['median_abs_error']:.1%}",
        f"{pred['max_abs_error']:.0%}", f"{pred['cv_sigma']:.3f}",
    )  # fmt: skip
    console.print(t1)
    t2 = Table(
        title=f"Search efficiency, {report['trials']} trials, latency ≤ {report['latency_max_ms']} ms "
        f"({pred['share_over_constraint']:.0%} of random architectures break it)"
    )
    for col in ("strategy", "seed", "wall s", "final HV", "ok/infeasible/pruned/failed", "screened", "train s"):
        t2.add_column(col, justify="right")
    for r in runs:
        s = r["statuses"]
        t2.add_row(
            r["strategy"], str(r["seed"]), f"{r['wall_s']:.0f}", f"{r['final_hv']:.5f}",
            f"{s['ok']}/{s['infeasible']}/{s['pruned']}/{s['failed']}", str(r["screened"]), f"{r['train_s']:.0f}",
        )  # fmt: skip
    console.print(t2)

    def pct(v: float | None) -> str:
        return "not reached" if v is None else f"{v:.0%}"

    for x in reach:
        wall = f"; at equal wall ({x['autotune_trials']} trials) {x['autotune_final_hv']:.5f}"
        console.print(f"seed {x['seed']}: autotune reaches random's final hypervolume in "
                      f"{pct(x['share_of_random_wall'])} of random's wall time; at equal trials "
                      f"({report['trials']}) autotune {x['autotune_hv_at_equal_trials']:.5f} vs random "
                      f"{x['random_final_hv']:.5f}{wall if report.get('equal_wall') else ''}")  # fmt: skip
    for s, a in averaged.items():
        console.print(f"averaged over seeds, {s}: final HV {a['mean_final_hv']:.5f} in {a['mean_wall_s']:.0f} s; "
                      f"reaches random's in {pct(a['share_of_random_wall'])} of random's wall time")  # fmt: skip


def plot(runs: Sequence[Mapping[str, Any]], path: Path, ref: tuple[float, float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"autotune": "tab:blue", "tpe": "tab:orange", "random": "tab:gray"}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in runs:
        xs = [0.0] + [t for t, _ in r["curve"]]
        ys = [0.0] + [hv for _, hv in r["curve"]]
        ax.step(xs, ys, where="post", color=colors[r["strategy"]], alpha=0.8, label=f"{r['strategy']} s{r['seed']}")
    ax.set_xlabel("wall time (s)")
    ax.set_ylabel(f"hypervolume (accuracy ≥ {ref[0]}, latency ≤ {ref[1]} ms)")
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def combine(reports: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One report with the runs of all ``reports`` (the first's predictor part and settings).

    Raises ``ValueError`` when a setting that makes runs comparable differs, or a (strategy, seed)
    run appears twice."""
    first = dict(reports[0])
    runs, seen = [], set()
    for rep in reports:
        for key in SAME:
            if rep.get(key) != first.get(key):
                raise ValueError(f"cannot combine: {key!r} is {rep.get(key)!r} in one report, "
                                 f"{first.get(key)!r} in the first")  # fmt: skip
        for r in rep["runs"]:
            if (r["strategy"], r["seed"]) in seen:
                raise ValueError(f"cannot combine: {r['strategy']} seed {r['seed']} appears twice")
            seen.add((r["strategy"], r["seed"]))
            runs.append(r)
    first["runs"] = runs
    if len(reports) > 1:
        first["combined_from"] = [{"date": rep.get("date"), "seeds": sorted({r["seed"] for r in rep["runs"]}),
                                   "predictor": rep.get("predictor")} for rep in reports]  # fmt: skip
    return first
