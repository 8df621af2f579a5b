"""The public Python API; the CLI is a thin layer over these functions."""

from __future__ import annotations

import importlib.util
import json
import logging
import re
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from autotune.config import load as _load
from autotune.config.device_profile import DeviceProfile
from autotune.config.search_space import CategoricalParam, FloatParam, IntParam, SearchSpace
from autotune.errors import UserError
from autotune.models import resolve_family
from autotune.registry import closest

log = logging.getLogger(__name__)

__all__ = [
    "PACKAGE_ROOT",
    "calibrate_device",
    "check",
    "device",
    "evaluate",
    "export",
    "report",
    "list_profiles",
    "list_spaces",
    "load_profile",
    "load_space",
    "resolve_profile_path",
    "resolve_space_path",
    "run_name_dir",
    "search",
]

#: Where shipped spaces and profiles live (the repository / source checkout).
PACKAGE_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SPACE = "digits_cnn"
DEFAULT_PROFILE = "host"
_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def _shipped(kind: str) -> Path:
    return PACKAGE_ROOT / kind


def _resolve(path_or_name: str | Path, kind: str) -> Path:
    p = Path(path_or_name)
    if p.suffix in (".yaml", ".yml") or p.exists() or "/" in str(path_or_name):
        return p
    return _shipped(kind) / f"{path_or_name}.yaml"  # a shipped name such as 'host'


def resolve_space_path(space: str | Path | None) -> Path:
    """A path, or the name of a shipped space (``digits_cnn``); None is the default."""
    return _resolve(space or DEFAULT_SPACE, "search_spaces")


def resolve_profile_path(device: str | Path | None) -> Path:
    """A path, or the name of a shipped profile (``host``); None is the default."""
    return _resolve(device or DEFAULT_PROFILE, "device_profiles")


def _check_value(fam_choices: tuple[Any, ...], spec: Any, file: str, key: str) -> None:
    values: list[Any]
    if isinstance(spec, CategoricalParam):
        values = list(spec.choices)
    elif isinstance(spec, IntParam | FloatParam):
        values = [spec.low, spec.high] if isinstance(spec, IntParam) else []
        if isinstance(spec, IntParam) and any(isinstance(c, int) for c in fam_choices):
            values = list(range(spec.low, spec.high + 1, spec.step))
    else:
        values = [spec]
    for v in values:
        if v not in fam_choices:
            near = closest(str(v), [str(c) for c in fam_choices])
            raise UserError(
                f"{v!r} is not allowed; allowed: {', '.join(map(str, fam_choices))}",
                file=file,
                key=key,
                hint=f"did you mean {near!r}?" if near else None,
            )


def check_space(space: SearchSpace, *, file: str) -> None:
    """Check what needs the registries: task names, the family's parameters and their values."""
    from autotune.data import DATASETS

    t = space.task
    if ":" in t.data:
        _check_plugin_ref(t.data, file=file, key="task.data")
    else:
        DATASETS.get(t.data, file=file, key="task.data")
    if t.data == "synthetic" and not t.input_shape:
        raise UserError(
            "synthetic data needs an input shape", file=file, key="task.input_shape", hint="e.g. [3, 224, 224]"
        )
    if t.data == "synthetic" and space.trains:
        raise UserError(
            "synthetic data has no labels to train on", file=file, key="train", hint="remove the train section"
        )
    _check_arch(t.model, space.arch, file=file, key="")
    distill = space.compress.get("distill") if space.compress else None
    if isinstance(distill, dict) and isinstance(distill.get("teacher"), dict):
        teacher = distill["teacher"]
        prefix = "compress.distill.teacher"
        model = teacher.get("model") or t.model
        _check_arch(model, teacher.get("arch") or {}, file=file, key=prefix, model_key=f"{prefix}.model")


def _check_arch(model: str, arch: dict[str, Any], *, file: str, key: str, model_key: str = "task.model") -> None:
    """The model family exists and ``arch`` only names its parameters, with allowed values.
    ``key`` prefixes the reported keys (``''`` for the space's own ``arch``)."""
    where = f"{key}.arch" if key else "arch"
    if ":" in model:
        _check_plugin_ref(model, file=file, key=model_key)
        return
    try:
        fam = resolve_family(model)
    except UserError as err:
        raise UserError(err.problem, file=file, key=model_key, hint=err.hint) from None
    for name, spec in arch.items():
        if name not in fam.params:
            near = closest(name, list(fam.params))
            raise UserError(
                f"unknown parameter of model family {fam.name!r}",
                file=file,
                key=f"{where}.{name}",
                hint=f"did you mean {near!r}?" if near else f"valid: {', '.join(fam.params)}",
            )
        if getattr(spec, "per_stage", False) and name not in fam.per_stage:
            raise UserError(
                f"{name!r} cannot vary per stage; per-stage parameters: {', '.join(fam.per_stage) or 'none'}",
                file=file,
                key=f"{where}.{name}.per_stage",
            )
        if name in fam.choices:
            _check_value(fam.choices[name], spec, file, f"{where}.{name}")


def _check_plugin_ref(ref: str, *, file: str, key: str) -> None:
    mod, _, fn = ref.partition(":")
    if not mod or not fn or not fn.isidentifier():
        raise UserError(f"plug-in reference {ref!r} must look like 'pkg.module:function'", file=file, key=key)
    import sys

    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        found = importlib.util.find_spec(mod)
    except (ImportError, ValueError):
        found = None
    if found is None:
        raise UserError(
            f"plug-in module {mod!r} cannot be found",
            file=file,
            key=key,
            hint="run from the directory that holds it, or install it into this environment",
        )


def load_space(path: str | Path | None = None) -> SearchSpace:
    """Load and fully validate a search space (a path or a shipped name)."""
    p = resolve_space_path(path)
    space = _load.load_space(p)
    check_space(space, file=str(p))
    return space


def load_profile(path: str | Path | None = None) -> DeviceProfile:
    """Load and validate a device profile (a path or a shipped name)."""
    return _load.load_profile(resolve_profile_path(path))


def check(space: str | Path | None = None, device: str | Path | None = None) -> tuple[SearchSpace, DeviceProfile]:
    """Validate a space and a profile without doing any work. Raises ``UserError``."""
    return load_space(space), load_profile(device)


def _describe(kind: str) -> list[tuple[str, str, str]]:
    out = []
    for p in sorted(_shipped(kind).glob("*.yaml")):
        try:
            data = _load.read_yaml(p)
            desc = str(data.get("description", "")).strip().splitlines()[0] if data.get("description") else ""
        except UserError as err:
            desc = f"(invalid: {err.problem})"
        out.append((p.stem, str(p.relative_to(PACKAGE_ROOT)), desc))
    return out


def list_spaces() -> list[tuple[str, str, str]]:
    """Shipped search spaces as (name, path, description)."""
    return _describe("search_spaces")


def list_profiles() -> list[tuple[str, str, str]]:
    """Shipped device profiles as (name, path, description)."""
    return _describe("device_profiles")


def run_name_dir(results_dir: str | Path, name: str) -> Path:
    """The run directory for ``name``; refuses names that could escape ``results_dir``."""
    if not _RUN_NAME.match(name) or name in (".", "..") or ".." in name:
        raise UserError(
            f"run name {name!r} is not allowed",
            key="--name",
            hint="use letters, digits, '.', '_' and '-' (no '/', no '..'), starting with a letter or digit",
        )
    root = Path(results_dir).resolve()
    run_dir = (root / name).resolve()
    if run_dir.parent != root:
        raise UserError(f"run name {name!r} escapes the results directory", key="--name")
    return run_dir


def _preflight(space: SearchSpace, profile: DeviceProfile, *, profile_file: str) -> None:
    """Checks that need torch / TVM: the target compiles, plug-ins load and build."""
    import platform

    import torch

    from autotune.compiler import resolve_target
    from autotune.models import build_model
    from autotune.space import example_params
    from autotune.trial import make_trial_config, prepare_task

    target = resolve_target(profile, file=profile_file)
    if str(target.kind.name) != "llvm":
        raise UserError(
            f"the {profile.runner.kind} runner measures CPU (llvm) targets only, got {target.kind.name!r}",
            file=profile_file,
            key="target.kind",
            hint="GPU targets are not supported yet",
        )
    if profile.compiler and shutil.which(profile.compiler.split()[0]) is None:
        raise UserError(
            f"the cross compiler {profile.compiler!r} is not on PATH",
            file=profile_file,
            key="compiler",
            hint="install it (the profile's comment says how) or put its directory on PATH",
        )
    triple = str(profile.target.get("mtriple", ""))
    here = platform.machine().replace("arm64", "aarch64")
    if profile.runner.kind == "local" and triple and not triple.startswith(here):
        raise UserError(
            f"the target ({triple}) cannot run on this {here} machine with the local runner",
            file=profile_file,
            key="runner.kind",
            hint="measure on the device over TVM RPC (runner: {kind: rpc, tracker: HOST:PORT, key: KEY}), "
            "or run the search on the device itself",
        )
    if profile.runner.kind == "rpc":
        from autotune.measure.rpc import check_tracker

        check_tracker(profile.runner, file=profile_file)
    task = prepare_task(space, profile)
    if ":" in space.task.model:
        cfg = make_trial_config(example_params(space), space, trial_id="preflight", seed=0)
        try:
            model = build_model(task.family, cfg.arch, task.data.input_shape, task.data.num_classes)
        except Exception as err:  # the user's builder: any error is theirs to fix
            raise UserError(f"the model plug-in failed: {type(err).__name__}: {err}", key="task.model") from None
        if not isinstance(model, torch.nn.Module):
            raise UserError(
                f"the model plug-in returned {type(model).__name__}, not a torch.nn.Module", key="task.model"
            )


def _saved_devices(run_dir: Path) -> list[str]:
    """The other devices a run was started with (``run.json``), in order."""
    run_json = run_dir / "run.json"
    return list(json.loads(run_json.read_text()).get("devices", [])) if run_json.exists() else []


def _other_devices(
    space: SearchSpace, first: DeviceProfile, others: Sequence[DeviceProfile], *, space_file: str
) -> None:
    """Check the devices of a multi-device search against each other and the space's device metrics.

    Raises:
        UserError: two devices share a name, or an objective or constraint names a device that is
            not one of the others (the first device's figures are named without ``@``).
    """
    names = [first.name, *(o.name for o in others)]
    for n in names:
        if names.count(n) > 1:
            raise UserError(f"device profile {n!r} is given twice; each device needs its own name", key="--device")
    for section in ("objectives", "constraints"):
        for full in getattr(space, section):
            _, at, device = full.partition("@")
            if at and device not in names[1:]:
                hint = (
                    f"the first device's figures are named without '@' ({full.partition('@')[0]!r})"
                    if device == first.name
                    else f"devices of this search after the first: {', '.join(names[1:]) or 'none'}"
                )
                raise UserError(
                    f"{full!r} names a device that is not in the search", file=space_file, key=f"{section}.{full}",
                    hint=hint,
                )  # fmt: skip


def search(
    space: str | Path | None = None,
    device: str | Path | Sequence[str | Path] | None = None,
    *,
    name: str | None = None,
    results_dir: str | Path = "results",
    trials: int = 20,
    time_budget_s: float | None = None,
    concurrency: int | None = None,
    seed: int = 0,
    address: str | None = None,
    resume: bool = False,
    early_stopping: bool = True,
    cpus_per_trial: float = 1.0,
    gpus_per_trial: float = 0.0,
    trial_timeout_s: float | None = 3600.0,
    trial_memory_bytes: int | None = 8 * 2**30,
    enqueue: Sequence[Mapping[str, Any]] = (),
    warm_start: str | Path | None = None,
    sampler: str = "tpe",
    predictor: bool = True,
    constraint_first: bool = True,
    reference_every: int = 10,
    on_progress: Any = None,
) -> list[dict[str, Any]]:
    """Run a search and return its leaderboard rows (dicts, columns as in ``leaderboard.csv``).

    With ``resume=True`` the run's own copies of the space and profile are used. Each trial runs in
    a forked child process; one that runs past ``trial_timeout_s`` or whose resident memory passes
    ``trial_memory_bytes`` is killed and recorded as failed with the reason (None: no limit).
    ``enqueue`` lists parameter sets (``{'arch.stages': 2, ...}``) the study evaluates first.
    ``warm_start`` names an earlier run: its Pareto front is evaluated first and its finished
    trials are prior observations of the new study (see ``autotune.warmstart``).
    ``sampler`` is ``tpe`` (multi-objective TPE, constraint-aware; the default), ``nsga2`` or
    ``random``. ``predictor`` and ``constraint_first`` screen candidates before training (see
    ``autotune.trial.evaluate``); every ``reference_every`` trials the reference model is re-timed
    to detect drift (0: never).
    A resumed run keeps the settings it started with (``run.json``); only ``address`` may change.
    ``device`` may list several profiles: every candidate is then compiled, checked and timed on each;
    the first device's figures fill the usual columns, the others' ``<column>@<profile name>`` (see
    ``_other_devices``), and objectives or constraints may name a device (``latency_ms@rpi5``).

    Raises:
        UserError: a bad space or profile, a run that already exists (without ``resume``), an
            unreachable cluster.
    """
    import shutil

    from autotune.tuner import SAMPLERS, SearchSettings, run_search

    if trials < 1:
        raise UserError(f"must be >= 1, got {trials}", key="--trials")
    if sampler not in SAMPLERS:
        raise UserError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}", key="--sampler")
    if reference_every < 0:
        raise UserError(f"must be >= 0, got {reference_every}", key="--reference-every")
    name = name or time.strftime("run-%Y%m%d-%H%M%S")
    run_dir = run_name_dir(results_dir, name)
    saved_space, saved_profile = run_dir / "space.yaml", run_dir / "profile.yaml"
    if resume:
        if not saved_space.exists():
            raise UserError(f"no run to resume at {run_dir}", key="--resume")
        space_path, profile_path = saved_space, saved_profile
        other_paths = [run_dir / f"profile@{n}.yaml" for n in _saved_devices(run_dir)]
    else:
        if (run_dir / "leaderboard.csv").exists() or saved_space.exists():
            raise UserError(
                f"run {name!r} already exists in {run_dir.parent}",
                key="--name",
                hint=f"continue it with --resume {run_dir}, or choose another --name",
            )
        devices = [device] if device is None or isinstance(device, str | Path) else list(device)
        if not devices:
            raise UserError("no device profile given", key="--device")
        space_path, profile_path = resolve_space_path(space), resolve_profile_path(devices[0])
        other_paths = [resolve_profile_path(d) for d in devices[1:]]
    sp = load_space(space_path)
    prof = _load.load_profile(profile_path)
    others = tuple(_load.load_profile(p) for p in other_paths)
    _other_devices(sp, prof, others, space_file=str(space_path))
    values = {
        "trials": trials,
        "time_budget_s": time_budget_s,
        "concurrency": concurrency,
        "seed": seed,
        "early_stopping": early_stopping,
        "cpus_per_trial": cpus_per_trial,
        "gpus_per_trial": gpus_per_trial,
        "trial_timeout_s": trial_timeout_s,
        "trial_memory_bytes": trial_memory_bytes,
        "sampler": sampler,
        "predictor": predictor,
        "constraint_first": constraint_first,
        "reference_every": reference_every,
    }
    run_json = run_dir / "run.json"
    if resume and run_json.exists():  # a resumed run keeps the settings it started with
        saved = json.loads(run_json.read_text())["settings"]
        values.update({k: saved[k] for k in values if k in saved})
    warm = None
    if warm_start is not None and not resume:
        from autotune.warmstart import warm_start as _warm_start

        warm = _warm_start(warm_start, sp)
        if warm.dropped:
            dropped = ", ".join(f"{k} ({n} trials)" for k, n in sorted(warm.dropped.items()))
            log.warning("warm start: not in this space, or out of its range, so dropped: %s", dropped)
        log.info(
            "warm start from %s: %d front trials enqueued, %d finished trials as priors",
            warm.source,
            len(warm.enqueue),
            len(warm.priors),
        )
    settings = SearchSettings(
        name=name,
        results_dir=run_dir.parent,
        address=address,
        resume=resume,
        enqueue=tuple(dict(p) for p in enqueue) + (warm.enqueue if warm else ()),
        priors=warm.priors if warm else (),
        others=others,
        **values,
    )
    fresh = not run_dir.exists()
    # The checks that need torch and TVM run while Ray starts (both take seconds); no trial starts,
    # and nothing is written to the run directory, before they pass.
    with ThreadPoolExecutor(1, thread_name_prefix="autotune-preflight") as pool:

        def preflight() -> None:
            for profile, path in ((prof, profile_path), *zip(others, other_paths, strict=True)):
                _preflight(sp, profile, profile_file=str(path))

        checked = pool.submit(preflight)

        def ready() -> None:
            checked.result()  # re-raises the UserError of a failed check
            if not resume:
                run_dir.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(space_path, saved_space)
                shutil.copyfile(profile_path, saved_profile)
                for other, path in zip(others, other_paths, strict=True):
                    shutil.copyfile(path, run_dir / f"profile@{other.name}.yaml")
                from autotune import __version__

                record = {"autotune": __version__, "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
                record["devices"] = [o.name for o in others]
                run_json.write_text(json.dumps({**record, "settings": values}, indent=1) + "\n")

        try:
            # the report is drawn while Ray shuts down
            return run_search(sp, prof, settings, on_progress=on_progress, ready=ready, finish=lambda: report(run_dir))
        except UserError:
            if fresh and run_dir.is_dir() and not any(run_dir.iterdir()):
                run_dir.rmdir()  # a failed check leaves no empty run behind
            raise


def _run_inputs(run_dir: str | Path) -> tuple[Path, SearchSpace, DeviceProfile, list[dict[str, Any]]]:
    from autotune.leaderboard import read_leaderboard

    run = Path(run_dir).resolve()
    if not (run / "leaderboard.csv").exists() or not (run / "space.yaml").exists():
        raise UserError("not a run directory (no leaderboard.csv / space.yaml)", file=str(run_dir))
    space = _load.load_space(run / "space.yaml")
    profile = _load.load_profile(run / "profile.yaml")
    return run, space, profile, read_leaderboard(run)


def device(argv: Sequence[str]) -> int:
    """``autotune device emulate build|start|stop|status``: the emulated aarch64 device."""
    from autotune.emulate import main

    return int(main(list(argv)) or 0)


def calibrate_device(
    name: str,
    *,
    threads: int | None = None,
    base: str | Path | None = None,
    out: str | Path | None = None,
    force: bool = False,
) -> Path:
    """Measure this machine's peaks (and power, with a meter) and write profile ``name``.

    Args:
        threads: threads to measure with; default the base profile's ``measure.threads``.
        base: the profile the new one starts from (default ``host``: this CPU, detected).
        out: where to write it (default ``device_profiles/<name>.yaml`` under the working directory).
        force: overwrite an existing file.

    Raises:
        UserError: a bad name, a base that does not load, or ``out`` exists (without ``force``).
    """
    from autotune.calibrate import calibrate, check_name, write_profile

    check_name(name)
    base_path = resolve_profile_path(base)
    base_profile = load_profile(base_path)
    if base_profile.runner.kind != "local":
        raise UserError("calibrate measures this machine: the base profile must use the local runner", key="--base")
    path = Path(out) if out else Path("device_profiles") / f"{name}.yaml"
    if path.exists() and not force:
        raise UserError(f"{path} already exists", hint="pass --force to overwrite it, or --out another file")
    n = threads or base_profile.measure.threads
    if n < 1:
        raise UserError(f"threads must be at least 1, got {n}", key="--threads")
    log.info("calibrating with %d thread%s (about 10 s) ...", n, "s" * (n > 1))
    cal = calibrate(n, meter_kind=base_profile.meter)
    return write_profile(name, _load.read_yaml(base_path), cal, path)


def report(run_dir: str | Path) -> Path:
    """(Re)write ``pareto.png`` and ``report.html`` of a run; return the report's path."""
    import platform

    from autotune.reporting import write_report

    run, space, profile, rows = _run_inputs(run_dir)
    started = min((str(r["started_at"]) for r in rows if r.get("started_at")), default="")
    finished = max((str(r["finished_at"]) for r in rows if r.get("finished_at")), default="")
    targets = sorted({str(r["target"]) for r in rows if r.get("target")})
    facts = {
        "run": run.name,
        "search space": f"{space.name or ''} — {space.description}",
        "device profile": f"{profile.name} — {profile.description}",
        "target": "; ".join(targets) or json.dumps(profile.target),
        "trials": len(rows),
        "first trial started / last finished (UTC)": f"{started} / {finished}",
        "energy source": ", ".join(sorted({str(r["energy_source"]) for r in rows if r.get("energy_source")})) or "–",
        "host": f"{platform.node()} ({platform.machine()}, {platform.python_version()})",
        "leaderboard": str(run / "leaderboard.csv"),
    }
    from autotune.predictor import hit_rate

    rate, checked = hit_rate(rows)
    if checked:
        facts["latency predictor"] = f"{rate:.0%} of {checked} predictions within ±10 % of the measured latency"
    screened = Counter(str(r["screened"]) for r in rows if r.get("screened"))
    if screened:
        facts["screened out before training"] = ", ".join(f"{n} {how}" for how, n in sorted(screened.items()))
    return write_report(run, rows, objectives=space.objectives, title=f"autotune run {run.name}", facts=facts)


def export(run_dir: str | Path, trial_id: str, out: str | Path | None = None) -> Path:
    """Write a deployable bundle of one trial (ONNX, TVM library, parameters, README); return its folder."""
    from autotune.bundle import export_bundle
    from autotune.trial import prepare_task

    run, space, profile, rows = _run_inputs(run_dir)
    row = next((r for r in rows if str(r["trial_id"]) == str(trial_id)), None)
    if row is None:
        raise UserError(f"no trial {trial_id!r} in {run / 'leaderboard.csv'}", key="TRIAL_ID")
    dest = Path(out) if out else run / "export" / str(trial_id)
    export_bundle(run, row, prepare_task(space, profile), dest)
    return dest


def evaluate(
    params: Mapping[str, Any],
    profile: str | Path | DeviceProfile | None = None,
    *,
    space: str | Path | SearchSpace | None = None,
    work_dir: str | Path | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Evaluate one candidate in this process and return its leaderboard row.

    Args:
        params: sampled values keyed ``'arch.<name>'`` / ``'train.<name>'`` / ``'compress.<technique>.<name>'``;
            the space's constants and autotune's defaults fill the rest.
        work_dir: the candidate's files (default: a temporary directory); a distillation teacher is
            cached in its ``cache`` subdirectory.
    """
    from autotune.trial import evaluate as _evaluate
    from autotune.trial import make_trial_config, prepare_task

    sp = space if isinstance(space, SearchSpace) else load_space(space)
    prof = profile if isinstance(profile, DeviceProfile) else load_profile(profile)
    task = prepare_task(sp, prof)
    cfg = make_trial_config(params, sp, trial_id="evaluate", seed=seed)
    if work_dir is None:
        with tempfile.TemporaryDirectory(prefix="autotune-") as tmp:
            return _evaluate(cfg, task, work_dir=tmp, cache_dir=Path(tmp) / "cache")
    return _evaluate(cfg, task, work_dir=work_dir, cache_dir=Path(work_dir) / "cache")
