"""A search's run options, declared once: ``RunConfig`` is what the CLI parses, the API accepts and
``run.json`` keeps, so a resumed run goes on with the options it started with.

Each option is a field with its default; its metadata says how the command line spells it
(``flag``), parses it (``parse``) and explains it (``help``). ``negate`` marks a ``True`` default
that the command line turns off (``--no-predictor``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autotune.errors import UserError
from autotune.search.study import SAMPLERS

__all__ = ["RUN_FILE", "RunConfig", "parse_duration", "parse_size", "read_run_devices"]

#: The run directory's record of how it was started: ``{"autotune", "created_at", "devices", "settings"}``.
RUN_FILE = "run.json"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.I)


def parse_duration(text: str) -> float:
    """``'90'``, ``'90s'``, ``'30m'``, ``'8h'``, ``'1d'`` → seconds."""
    m = _DURATION.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use e.g. 90s, 30m, 8h)")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def parse_size(text: str) -> int:
    """``'512M'``, ``'8G'``, ``'8GiB'``, ``'1073741824'`` → bytes (binary units)."""
    m = _SIZE.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (use e.g. 512M, 8G)")
    return int(float(m.group(1)) * 1024 ** "_kmgt".index((m.group(2) or "_").lower()))


def _limit(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """``parse``, or None for ``none`` / ``0`` / ``off`` (no limit)."""

    def inner(text: str) -> Any:
        return None if text.strip().lower() in ("none", "0", "off") else parse(text)

    return inner


def _option(default: Any, flag: str, help: str, parse: Callable[[str], Any] | None = None, negate: bool = False) -> Any:
    return field(default=default, metadata={"flag": flag, "help": help, "parse": parse, "negate": negate})


@dataclass(frozen=True)
class RunConfig:
    """How a search runs: every option of ``autotune search`` / ``autotune.search`` but the inputs.

    Raises:
        UserError: on construction, an option out of range or an unknown sampler (keyed by its flag).
    """

    trials: int = _option(12, "--trials", "number of trials (default: 12)", int)
    time_budget_s: float | None = _option(None, "--time-budget", "stop after this long, e.g. 30m, 8h", parse_duration)
    concurrency: int | None = _option(None, "--concurrency", "trials at once (default: free CPUs)", int)
    seed: int = _option(0, "--seed", "sampler and training seed (default: 0)", int)
    cpus_per_trial: float = _option(1.0, "--cpus-per-trial", "CPUs (and torch threads) per trial (default 1)", float)
    gpus_per_trial: float = _option(0.0, "--gpus-per-trial", "GPUs Ray reserves per trial (default 0)", float)
    sampler: str = _option("tpe", "--sampler", "Optuna sampler (default: tpe)", str)
    predictor: bool = _option(
        True, "--no-predictor", "no latency predictor (no latency_pred_ms, no predicted skips)", negate=True
    )
    constraint_first: bool = _option(
        True, "--no-constraint-first", "never time an untrained network before training it", negate=True
    )
    reference_every: int = _option(
        10, "--reference-every", "re-time the reference model every N trials (default 10; 0 off)", int
    )
    trial_timeout_s: float | None = _option(
        3600.0, "--trial-timeout", "kill a trial after this long (1h; none)", _limit(parse_duration)
    )
    trial_memory_bytes: int | None = _option(
        8 * 2**30, "--trial-memory", "kill a trial using more memory (8G; none)", _limit(parse_size)
    )
    early_stopping: bool = _option(
        True, "--no-early-stopping", "train every trial fully (no ASHA on validation loss)", negate=True
    )
    #: a reference timing this far from the first is drift (not an option of the CLI or the API)
    drift_threshold: float = 0.10

    def __post_init__(self) -> None:
        if self.trials < 1:
            raise UserError(f"must be >= 1, got {self.trials}", key="--trials")
        if self.sampler not in SAMPLERS:
            raise UserError(f"unknown sampler {self.sampler!r}; choose one of {', '.join(SAMPLERS)}", key="--sampler")
        if self.reference_every < 0:
            raise UserError(f"must be >= 0, got {self.reference_every}", key="--reference-every")

    @classmethod
    def options(cls) -> tuple[dataclasses.Field, ...]:
        """The fields that are options of the CLI and the API (all but ``drift_threshold``)."""
        return tuple(f for f in dataclasses.fields(cls) if "flag" in f.metadata)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Add every option to ``autotune search``'s parser (``dest`` is the field's name)."""
        for f in cls.options():
            meta = f.metadata
            if meta["negate"]:
                parser.add_argument(meta["flag"], dest=f.name, action="store_false", help=meta["help"])
            else:
                kwargs: dict[str, Any] = {"metavar": meta["flag"].lstrip("-").upper().replace("-", "_")}
                if f.name == "sampler":
                    kwargs = {"choices": list(SAMPLERS)}
                parser.add_argument(
                    meta["flag"], dest=f.name, type=meta["parse"], default=f.default, help=meta["help"], **kwargs
                )

    @classmethod
    def from_args(cls, args: argparse.Namespace | Mapping[str, Any]) -> RunConfig:
        """The options parsed by ``add_arguments`` (or given as keyword arguments)."""
        values = vars(args) if isinstance(args, argparse.Namespace) else args
        return cls(**{f.name: values[f.name] for f in cls.options() if f.name in values})

    def to_json(self) -> dict[str, Any]:
        """The options as ``run.json`` keeps them (``settings``)."""
        return {f.name: getattr(self, f.name) for f in self.options()}

    def resumed(self, saved: Mapping[str, Any]) -> RunConfig:
        """This config with the options a run was started with (``run.json``'s ``settings``) put back."""
        return dataclasses.replace(self, **{f.name: saved[f.name] for f in self.options() if f.name in saved})

    @staticmethod
    def read(run_dir: Path) -> dict[str, Any] | None:
        """``settings`` of ``run_dir``'s ``run.json``, or None when the run has none."""
        path = run_dir / RUN_FILE
        return dict(json.loads(path.read_text())["settings"]) if path.exists() else None

    def write(self, run_dir: Path, *, version: str, devices: list[str]) -> None:
        """Write ``run_dir``'s ``run.json``: these options and the other devices' names, in order."""
        record = {"autotune": version, "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "devices": devices}
        (run_dir / RUN_FILE).write_text(json.dumps({**record, "settings": self.to_json()}, indent=1) + "\n")


def read_run_devices(run_dir: Path) -> list[str]:
    """The other devices a run was started with (``run.json``), in order."""
    path = run_dir / RUN_FILE
    return list(json.loads(path.read_text()).get("devices", [])) if path.exists() else []
