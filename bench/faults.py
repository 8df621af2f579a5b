"""Fault-injection soak: an overnight run's faults fired at a real search on a two-node Ray cluster.

A local two-node Ray cluster on 127.0.0.1 (``ray.cluster_utils.Cluster``: a head and a worker node,
one CPU each) runs a fast latency-only search (``autotune search --address``, the driver a separate
process, 2 trials at a time) of ``--trials`` trials while a schedule of faults fires, keyed to the
number of rows finished:

- ``trial kill``: SIGKILL of a random trial process (a Ray trial actor or its forked child);
- ``node kill``: the worker node removed mid-trial (then a fresh node added, as a cluster would);
- ``driver kill``: SIGKILL of the driver, followed by ``autotune search --resume``;
- ``torn write``: with the driver dead, the last row of ``trials.jsonl`` cut in half (power lost
  mid-append).

At the end it counts faults injected and survived, rows lost and duplicated, study trials left
RUNNING, and the drivers' resident memory at their start and end (sampled every 2 s). A fault is
survived when the run finished its budget afterwards with every invariant holding, and its own
trace is in the leaderboard (a ``failed`` row for a killed trial, ``node lost: …`` for the node).

Run from the repository root (about 5-8 minutes on 2 cores):

    python bench/faults.py [--trials 100] [--seed 0]

Prints a table and writes ``results/bench/faults-<YYYYMMDD>.json`` with the CPU.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import optuna
import psutil
from rich.console import Console
from rich.table import Table

import autotune

sys.path.insert(0, str(Path(__file__).resolve().parent))
from candidate_cost import ROOT, environment, write_report  # noqa: E402

SPACE = """
name: soak
task: {data: synthetic, model: mobilenet, input_shape: [1, 8, 8], num_classes: 10}
arch:
  stages: {type: int, low: 1, high: 2}
  width_mult: {type: float, low: 0.25, high: 1.0, step: 0.25}
  kernel: {type: categorical, choices: [3, 5]}
  expand: {type: int, low: 1, high: 4}
  se: false
  act: relu
objectives: {macs: max, latency_ms: min}
"""
PROFILE = """
name: soak_host
target: {host: true}
measure: {warmup: 2, number: 5, repeat: 5, min_repeat_ms: 1, threads: 1}
power: {idle_w: 5, active_w: 15, source: soak test figures}
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=100)
    p.add_argument("--seed", type=int, default=0, help="which trial processes are killed")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "bench")
    return p.parse_args(argv)


class Driver:
    """One ``autotune search`` driver process and its memory, sampled every 2 s."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "autotune.cli", *args], stdout=log.open("a"),
                                     stderr=subprocess.STDOUT, cwd=ROOT)  # fmt: skip
        self.rss: list[tuple[float, int]] = []
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        p = psutil.Process(self.proc.pid)
        while self.proc.poll() is None:
            try:
                self.rss.append((time.time(), p.memory_info().rss))
            except psutil.Error:
                return
            time.sleep(2)

    def memory_mb(self) -> dict[str, float | None]:
        """RSS after its start-up (the first sample 20 s in, else the first) and at its last sample."""
        if not self.rss:
            return {"start_mb": None, "end_mb": None}
        t0 = self.rss[0][0]
        start = next((r for t, r in self.rss if t - t0 >= 20), self.rss[0][1])
        return {"start_mb": start / 2**20, "end_mb": self.rss[-1][1] / 2**20}


def _rows(run: Path) -> list[dict[str, Any]]:
    path = run / "trials.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def _trial_processes() -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info.get("cmdline") or [])
        if cmd.startswith("ray::ImplicitFunc"):
            out.append(p)
    return out


def _tear_last_row(run: Path) -> str:
    """Cut the last line of ``trials.jsonl`` in half, as a power loss mid-append leaves it."""
    path = run / "trials.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    last = lines[-1]
    path.write_bytes(b"".join(lines[:-1]) + last[: len(last) // 2])
    return json.loads(last)["trial_id"]


def main(argv: list[str] | None = None) -> None:  # noqa: PLR0915 - one schedule, read top to bottom
    args = parse_args(argv)
    from ray.cluster_utils import Cluster

    rng = random.Random(args.seed)
    console = Console(width=110)
    profile_for_env = autotune.load_profile("host")
    report: dict[str, Any] = {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "trials": args.trials}
    report["environment"] = environment(profile_for_env, 1)
    faults: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-faults-") as wd:
        wd_path = Path(wd)
        (wd_path / "space.yaml").write_text(SPACE)
        (wd_path / "profile.yaml").write_text(PROFILE)
        results, run, log = wd_path / "results", wd_path / "results" / "soak", wd_path / "driver.log"
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
        worker = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        search = ["search", "--space", str(wd_path / "space.yaml"), "--device", str(wd_path / "profile.yaml"),
                  "--trials", str(args.trials), "--name", "soak", "--results-dir", str(results),
                  "--address", cluster.address, "--concurrency", "2", "--no-early-stopping"]  # fmt: skip
        t0 = time.time()
        drivers = [Driver(search, log)]
        kills_at = sorted(rng.sample(range(5, args.trials - 5), 4))
        node_at, driver_at = args.trials * 3 // 10, args.trials // 2
        try:
            while drivers[-1].proc.poll() is None:
                done = len(_rows(run))
                if kills_at and done >= kills_at[0]:
                    kills_at.pop(0)
                    procs = _trial_processes()
                    if procs:
                        victim = rng.choice(procs)
                        faults.append({"kind": "trial kill", "at_rows": done, "pid": victim.pid,
                                       "process": " ".join(victim.cmdline()[:1])})  # fmt: skip
                        victim.send_signal(signal.SIGKILL)
                if node_at is not None and done >= node_at and len(_trial_processes()) >= 2:
                    faults.append({"kind": "node kill", "at_rows": done, "at": time.time()})
                    cluster.remove_node(worker)
                    worker, node_at = cluster.add_node(num_cpus=1), None
                if driver_at is not None and done >= driver_at:
                    drivers[-1].proc.send_signal(signal.SIGKILL)
                    drivers[-1].proc.wait()
                    faults.append({"kind": "driver kill", "at_rows": done, "at": time.time()})
                    time.sleep(1)
                    faults.append({"kind": "torn write", "at_rows": done, "trial_id": _tear_last_row(run)})
                    drivers.append(Driver(["search", "--resume", str(run), "--address", cluster.address], log))
                    driver_at = None
                time.sleep(0.5)
            rc = drivers[-1].proc.returncode
        finally:
            for d in drivers:
                if d.proc.poll() is None:
                    d.proc.kill()
            cluster.shutdown()
        wall = time.time() - t0
        rows = autotune.read_leaderboard(run) if (run / "leaderboard.csv").exists() else []
        ids = [r["trial_id"] for r in rows]
        study = optuna.load_study(study_name="autotune", storage=f"sqlite:///{run / 'study.db'}")
        running = sum(t.state.name == "RUNNING" for t in study.trials)
        errors = [str(r.get("error") or "") for r in rows]
        lost = max(0, args.trials - len(set(ids)))
        dup = len(ids) - len(set(ids))
        whole = rc == 0 and lost == 0 and dup == 0 and running == 0
        for f in faults:
            if f["kind"] == "node kill":
                f["survived"] = whole and any(e.startswith("node lost: ") for e in errors)
            elif f["kind"] == "torn write":
                f["survived"] = whole and f["trial_id"] not in ids  # torn away; its parameters ran again
            else:
                f["survived"] = whole
        report |= {
            "wall_s": wall,
            "driver_rc": rc,
            "faults": faults,
            "rows": len(rows),
            "rows_lost": lost,
            "rows_duplicated": dup,
            "study_running": running,
            "statuses": {s: sum(r["status"] == s for r in rows) for s in ("ok", "infeasible", "pruned", "failed")},
            "failed_errors": sorted({e[:80] for e, r in zip(errors, rows, strict=True) if r["status"] == "failed"}),
            "failed_rows": [
                (r["trial_id"], r.get("node"), r.get("started_at"), str(r.get("error"))[:120])
                for r in rows
                if r["status"] == "failed"
            ],  # fmt: skip
            "drivers": [d.memory_mb() for d in drivers],
        }
        report["driver_log_tail"] = log.read_text().splitlines()[-15:]
    table = Table(title=f"Fault soak: {args.trials} trials, 2-node local Ray cluster ({report['environment']['cpu']})")
    table.add_column("figure")
    table.add_column("value", justify="right")
    kinds = [f["kind"] for f in faults]
    table.add_row("faults injected", ", ".join(f"{kinds.count(k)} {k}" for k in dict.fromkeys(kinds)))
    table.add_row("faults survived", f"{sum(f['survived'] for f in faults)} of {len(faults)}")
    table.add_row("rows (lost / duplicated)", f"{report['rows']} ({lost} / {dup})")
    table.add_row("study trials left RUNNING", str(running))
    table.add_row("statuses", ", ".join(f"{v} {k}" for k, v in report["statuses"].items()))
    for i, m in enumerate(report["drivers"]):
        if m["start_mb"] is not None:
            table.add_row(f"driver {i + 1} RSS start → end", f"{m['start_mb']:.0f} → {m['end_mb']:.0f} MB")
    table.add_row("wall time", f"{wall / 60:.1f} min")
    console.print(table)
    write_report(args.out, f"faults-{dt.date.today():%Y%m%d}", report)


if __name__ == "__main__":
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    main()
