"""Run directories: a run's name (it may not leave the results directory) and what a finished run holds."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from autotune.config.device_profile import DeviceProfile
from autotune.config.search_space import SearchSpace
from autotune.errors import UserError

__all__ = ["leaderboard_csv", "read_run", "run_name_dir"]

_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


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


def read_run(run_dir: str | Path) -> tuple[Path, SearchSpace, DeviceProfile, list[dict[str, Any]]]:
    """A finished (or running) run: its directory, its own copies of the space and profile, its rows.

    Raises:
        UserError: ``run_dir`` has no ``leaderboard.csv`` or ``space.yaml``.
    """
    from autotune.config.load import load_profile
    from autotune.leaderboard import read_leaderboard
    from autotune.validate import load_space

    run = Path(run_dir).resolve()
    if not (run / "leaderboard.csv").exists() or not (run / "space.yaml").exists():
        raise UserError("not a run directory (no leaderboard.csv / space.yaml)", file=str(run_dir))
    space = load_space(run / "space.yaml", plugins=False)
    return run, space, load_profile(run / "profile.yaml"), read_leaderboard(run)


def leaderboard_csv(run: str | Path) -> Path:
    """A run directory's ``leaderboard.csv``, or ``run`` itself when it is a CSV file.

    Raises:
        UserError: there is no such file.
    """
    path = Path(run)
    csv_path = path / "leaderboard.csv" if path.is_dir() else path
    if not csv_path.exists():
        raise UserError(
            "no leaderboard.csv here", file=str(path), hint="pass a run directory such as results/first-run"
        )
    return csv_path
