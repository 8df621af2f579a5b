"""What each compression technique buys on the device: accuracy, size, MACs, TVM latency, energy.

One architecture (``--arch``; default a strong digits MobileNet, or the best row of ``--from-run``)
is trained once (``--epochs``). Each technique is then applied alone to a copy of that trained model
at two or three strengths, plus combinations, through the same passes a search uses
(``autotune.compress``), with ``--finetune`` epochs of fine-tuning where the technique has them.
Every variant is exported, compiled by TVM for the profile's target at its deployment precision
(fp32, fp16 or real int8), checked against its PyTorch model (``autotune.numerics``) and timed with
the profile's runner. Timing is interleaved: ``--rounds`` rounds, each timing every variant once;
the figure is the median over rounds of each round's median, so load drift hits all variants alike.

``speedup`` is the fp32 TVM build of the uncompressed trained model's latency over the variant's,
both compiled and timed the same way in this run. ``Δacc`` is held-out test accuracy minus the
uncompressed model's (points). Energy is the profile's meter or power model (``energy source``).
``zip KB`` is the model's float32 weights zlib-compressed: what shipping it costs once sparsity or
shared values (weight clustering) make the weights compressible; TVM's dense kernels run the same.

With ``--tune-trials N`` every variant is first tuned by MetaSchedule (N trials; one database shared
by the variants, so identical workloads are tuned once) and compiled with the best schedules found.

Run from the repository root (about 4-5 minutes untuned on a small CPU):

    python bench/compression.py [--space digits_cnn] [--device host] [--epochs 20] [--finetune 3] [--rounds 5]
    python bench/compression.py --only 'int8 PTQ per-c,structured 50% +' --tune-trials 300  # tuned fp32 vs int8

Prints a table and writes it, with versions, commit, target, CPU and load average, to
``<out>/compression-<profile>-<YYYYMMDD>.json``.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

import autotune
from autotune.compress import PASSES
from autotune.compress.base import CompressContext
from autotune.compress.pipeline import compress, plan_compression, prepare
from autotune.config.search_space import TRAIN_KEYS
from autotune.errors import CandidateFailed
from autotune.exporter import export_program
from autotune.models import build_model
from autotune.quiet import QuietLock
from autotune.task import prepare_task, worker_env
from autotune.tuning import TuningRequest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from candidate_cost import environment  # noqa: E402 - the shared environment record of the benches

ROOT = Path(__file__).resolve().parents[1]

#: A strong architecture of the default space (3 stages, SE, hardswish; ~0.98 held-out accuracy).
DEFAULT_ARCH = {
    "stages": 3,
    "depth_0": 2,
    "depth_1": 2,
    "depth_2": 1,
    "width_mult": 1.25,
    "kernel_0": 3,
    "kernel_1": 5,
    "kernel_2": 3,
    "expand": 6,
    "se": True,
    "act": "hardswish",
    "stem_channels": 16,
    "dropout": 0.1,
}


def variants(ft: int) -> list[tuple[str, str, dict[str, dict[str, Any]]]]:
    """(technique, strength, {pass: settings}) for every row of the table."""
    prune = {"kind": "structured", "criterion": "l2", "steps": 1, "finetune_epochs": ft}
    unstr = {"kind": "unstructured", "criterion": "l1", "scope": "global", "steps": 2, "finetune_epochs": ft}
    int8 = {"scheme": "linear", "bits": 8, "deploy": "int8", "granularity": "channel", "method": "ptq"}
    qat = {"method": "qat", "qat_epochs": ft}
    sim4 = {"bits": 4, "deploy": "fp32", **qat}
    lowrank = {"finetune_epochs": ft}
    teacher = {"arch": {**DEFAULT_ARCH, "width_mult": 1.5, "depth_2": 2}, "train": {"epochs": 20}}
    distill = {"teacher": teacher, "temperature": 4.0}
    taylor2 = {"criterion": "taylor", "steps": 2}
    s30 = {"prune": {**prune, "ratio": 0.3}}
    d07 = {**distill, "alpha": 0.7}
    return [
        ("none (fp32)", "—", {}),
        ("structured pruning", "25% channels", {"prune": {**prune, "ratio": 0.25}}),
        ("structured pruning", "30% channels", {"prune": {**prune, "ratio": 0.3}}),
        ("structured pruning", "50% channels", {"prune": {**prune, "ratio": 0.5}}),
        ("structured pruning", "50%, taylor, 2 steps", {"prune": {**prune, **taylor2, "ratio": 0.5}}),
        ("unstructured pruning", "50% weights", {"prune": {**unstr, "ratio": 0.5}}),
        ("unstructured pruning", "80% weights", {"prune": {**unstr, "ratio": 0.8}}),
        ("low-rank", "energy 0.95", {"lowrank": {**lowrank, "energy": 0.95}}),
        ("low-rank", "rank 50%", {"lowrank": {**lowrank, "rank_ratio": 0.5}}),
        ("low-rank", "rank 25%", {"lowrank": {**lowrank, "rank_ratio": 0.25}}),
        ("quantization", "int8 PTQ per-channel", {"quantize": int8}),
        ("quantization", "int8 PTQ per-tensor", {"quantize": {**int8, "granularity": "tensor"}}),
        ("quantization", "int8 QAT per-channel", {"quantize": {**int8, **qat}}),
        ("quantization", "fp16 (mixed)", {"quantize": {"scheme": "none", "deploy": "fp16"}}),
        ("quantization", "4-bit linear QAT (sim, fp32)", {"quantize": {**int8, **sim4}}),
        ("quantization", "4-bit log QAT (sim, fp32)", {"quantize": {"scheme": "log", **sim4}}),
        ("distillation", "α 0.5, T 4", {"distill": {**distill, "alpha": 0.5}}),
        ("distillation", "α 0.9, T 4", {"distill": {**distill, "alpha": 0.9}}),
        ("weight clustering", "16 clusters", {"cluster": {"clusters": 16, "finetune_epochs": ft}}),
        ("weight clustering", "4 clusters", {"cluster": {"clusters": 4, "finetune_epochs": ft}}),
        ("combination", "structured 50% + int8", {"prune": {**prune, "ratio": 0.5}, "quantize": int8}),
        ("combination", "distill + structured 30% + int8", {"distill": d07, **s30, "quantize": int8}),
    ]  # fmt: skip


def _zipped_bytes(model: torch.nn.Module) -> int:
    """The model's float32 parameters and buffers, zlib-compressed (level 9): what shipping it costs
    once sparsity or shared values (clustering) make the weights compressible."""
    import zlib

    raw = b"".join(t.detach().float().contiguous().numpy().tobytes() for t in model.state_dict().values())
    return len(zlib.compress(raw, 9))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="digits_cnn", help="search space (task and data): a path or a shipped name")
    p.add_argument("--device", default="host", help="device profile: a path or a shipped name")
    p.add_argument("--arch", type=json.loads, help="architecture parameters as JSON (default: DEFAULT_ARCH)")
    p.add_argument("--from-run", type=Path, help="take the architecture of the best 'ok' row of this run directory")
    p.add_argument("--epochs", type=int, default=20, help="training epochs of the uncompressed model")
    p.add_argument("--finetune", type=int, default=3, help="fine-tuning epochs after pruning / low-rank / QAT")
    p.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--only",
        help="comma-separated parts of 'technique: strength' (e.g. 'int8 PTQ,structured 50%%') to run besides "
        "the baseline",
    )
    p.add_argument(
        "--tune-trials",
        type=int,
        default=0,
        help="MetaSchedule trials per variant (0: untuned: the default pipeline's schedules); one shared database",
    )
    p.add_argument("--out", type=Path, default=ROOT / "results" / "bench", help="directory for the JSON")
    return p.parse_args(argv)


def _settings(name: str, given: dict[str, Any]) -> dict[str, Any]:
    cls = PASSES.get(name).Settings
    validated = cls.model_validate(given)  # the same checks as a search space
    return {**cls.defaults(), **{k: getattr(validated, k) for k in given}}


def _arch(args: argparse.Namespace) -> dict[str, Any]:
    if args.from_run:
        rows = [r for r in autotune.read_leaderboard(args.from_run) if r["status"] == "ok" and r.get("accuracy")]
        best = max(rows, key=lambda r: r["accuracy"])
        return {k[5:]: v for k, v in best.items() if k.startswith("arch.") and v is not None}
    return args.arch or DEFAULT_ARCH


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    space, profile = autotune.load_space(args.space), autotune.load_profile(args.device)
    os.environ.update(worker_env(profile))
    os.environ.setdefault("TVM_THREAD_POOL_SPIN_COUNT", "0")
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))
    console = Console(width=None if sys.stdout.isatty() else 170)
    started = dt.datetime.now().astimezone()

    from autotune.compiler import compile_artifact
    from autotune.compress.fakequant import activation_bits
    from autotune.measure import RUNNERS
    from autotune.numerics import check_numerics, tolerance_for
    from autotune.train import accuracy, train

    task = prepare_task(space, profile)
    data, shape = task.data, task.data.input_shape
    arch = _arch(args)
    settings = {**TRAIN_KEYS, "epochs": args.epochs, "lr": 0.005, "optimizer": "adam", "patience": 0}
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    base = train(build_model(task.family, arch, shape, data.num_classes), data, settings, seed=args.seed).model.eval()
    console.print(f"trained the uncompressed model in {time.perf_counter() - t0:.1f} s")
    base_acc, _ = accuracy(base, data.x_test, data.y_test)
    wanted = {s.strip() for s in args.only.split(",")} if args.only else None

    rows: list[dict[str, Any]] = []
    artifacts: list[Any] = []
    with tempfile.TemporaryDirectory(prefix="bench-compression-") as wd:
        for i, (technique, strength, passes) in enumerate(variants(args.finetune)):
            if wanted is not None and passes and not any(w in f"{technique}: {strength}" for w in wanted):
                continue
            row: dict[str, Any] = {"technique": technique, "strength": strength, "passes": sorted(passes)}
            rows.append(row)
            ctx = CompressContext(
                space=space,
                data=data,
                train=settings,
                seed=args.seed,
                cache_dir=Path(wd) / "cache",
                lock=QuietLock(None),
            )
            plan = plan_compression({name: _settings(name, s) for name, s in passes.items()})
            t0 = time.perf_counter()
            try:
                if any(step.name == "distill" for step, _ in plan):  # distillation trains the student anew
                    ctx, _ = prepare(plan, ctx)
                    torch.manual_seed(args.seed)
                    fresh = build_model(task.family, arch, shape, data.num_classes)
                    model = train(fresh, data, settings, seed=args.seed, loss=ctx.loss).model
                    plan = [(step, s) for step, s in plan if step.name != "distill"]
                else:
                    model = copy.deepcopy(base)
                out = compress(model, plan, ctx)
                model, how = out.model, out.deployment
                row["compress_s"] = time.perf_counter() - t0
                row["accuracy"], _ = accuracy(model, data.x_test, data.y_test)
                row.update(macs=out.macs, params=out.params, zip_bytes=_zipped_bytes(model))
                row.update({k: v for r in out.reports for k, v in r.columns.items()})
                program, exported, _ = export_program(model, shape)
                request = TuningRequest(args.tune_trials, str(Path(wd) / "tuning"), seed=args.seed)
                art = compile_artifact(
                    program, profile=profile, out_dir=Path(wd) / str(i), input_shape=shape,
                    precision=how.precision, weight_granularity=how.weight_granularity,
                    tuning=request if args.tune_trials else None,
                )  # fmt: skip
                tol = tolerance_for(profile, precision=how.precision, act_bits=activation_bits(exported))
                num = check_numerics(art, exported, data.x_test, profile=profile, tolerance=tol)
                row.update(
                    deploy_precision=art.deploy_precision,
                    int8_ops=f"{art.int8_ops}/{art.compute_ops}",
                    size_bytes=art.weights_bytes,
                    max_abs_diff=num.max_abs_diff,
                    top1_agreement=num.top1_agreement,
                    compile_s=art.compile_s,
                    tune_s=art.tune_s,
                    tuned_trials=art.tuned_trials,
                )
                artifacts.append((row, art))
            except CandidateFailed as err:
                row["error"] = str(err)
            console.print(f"  {technique}: {strength}: {row.get('error') or 'compiled'}")

        measure = RUNNERS.get(profile.runner.kind).measure
        runs: dict[int, list[Any]] = {id(r): [] for r, _ in artifacts}
        for _ in range(args.rounds):
            for row, art in artifacts:
                runs[id(row)].append(measure(art, profile, data.x_test[:1]))
        for row, _ in artifacts:
            ms = runs[id(row)]
            row["latency_ms"] = statistics.median(m.latency_ms for m in ms)
            row["latency_cov"] = statistics.median(m.latency_cov for m in ms)
            row["round_spread"] = (max(m.latency_ms for m in ms) - min(m.latency_ms for m in ms)) / row["latency_ms"]
            energies = [m.energy_mj for m in ms if m.energy_mj is not None]
            row["energy_mj"] = statistics.median(energies) if energies else None
            row["energy_source"] = ms[0].energy_source
            row["load_avg"] = statistics.mean(m.load_avg for m in ms)
    ref = rows[0]
    for r in rows:
        if r.get("latency_ms") and ref.get("latency_ms"):
            r["speedup"] = ref["latency_ms"] / r["latency_ms"]
        if r.get("accuracy") is not None:
            r["delta_acc_points"] = 100 * (r["accuracy"] - base_acc)
    load_avg = os.getloadavg()

    tuned = f"MetaSchedule {args.tune_trials} trials per variant" if args.tune_trials else "untuned"
    t = Table(
        title=f"Compression on {profile.name} ({profile.measure.threads} TVM thread(s), {tuned}); "
        f"uncompressed accuracy {base_acc:.3f}"
    )
    cols = ["technique", "strength", "precision", "int8 ops", "acc", "Δacc pt", "size KB", "zip KB", "MACs", "params",
            "lat ms", "CoV", "speedup", "energy mJ", "max |Δ|"]  # fmt: skip
    for c in cols:
        t.add_column(c, justify="left" if c in ("technique", "strength", "precision") else "right")

    def f(v: Any, fmt: str) -> str:
        return "—" if v is None else format(v, fmt)

    for r in rows:
        if r.get("error"):
            t.add_row(r["technique"], r["strength"], "failed: " + r["error"][:60], *[""] * (len(cols) - 3))
            continue
        t.add_row(
            r["technique"], r["strength"], r.get("deploy_precision", "—"), r.get("int8_ops", "—"),
            f(r.get("accuracy"), ".3f"), f(r.get("delta_acc_points"), "+.1f"),
            f(r.get("size_bytes", 0) / 1024, ".1f"), f(r.get("zip_bytes", 0) / 1024, ".1f"),
            f(r.get("macs"), ","), f(r.get("params"), ","),
            f(r.get("latency_ms"), ".4f"), f(r.get("latency_cov"), ".1%"), f(r.get("speedup"), ".2f"),
            f(r.get("energy_mj"), ".4f"), f(r.get("max_abs_diff"), ".1e"),
        )  # fmt: skip
    console.print(t)
    console.print(f"energy source: {rows[0].get('energy_source')}; load average (1, 5, 15 min): "
                  f"{load_avg[0]:.2f} {load_avg[1]:.2f} {load_avg[2]:.2f}")  # fmt: skip

    report = {
        "date": started.isoformat(timespec="seconds"),
        "space": space.name,
        "arch": arch,
        "epochs": args.epochs,
        "finetune_epochs": args.finetune,
        "rounds": args.rounds,
        "tune_trials": args.tune_trials,
        "uncompressed_accuracy": base_acc,
        "environment": environment(profile, profile.measure.threads),
        "load_avg_after": load_avg,
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = f"-tuned{args.tune_trials}" if args.tune_trials else ""
    path = args.out / f"compression-{profile.name}{suffix}-{started:%Y%m%d}.json"
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
