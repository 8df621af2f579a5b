"""Warm start: carry an earlier run's knowledge into a new study on the same (or a changed) space.

``warm_start(run_dir, space)`` reads the earlier run's leaderboard and returns

- ``enqueue``: the parameters of its Pareto front (rank 1), tried first by the new search;
- ``priors``: its finished trials (``ok`` and ``infeasible``) with their objective values, added to
  the new study as completed trials so the sampler starts informed (not re-run, not in the new
  leaderboard);
- ``dropped``: what did not fit the new space (a parameter it lacks, a value outside its range),
  which the caller reports. A trial keeps its compatible parameters as an enqueued set; it becomes a
  prior only when all of them fit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autotune.config.search_space import SearchSpace, metric_column
from autotune.errors import UserError
from autotune.space import PARAM_PREFIXES, distribution_of, param_sections, param_specs, spec_key

__all__ = ["WarmStart", "warm_start"]


@dataclass(frozen=True)
class WarmStart:
    source: str
    enqueue: tuple[dict[str, Any], ...] = ()
    priors: tuple[dict[str, Any], ...] = ()  # {"params", "distributions", "values"}
    dropped: dict[str, int] = field(default_factory=dict)  # parameter -> trials it was dropped from


def warm_start(run_dir: str | Path, space: SearchSpace) -> WarmStart:
    """Read ``run_dir`` (an earlier run) for a new search of ``space``.

    Raises:
        UserError: ``run_dir`` is not a run directory, or it has no finished trial.
    """
    from autotune.leaderboard import read_leaderboard

    run = Path(run_dir)
    if not (run / "leaderboard.csv").exists():
        raise UserError("not a run directory (no leaderboard.csv)", file=str(run_dir), key="--warm-start")
    rows = [r for r in read_leaderboard(run) if r.get("status") in ("ok", "infeasible")]
    if not rows:
        raise UserError("the run has no finished trial to start from", file=str(run_dir), key="--warm-start")
    objectives = [(metric_column(name), direction) for name, direction in space.objectives.items()]
    specs, sections = param_specs(space), param_sections(space)
    enqueue, priors, dropped = [], [], {}
    for row in rows:
        params, dists, lost = {}, {}, False
        for key, value in row.items():
            if not key.startswith(PARAM_PREFIXES) or value is None:
                continue
            dist = distribution_of(specs, key, value)
            if dist is None:
                section, _, name = key.rpartition(".")
                if spec_key(specs, key) is None and name in sections.get(section, {}):
                    continue  # a constant of the new space: nothing to carry
                dropped[key] = dropped.get(key, 0) + 1
                lost = True
                continue
            params[key], dists[key] = value, dist
        values = [row.get(col) for col, _ in objectives]
        if not lost and params and all(isinstance(v, int | float) for v in values):
            priors.append({"params": params, "distributions": dists, "values": [float(v) for v in values]})
        if row.get("pareto_rank") == 1 and row.get("status") == "ok" and params:
            enqueue.append(params)
    return WarmStart(source=str(run), enqueue=tuple(enqueue), priors=tuple(priors), dropped=dropped)
