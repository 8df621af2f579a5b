"""``autotune`` command line: parse, call the Python API, render. The error boundary.

Exit codes: 0 ok, 1 user error, 2 usage, 3 internal error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import autotune
from autotune.cli_render import fit_columns, make_console, progress_renderable, table
from autotune.errors import UserError
from autotune.leaderboard import summary_columns
from autotune.reporting import check_columns, sort_rows
from autotune.runs import leaderboard_csv
from autotune.search.settings import RunConfig, parse_duration  # noqa: F401 - parse_duration: re-exported
from autotune.space import PARAM_PREFIXES

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="autotune", description="Hardware-aware NAS: search models for a device.")
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    p.add_argument("--version", action="version", version=f"autotune {autotune.__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    s = sub.add_parser("search", help="run (or resume) a search", description="Run an Optuna search under Ray Tune.")
    s.add_argument("--space", default=None, help="search-space YAML or shipped name (default: digits_cnn)")
    s.add_argument(
        "--device",
        action="append",
        default=None,
        help="device-profile YAML or shipped name (default: host); repeat it to time every candidate on each",
    )
    s.add_argument("--name", default=None, help="run name: results go to RESULTS_DIR/NAME")
    s.add_argument("--results-dir", default="results", help="where runs are written (default: results)")
    s.add_argument("--address", default=None, help="join a Ray cluster: 'auto' or ray://host:port")
    s.add_argument("--resume", metavar="RUN_DIR", default=None, help="continue the run in RUN_DIR")
    s.add_argument(
        "--rebuild-study",
        action="store_true",
        help="with --resume: rebuild the run's Optuna study (study.db) from its trials.jsonl",
    )
    s.add_argument(
        "--warm-start",
        metavar="RUN_DIR",
        default=None,
        help="start from an earlier run: its Pareto front first, its finished trials as the sampler's priors",
    )
    RunConfig.add_arguments(s)  # the run options, declared once

    t = sub.add_parser(
        "tune",
        help="tune a search space's kernels into a device's tuning database",
        description="Sample architectures of a space, extract their fused kernels, and tune the costliest into "
        "the device profile's tuning database within a budget; a search with that profile compiles from it.",
    )
    t.add_argument("--space", required=True, help="search-space YAML or shipped name")
    t.add_argument("--device", required=True, help="device-profile YAML or shipped name")
    t.add_argument("--budget", required=True, type=parse_duration, help="tuning time for this space in all, e.g. 2h")
    t.add_argument("--results-dir", default="results", help="the database is RESULTS_DIR/tuning_db/<profile>")
    t.add_argument("--address", default=None, help="spread the work over a Ray cluster: 'auto' or ray://host:port")
    t.add_argument("--samples", type=int, default=16, help="architectures sampled from the space (default 16)")
    t.add_argument("--seed", type=int, default=0, help="seeds the sample and MetaSchedule")
    t.add_argument("--max-trials", type=int, default=256, help="trials at which a kernel counts as tuned")

    c = sub.add_parser("check", help="validate a search space and a device profile; no work")
    c.add_argument("space", nargs="?", default=None)
    c.add_argument("device", nargs="?", default=None)

    lb = sub.add_parser("leaderboard", help="show a run's leaderboard, or merge runs into one CSV")
    lb.add_argument("run_dir", nargs="+", help="run directories (or leaderboard CSVs); several with --merge")
    lb.add_argument("--merge", metavar="OUT_CSV", default=None, help="write all runs' rows into one CSV")
    lb.add_argument("--top", type=int, default=10)
    lb.add_argument("--pareto", action="store_true", help="only the Pareto front (pareto_rank 1)")
    lb.add_argument("--sort", default=None, help="column to sort by (default: pareto_rank, then latency_ms)")
    lb.add_argument("--json", action="store_true", help="print rows as JSON on stdout")
    lb.add_argument(
        "--columns",
        default=None,
        help="comma-separated columns to show (default: the summary columns and sampled parameters that fit)",
    )

    pf = sub.add_parser(
        "profile",
        help="where a trial's time goes on the device, kernel by kernel",
        description="Rebuild a finished trial's model as a search builds it now, time each fused kernel alone "
        "and the whole model on this machine, and print each kernel's time, calls, share, GFLOP/s and fraction "
        "of the profile's calibrated peak, and the runtime's own part.",
    )
    pf.add_argument("run_dir")
    pf.add_argument("trial_id")
    pf.add_argument("--device", default=None, help="a profile that measures here (default: the run's)")
    pf.add_argument("--json", action="store_true", help="print the profile as JSON on stdout")
    rp = sub.add_parser("report", help="(re)write a run's pareto.png and report.html")
    rp.add_argument("run_dir")
    ex = sub.add_parser("export", help="write a deployable bundle of one trial")
    ex.add_argument("run_dir")
    ex.add_argument("trial_id")
    ex.add_argument("--out", default=None, help="bundle folder (default: RUN_DIR/export/TRIAL_ID)")
    dv = sub.add_parser("device", help="devices: an emulated aarch64 Pi; calibrate this machine into a profile")
    what = dv.add_subparsers(dest="device_command", metavar="WHAT", required=True)
    em = what.add_parser("emulate", help="build | start | stop | status an emulated aarch64 Pi (TVM RPC, QEMU)")
    em.add_argument("action", choices=("build", "start", "stop", "status"))
    em.add_argument("--cache-dir", default=None, help="default: ~/.cache/autotune/emulated-aarch64")
    em.add_argument("--key", default="rpi4-emu", help="device key (default: %(default)s)")
    em.add_argument("--host", default="127.0.0.1", help="address to bind (start only)")
    em.add_argument("--tracker-port", type=int, default=9190, help="(start only)")
    em.add_argument("--server-port", type=int, default=9090, help="(start only)")
    em.add_argument("--threads", type=int, default=1, help="TVM runtime threads on the device (start only)")
    em.add_argument("--native", action="store_true", help="a loopback device: this machine's Python, no QEMU")
    ca = what.add_parser("calibrate", help="measure this machine; write a profile")
    ca.add_argument("name", help="the new profile's name")
    ca.add_argument("--threads", type=int, default=None, help="threads to measure with (default: the base's)")
    ca.add_argument("--base", default=None, help="profile to start from (default: host)")
    ca.add_argument("--out", default=None, help="file to write (default: device_profiles/NAME.yaml)")
    ca.add_argument("--force", action="store_true", help="overwrite an existing file")
    sub.add_parser("spaces", help="list shipped search spaces")
    sub.add_parser("profiles", help="list shipped device profiles")
    sc = sub.add_parser("schema", help="print the JSON Schema of a YAML kind")
    sc.add_argument("kind", choices=["space", "profile"])
    return p


def cmd_leaderboard(args: argparse.Namespace) -> int:
    paths = [leaderboard_csv(p) for p in args.run_dir]
    if args.merge:
        from autotune.leaderboard import merge_leaderboards, write_csv

        merged = merge_leaderboards(paths)
        write_csv(merged, args.merge)
        print(f"{len(merged)} rows from {len(paths)} runs: {args.merge}")
        return 0
    if len(paths) > 1:
        raise UserError("several runs need --merge OUT_CSV", key="run_dir")
    csv_path = paths[0]
    rows = autotune.read_leaderboard(csv_path)
    if args.pareto:
        rows = [r for r in rows if r.get("pareto_rank") == 1]
    rows = sort_rows(rows, args.sort)[: args.top]
    if args.json:
        print(json.dumps(rows, indent=1, default=str))
        return 0
    console = make_console(stderr=False)
    if args.columns:
        cols = [c.strip() for c in args.columns.split(",") if c.strip()]
        check_columns(rows, cols, key="--columns")
        dropped: list[str] = []
        width = console.width
    else:
        wanted = summary_columns(rows)
        params = sorted({k for r in rows for k in r if k.startswith(PARAM_PREFIXES)})
        width = int(os.environ.get("COLUMNS") or 0) or console.width  # a pipe has no width: COLUMNS if set
        cols, dropped = fit_columns(rows, wanted + params, width)
    console.print(table(rows, cols, f"{csv_path} ({len(rows)} rows)"), width=width)
    if dropped:
        console.print(f"{len(dropped)} more columns ({', '.join(dropped[:4])}{', ...' if len(dropped) > 4 else ''}): "
                      "choose with --columns, or --json for all", width=width)  # fmt: skip
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from rich.live import Live

    console = make_console()
    results_dir, name, resume = args.results_dir, args.name, False
    if args.resume:
        run_dir = Path(args.resume).resolve()
        results_dir, name, resume = str(run_dir.parent), run_dir.name, True
    if not resume:
        for device in args.device or [None]:
            autotune.check(args.space, device)  # fail fast, before Ray and TVM start
    config = RunConfig.from_args(args)  # checks the options before Ray and TVM start
    live = Live(console=console, refresh_per_second=2, transient=False)
    t0 = time.monotonic()

    def on_progress(p: Any) -> None:
        live.update(progress_renderable(p))

    with live:
        try:
            rows = autotune.search(
                args.space,
                args.device,
                name=name,
                results_dir=results_dir,
                address=args.address,
                resume=resume,
                warm_start=args.warm_start,
                **config.to_json(),
                on_progress=on_progress,
                rebuild_study=args.rebuild_study,
            )
        except KeyboardInterrupt:
            live.stop()
            if not console.is_terminal:
                console.line()
            run = Path(results_dir) / (name or "")
            console.print(f"interrupted; finished trials are in {run}/leaderboard.csv")
            console.print(f"resume with: autotune search --resume {run}")
            return 130
    if not console.is_terminal:
        console.line()  # Live's last frame ends without one when it is not a terminal (a log, a pipe)
    run_dir = Path(results_dir).resolve() / (name or "")
    if name is None:  # a generated name: find the newest run
        candidates = sorted(Path(results_dir).glob("run-*/leaderboard.csv"), key=lambda q: q.stat().st_mtime)
        run_dir = candidates[-1].parent if candidates else Path(results_dir)
    ok = [r for r in rows if r.get("status") == "ok"]
    top = sort_rows(ok, None)[:5]
    cols = summary_columns(top)
    out = make_console(stderr=False)
    if top:
        out.print(table(top, cols, "top trials (Pareto rank, then latency)"))
    counts = {s: sum(r.get("status") == s for r in rows) for s in ("ok", "infeasible", "pruned", "failed")}
    out.print(f"{len(rows)} trials: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    out.print(f"leaderboard: {run_dir / 'leaderboard.csv'}")
    out.print(f"report:      {run_dir / 'report.html'}")
    budget_left = config.time_budget_s is None or time.monotonic() - t0 < config.time_budget_s
    if not resume and len(rows) < config.trials and budget_left:  # Ctrl-C: Ray Tune stops and returns
        out.print(f"stopped before all trials finished; resume with: autotune search --resume {run_dir}")
        return 130
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    autotune.check(args.space, args.device)  # fail fast, before TVM starts
    try:
        rep = autotune.tune(
            args.space,
            args.device,
            args.budget,
            results_dir=args.results_dir,
            address=args.address,
            samples=args.samples,
            seed=args.seed,
            max_trials=args.max_trials,
        )
    except KeyboardInterrupt:
        print("interrupted; finished chunks are in the tuning database; run the same command to go on")
        return 130
    print(
        f"{rep.tuned} of {rep.workloads} kernels tuned ({rep.covered:.0%} of the calls of {rep.architectures} "
        f"sampled architectures); {rep.trials} trials measured in {rep.seconds / 60:.1f} min"
        + (f" on {len(rep.nodes)} nodes" if len(rep.nodes) > 1 else "")
        + (f"; {rep.failed} kernels could not be tuned" if rep.failed else "")
    )
    print(f"this space has had {rep.spent_s / 60:.1f} of {rep.budget_s / 60:.1f} min of tuning")
    if rep.interrupted:
        print("interrupted after the chunks in flight; run the same command to go on")
    print(f"tuning database: {rep.database}")
    print(f"a search with --device {args.device} --results-dir {args.results_dir} compiles its candidates from it")
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    import dataclasses

    prof = autotune.profile(args.run_dir, args.trial_id, args.device)
    if args.json:
        print(json.dumps(dataclasses.asdict(prof), indent=1))
        return 0
    cols = ["kernel", "calls", "µs per call", "µs total", "share", "GFLOP/s", "of peak", "schedule"]
    rows = [
        dict(zip(cols, [k.name, k.calls, k.us_per_call, k.total_us, f"{k.share:.1%}", k.gflops,
                        "" if k.peak_fraction is None else f"{k.peak_fraction:.0%}", "tuned" if k.tuned else "default"],
                 strict=True))
        for k in prof.kernels
    ]  # fmt: skip
    out = make_console(stderr=False)
    out.print(table(rows, cols, f"trial {prof.trial_id} on {prof.device}: kernels, heaviest first"))
    out.print(
        f"whole model {prof.latency_ms * 1e3:.1f} µs (the trial's row: "
        f"{'–' if prof.recorded_latency_ms is None else f'{prof.recorded_latency_ms * 1e3:.1f} µs'}); kernels "
        f"{prof.kernels_ms * 1e3:.1f} µs; the runtime's own work {prof.overhead_ms * 1e3:.1f} µs"
        + ("" if prof.peak_fp32_gflops else "; no calibrated peak in the profile (autotune device calibrate)")
    )
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    print(f"report: {autotune.report(args.run_dir)}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    print(f"bundle: {autotune.export(args.run_dir, args.trial_id, args.out)}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    space, profile = autotune.check(args.space, args.device)
    compress = f", compression: {', '.join(space.compress)}" if space.compress else ""
    print(
        f"ok: space {space.name or args.space} ({len(space.arch)} arch, {len(space.train or {})} train parameters"
        f"{compress}, objectives {', '.join(f'{k}:{v}' for k, v in space.objectives.items())}); device {profile.name}"
    )
    return 0


def cmd_emulate(args: argparse.Namespace) -> int:
    from autotune import devices

    cache, key = args.cache_dir or devices.DEFAULT_CACHE_DIR, args.key
    if args.action == "build":
        print(f"built: {devices.build_device(cache)}")
    elif args.action == "start" and devices.running_device(cache, key=key):
        print(f"already running: {devices.device_status(cache, key=key)}")
    elif args.action == "start":
        t0, ports = time.perf_counter(), {"tracker_port": args.tracker_port, "server_port": args.server_port}
        dev = devices.start_device(cache, key=key, host=args.host, threads=args.threads, native=args.native, **ports)
        print(f"started in {time.perf_counter() - t0:.0f} s: tracker {dev.tracker}, key {dev.key!r}")
        print(f"query it: python -m tvm.exec.query_rpc_tracker --host {dev.host} --port {dev.tracker_port}")
    elif args.action == "stop":
        print("stopped" if devices.stop_device(cache, key=key) else "not running (no pid file)")
    else:
        print(devices.device_status(cache, key=key))
    return 0


def cmd_calibrate(a: argparse.Namespace) -> int:
    path = autotune.calibrate_device(a.name, threads=a.threads, base=a.base, out=a.out, force=a.force)
    peak = autotune.load_profile(path).peak
    assert peak is not None  # written by calibrate
    bandwidth = f", {peak.bandwidth_gbs:.1f} GB/s" if peak.bandwidth_gbs else ""
    print(f"peak {peak.fp32_gflops:.1f} fp32 GFLOP/s{bandwidth} with {peak.threads} thread(s); wrote {path}")
    return 0


def cmd_list(kind: str) -> int:
    items = autotune.list_spaces() if kind == "spaces" else autotune.list_profiles()
    width = max((len(n) for n, _, _ in items), default=0)
    for name, path, desc in items:
        print(f"{name:<{width}}  {desc}  ({path})")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from autotune.config import DeviceProfile, SearchSpace

    model = SearchSpace if args.kind == "space" else DeviceProfile
    print(json.dumps(model.model_json_schema(), indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        if args.command in ("search", "tune", "profile"):
            from autotune.log import setup_logging

            setup_logging(make_console(), debug=args.debug)
        if args.command in ("spaces", "profiles"):
            return cmd_list(args.command)
        if args.command == "device":
            return cmd_emulate(args) if args.device_command == "emulate" else cmd_calibrate(args)
        commands = {"search": cmd_search, "check": cmd_check, "leaderboard": cmd_leaderboard, "report": cmd_report}
        commands |= {"export": cmd_export, "schema": cmd_schema, "tune": cmd_tune, "profile": cmd_profile}
        return commands[args.command](args)
    except UserError as err:
        if args.debug:
            raise
        print(f"error: {err.render()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception:
        if args.debug:
            raise
        import traceback

        print("internal error (please report it):", file=sys.stderr)
        traceback.print_exc()
        return 3
    return 2


if __name__ == "__main__":
    sys.exit(main())
