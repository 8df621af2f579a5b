"""A search's front door (``autotune.search``): resolve its inputs, prepare the run directory, run.

A new run copies its space and profiles into the run directory and writes ``run.json`` (its
``RunConfig``); a resumed run reads them back from there, so it goes on with what it started with.
The pre-flight checks (torch, TVM) run while Ray starts; nothing is written before they pass.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from autotune.config.device_profile import DeviceProfile
from autotune.config.search_space import SearchSpace
from autotune.errors import UserError
from autotune.search.progress import ProgressHook
from autotune.search.settings import RunConfig, read_run_devices

__all__ = ["check_devices", "search"]

log = logging.getLogger(__name__)


def check_devices(
    space: SearchSpace, first: DeviceProfile, others: Sequence[DeviceProfile], *, space_file: str
) -> None:
    """Check the devices of a multi-device search against each other, the first device's backends,
    and the space's ``METRIC@NAME`` objectives and constraints.

    Raises:
        UserError: two devices share a name, a device is named like a backend, or an objective or
            constraint names a device or backend that is not in the search (the first device's and
            the first backend's figures are named without ``@``).
    """
    names = [first.name, *(o.name for o in others)]
    backends = list(first.backends[1:])
    for n in names:
        if names.count(n) > 1:
            raise UserError(f"device profile {n!r} is given twice; each device needs its own name", key="--device")
        if n in first.backends:
            raise UserError(f"device profile {n!r} has the name of a backend; rename the profile", key="--device")
    for section in ("objectives", "constraints"):
        for full in getattr(space, section):
            _, at, where = full.partition("@")
            if at and where not in names[1:] + backends:
                hint = (
                    "the first device's and the first backend's figures are named without '@' "
                    f"({full.partition('@')[0]!r})"
                    if where in (first.name, first.backends[0])
                    else f"devices of this search after the first: {', '.join(names[1:]) or 'none'}; "
                    f"backends of {first.name} after the first: {', '.join(backends) or 'none'}"
                )
                raise UserError(
                    f"{full!r} names a device or backend that is not in the search", file=space_file,
                    key=f"{section}.{full}", hint=hint,
                )  # fmt: skip


def search(
    space: str | Path | None,
    device: str | Path | Sequence[str | Path] | None,
    config: RunConfig,
    *,
    name: str | None = None,
    results_dir: str | Path = "results",
    address: str | None = None,
    resume: bool = False,
    enqueue: Sequence[Mapping[str, Any]] = (),
    warm_start: str | Path | None = None,
    on_progress: ProgressHook | None = None,
    on_finish: Callable[[Path], Any] | None = None,
    rebuild_study: bool = False,
    on_update: Callable[[Path], Any] | None = None,
) -> list[dict[str, Any]]:
    """Run a search and return its leaderboard rows (see ``autotune.api.search``).

    One driver at a time may run a run directory (``autotune.runs.DriverLock``).

    Args:
        config: the run options; a resumed run's own ``run.json`` replaces them.
        on_finish: called with the run directory after the last trial, while Ray shuts down (the
            API draws the report).
        on_update: called with the run directory in the background as rows are stored (the API
            redraws the report live).

    Raises:
        UserError: a bad space or profile, a run that already exists (without ``resume``), a run
            another driver is running, a resumed run whose study cannot be opened (without
            ``rebuild_study``), an unreachable cluster.
    """
    from autotune.runs import DriverLock, run_name_dir

    name = name or time.strftime("run-%Y%m%d-%H%M%S")
    run_dir = run_name_dir(results_dir, name)
    if resume and not (run_dir / "space.yaml").exists():
        raise UserError(f"no run to resume at {run_dir}", key="--resume")
    if rebuild_study and not resume:
        raise UserError("--rebuild-study rebuilds a resumed run's study", key="--rebuild-study",
                        hint="use it with --resume RUN_DIR")  # fmt: skip
    fresh = not run_dir.exists()
    lock = DriverLock(run_dir, key="--resume" if resume else "--name")
    lock.acquire()  # before any work: a second driver on this run is refused at once
    try:
        return _search(space, device, config, name, run_dir, address=address, resume=resume, enqueue=enqueue,
                       warm_start=warm_start, on_progress=on_progress, on_finish=on_finish,
                       rebuild_study=rebuild_study, on_update=on_update)  # fmt: skip
    except UserError:
        if fresh and run_dir.is_dir() and {p.name for p in run_dir.iterdir()} <= {DriverLock.FILE}:
            (run_dir / DriverLock.FILE).unlink(missing_ok=True)
            run_dir.rmdir()  # a failed check leaves no empty run behind
        raise
    finally:
        lock.release()


def _search(
    space: str | Path | None,
    device: str | Path | Sequence[str | Path] | None,
    config: RunConfig,
    name: str,
    run_dir: Path,
    *,
    address: str | None,
    resume: bool,
    enqueue: Sequence[Mapping[str, Any]],
    warm_start: str | Path | None,
    on_progress: ProgressHook | None,
    on_finish: Callable[[Path], Any] | None,
    rebuild_study: bool,
    on_update: Callable[[Path], Any] | None = None,
) -> list[dict[str, Any]]:
    """``search`` once the run directory's driver lock is held."""
    from autotune.catalog import kernels_donor, resolve_profile_path, resolve_space_path
    from autotune.config.load import load_profile
    from autotune.preflight import preflight
    from autotune.search.driver import SearchRun, run_search
    from autotune.validate import load_space

    saved_space, saved_profile = run_dir / "space.yaml", run_dir / "profile.yaml"
    if resume:
        space_path, profile_path = saved_space, saved_profile
        other_paths = [run_dir / f"profile@{n}.yaml" for n in read_run_devices(run_dir)]
        saved = RunConfig.read(run_dir)
        if saved is not None:  # a resumed run keeps the settings it started with
            config = config.resumed(saved)
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
    prof = load_profile(profile_path)
    others = tuple(load_profile(p) for p in other_paths)
    check_devices(sp, prof, others, space_file=str(space_path))
    if resume:
        _check_study(sp, prof, run_dir, rebuild=rebuild_study)
    warm = _warm_start(warm_start, sp) if warm_start is not None and not resume else None
    run = SearchRun(
        name=name,
        run_dir=run_dir,
        config=config,
        address=address,
        resume=resume,
        enqueue=tuple(dict(p) for p in enqueue) + (warm.enqueue if warm else ()),
        priors=warm.priors if warm else (),
        others=others,
    )
    # The checks that need torch and TVM run while Ray starts (both take seconds); no trial starts,
    # and nothing is written to the run directory, before they pass.
    with ThreadPoolExecutor(1, thread_name_prefix="autotune-preflight") as pool:

        def check() -> None:
            for profile, path in ((prof, profile_path), *zip(others, other_paths, strict=True)):
                kernels_donor(profile, file=str(path))
                preflight(sp, profile, profile_file=str(path), space_file=str(space_path), cache_dir=run_dir / "cache")

        checked = pool.submit(check)

        def ready() -> None:
            checked.result()  # re-raises the UserError of a failed check
            if not resume:
                run_dir.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(space_path, saved_space)
                shutil.copyfile(profile_path, saved_profile)
                for other, path in zip(others, other_paths, strict=True):
                    shutil.copyfile(path, run_dir / f"profile@{other.name}.yaml")
                config.write(run_dir, version=_version(), devices=[o.name for o in others])

        # the report is drawn while Ray shuts down
        finish = None if on_finish is None else lambda: on_finish(run_dir)
        update = None if on_update is None else lambda: on_update(run_dir)
        return run_search(sp, prof, run, on_progress=on_progress, ready=ready, finish=finish, update=update)


def _check_study(space: SearchSpace, profile: DeviceProfile, run_dir: Path, *, rebuild: bool) -> None:
    """A resumed run's study must open; with ``rebuild`` it is rebuilt from ``trials.jsonl`` first."""
    from autotune.config.search_space import METRICS
    from autotune.leaderboard import Leaderboard
    from autotune.search import study as studies

    rows = Leaderboard(run_dir, objectives=space.objectives, metric_columns=METRICS).rows()
    if rebuild:
        from autotune.constraints import learned_floor
        from autotune.task import prepare_task

        data = prepare_task(space, profile, cache_dir=run_dir / "cache").data
        learned = learned_floor(data.y_val) if data.labelled else None
        aside = studies.rebuild_study(space, profile, run_dir, rows, learned)
        log.warning("study rebuilt from trials.jsonl: %d finished trials; the old one is %s", len(rows), aside.name)
    studies.check_study(run_dir, len(rows))


def _warm_start(source: str | Path, space: SearchSpace) -> Any:
    """Read an earlier run's front and finished trials for ``space`` and say what was kept."""
    from autotune.warmstart import warm_start

    warm = warm_start(source, space)
    if warm.dropped:
        dropped = ", ".join(f"{k} ({n} trials)" for k, n in sorted(warm.dropped.items()))
        log.warning("warm start: not in this space, or out of its range, so dropped: %s", dropped)
    log.info(
        "warm start from %s: %d front trials enqueued, %d finished trials as priors",
        warm.source,
        len(warm.enqueue),
        len(warm.priors),
    )
    return warm


def _version() -> str:
    """autotune's installed version (``run.json``'s ``autotune``)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("autotune")
    except PackageNotFoundError:
        return "unknown"
