"""Orchestration overhead of a search: the share of wall time not spent in a trial's stages.

Runs the same ``--trials``-trial search (default 20, digits_cnn on the host profile, early stopping
off so every trial's stage times are complete) once per concurrency in ``--concurrency`` (default
1 and 2), each in a fresh embedded Ray, and reports two figures:

    no trial working = share of the wall time in which no trial's process was working: the union
                       of every trial's ``timeline.json`` span (fork to result, drift re-timing
                       included) less its quiet-lock waits, against the wall time (the issue's
                       measure: wall time not spent in train/compile/verify/measure)
    slot idle        = 1 - (sum over trials of build + screen + train + compress + export + import
                       + compile + verify + measure + reference re-timing) / (wall time x concurrency)

The second is stricter: with two slots it also counts a slot that stands in a quiet-lock wait
while the other trial times a candidate (the measurement policy: timing holds the machine alone),
and a slot left idle while the last trial finishes. With one slot the two agree, up to the
sandbox's fork and the result's return (``timeline_s`` against ``stage_s``).

Wall time runs from the ``autotune.search`` call to its return, so it includes Ray's start and
shutdown, the pre-flight checks, worker start-up and imports, the forked trial sandboxes, Tune's
bookkeeping, waits for the quiet-measurement lock (a timing trial holds the machine alone) and the
report. The slot-idle figure is split into the run's start, its end, the slots idle while the
last trials finish, quiet-lock waits (``quiet_wait_s``) and the per-trial rest; ``steady`` is the
share without the three per-run constants, which a longer run spreads over more trials. Run from
the repository root (about 6-7 minutes on 2 cores):

    python bench/orchestration.py [--trials 20] [--concurrency 1 2] [--space digits_cnn] [--device host]

Prints a table and writes ``results/bench/orchestration-<profile>-<YYYYMMDD>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

import autotune

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("build_s", "screen_s", "train_s", "compress_s", "export_s", "import_s", "compile_s", "verify_s", "measure_s")
STAGES += ("reference_s",)  # the drift check's re-timing: measurement work, not orchestration


def _epoch(stamp: str | None) -> float | None:
    return dt.datetime.fromisoformat(stamp).timestamp() if stamp else None


def breakdown(rows: list[dict[str, Any]], t_start: float, t_end: float, concurrency: int) -> dict[str, float]:
    """Where the overhead went, in slot-seconds (a slot idle for 1 s of wall time = 1).

    ``startup``: from the call to the first trial's start (Ray, pre-flight, workers' imports), for
    every slot. ``shutdown``: from the last trial's end to the return (report, Ray's shutdown).
    ``tail``: slots left idle at the end while the last trials finish (from the ``concurrency``
    latest ends). ``quiet_wait``: trials standing still while another trial timed a candidate.
    ``per_trial``: the rest (Tune's scheduling, the sandbox's fork, passing results). Trial start
    and end times have whole-second resolution, so the split is good to about a second a slot.
    """
    starts = [t for r in rows if (t := _epoch(r.get("started_at"))) is not None]
    ends = sorted(t for r in rows if (t := _epoch(r.get("finished_at"))) is not None)
    busy = sum(float(r.get(k) or 0.0) for r in rows for k in STAGES)
    total = (t_end - t_start) * concurrency - busy
    parts = {
        "startup": max(0.0, min(starts) - t_start) * concurrency if starts else 0.0,
        "shutdown": max(0.0, t_end - ends[-1]) * concurrency if ends else 0.0,
        "tail": sum(ends[-1] - e for e in ends[-concurrency:-1]) if len(ends) >= concurrency else 0.0,
        "quiet_wait": sum(float(r.get("quiet_wait_s") or 0.0) for r in rows),
    }
    parts["per_trial"] = total - sum(parts.values())
    return parts


def _union_s(spans: list[tuple[float, float]]) -> float:
    """Length of the union of ``(start, end)`` spans."""
    total, reach = 0.0, -math.inf
    for a, b in sorted(spans):
        if b > reach:
            total += b - max(a, reach)
            reach = b
    return total


def working_spans(run_dir: Path, t_start: float, t_end: float) -> list[tuple[float, float]]:
    """When some trial's process worked: each ``trials/*/timeline.json`` span less its quiet-lock
    waits, clipped to the call."""
    spans = []
    for path in sorted(run_dir.glob("trials/*/timeline.json")):
        line = json.loads(path.read_text())
        at = line["started"]
        for a, b in sorted(line["quiet_waits"]) + [(line["finished"], line["finished"])]:
            if a > at:
                spans.append((max(at, t_start), min(a, t_end)))
            at = max(at, b)
    return [(a, b) for a, b in spans if b > a]


def run_once(space: str, device: str, trials: int, concurrency: int, seed: int, results: Path) -> dict[str, Any]:
    """One search; its wall time, stage seconds, overhead share and where the overhead went."""
    name = f"orch-c{concurrency}"
    t0, e0 = time.perf_counter(), time.time()
    rows = autotune.search(
        space, device, name=name, results_dir=results, trials=trials,
        concurrency=concurrency, seed=seed, early_stopping=False,
    )  # fmt: skip
    wall, e1 = time.perf_counter() - t0, time.time()
    busy = sum(float(r.get(k) or 0.0) for r in rows for k in STAGES)
    per_stage = {k: sum(float(r.get(k) or 0.0) for r in rows) for k in STAGES}
    statuses = {s: sum(r["status"] == s for r in rows) for s in ("ok", "infeasible", "pruned", "failed")}
    parts = breakdown(rows, e0, e1, concurrency)
    slots = wall * concurrency
    spans = working_spans(results / name, e0, e1)
    worked = _union_s(spans)
    return {
        "concurrency": concurrency,
        "trials": len(rows),
        "statuses": statuses,
        "wall_s": wall,
        "stage_s": busy,
        "stage_split_s": per_stage,
        # the measure: wall time in which no trial worked (no trial in any of its stages)
        "idle_wall_s": (e1 - e0) - worked,
        "idle_wall_share": 1 - worked / (e1 - e0),
        "timeline_s": sum(b - a for a, b in spans),  # the trials' working spans: should match stage_s
        # stricter: every slot counted (a slot standing in a quiet-lock wait or idle at the end)
        "overhead_share": 1 - busy / slots,
        "overhead_s_per_trial": (slots - busy) / max(1, len(rows)),
        "overhead_split_slot_s": parts,
        "overhead_split_share": {k: v / slots for k, v in parts.items()},
        # the per-run constants (start, end, last trials) left out: what a longer run tends to
        "steady_overhead_share": (parts["quiet_wait"] + parts["per_trial"])
        / (slots - parts["startup"] - parts["shutdown"] - parts["tail"]),
        "load_avg_end": os.getloadavg()[0],
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="digits_cnn")
    p.add_argument("--device", default="host")
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 2])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "results" / "bench")
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT / "bench"))
    from candidate_cost import environment, write_report

    profile = autotune.load_profile(args.device)
    started = dt.datetime.now().astimezone()
    with tempfile.TemporaryDirectory(prefix="orchestration-") as tmp:
        runs = [run_once(args.space, args.device, args.trials, c, args.seed, Path(tmp)) for c in args.concurrency]
    table = Table(title=f"Orchestration overhead, {args.trials}-trial search ({args.space} on {profile.name})")
    cols = ("concurrency", "trials ok/failed", "wall s", "stage s", "no trial working", "slot idle", "startup")
    for col in (*cols, "shutdown", "tail", "quiet waits", "per trial", "steady"):
        table.add_column(col, justify="right")
    for r in runs:
        share = r["overhead_split_share"]
        table.add_row(
            str(r["concurrency"]), f"{r['statuses']['ok']}/{r['statuses']['failed']}", f"{r['wall_s']:.1f}",
            f"{r['stage_s']:.1f}", f"{100 * r['idle_wall_share']:.1f}%", f"{100 * r['overhead_share']:.1f}%",
            *(f"{100 * share[k]:.1f}%" for k in ("startup", "shutdown", "tail", "quiet_wait", "per_trial")),
            f"{100 * r['steady_overhead_share']:.1f}%",
        )  # fmt: skip
    Console(width=150).print(table)
    report = {
        "date": started.isoformat(timespec="seconds"),
        "space": args.space,
        "trials": args.trials,
        "runs": runs,
        **environment(profile, profile.measure.threads),
    }
    write_report(args.out, f"orchestration-{profile.name}-{started:%Y%m%d}", report)


if __name__ == "__main__":
    main()
