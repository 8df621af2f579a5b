"""Orchestration overhead of a search: the share of wall time not spent in a trial's stages.

Runs the same ``--trials``-trial search (default 20, digits_cnn on the host profile, early stopping
off so every trial's stage times are complete) once per concurrency in ``--concurrency`` (default
1 and 2), each in a fresh embedded Ray, and reports

    overhead = 1 - (sum over trials of build + screen + train + compress + export + import + compile
                    + verify + measure + reference re-timing) / (wall time x concurrency)

Wall time runs from the ``autotune.search`` call to its return, so it includes Ray's start and
shutdown, the pre-flight checks, worker start-up and imports, the forked trial sandboxes, Tune's
bookkeeping, waits for the quiet-measurement lock (a timing trial holds the machine alone) and the
report. Run from the repository root (about 5-6 minutes on 2 cores):

    python bench/orchestration.py [--trials 20] [--concurrency 1 2] [--space digits_cnn] [--device host]

Prints a table and writes ``results/bench/orchestration-<profile>-<YYYYMMDD>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
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


def run_once(space: str, device: str, trials: int, concurrency: int, seed: int, results: Path) -> dict[str, Any]:
    """One search; its wall time, stage seconds and overhead share."""
    t0 = time.perf_counter()
    rows = autotune.search(
        space, device, name=f"orch-c{concurrency}", results_dir=results, trials=trials,
        concurrency=concurrency, seed=seed, early_stopping=False,
    )  # fmt: skip
    wall = time.perf_counter() - t0
    busy = sum(float(r.get(k) or 0.0) for r in rows for k in STAGES)
    per_stage = {k: sum(float(r.get(k) or 0.0) for r in rows) for k in STAGES}
    statuses = {s: sum(r["status"] == s for r in rows) for s in ("ok", "infeasible", "pruned", "failed")}
    return {
        "concurrency": concurrency,
        "trials": len(rows),
        "statuses": statuses,
        "wall_s": wall,
        "stage_s": busy,
        "stage_split_s": per_stage,
        "overhead_share": 1 - busy / (wall * concurrency),
        "overhead_s_per_trial": (wall * concurrency - busy) / max(1, len(rows)),
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
    from candidate_cost import environment

    profile = autotune.load_profile(args.device)
    started = dt.datetime.now().astimezone()
    with tempfile.TemporaryDirectory(prefix="orchestration-") as tmp:
        runs = [run_once(args.space, args.device, args.trials, c, args.seed, Path(tmp)) for c in args.concurrency]
    table = Table(title=f"Orchestration overhead, {args.trials}-trial search ({args.space} on {profile.name})")
    for col in ("concurrency", "trials ok/failed", "wall s", "stage s", "overhead", "overhead s/trial"):
        table.add_column(col, justify="right")
    for r in runs:
        table.add_row(
            str(r["concurrency"]), f"{r['statuses']['ok']}/{r['statuses']['failed']}", f"{r['wall_s']:.1f}",
            f"{r['stage_s']:.1f}", f"{100 * r['overhead_share']:.1f}%", f"{r['overhead_s_per_trial']:.2f}",
        )  # fmt: skip
    Console().print(table)
    report = {
        "date": started.isoformat(timespec="seconds"),
        "space": args.space,
        "trials": args.trials,
        "runs": runs,
        **environment(profile, profile.measure.threads),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"orchestration-{profile.name}-{started:%Y%m%d}.json"
    path.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
