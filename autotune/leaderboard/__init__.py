"""The leaderboard: one row per trial, in ``<run>/leaderboard.csv``.

The durable record is ``<run>/trials.jsonl`` (one JSON object per finished trial, appended and
fsynced); the CSV is rebuilt from it after every trial and replaced atomically, so a reader never
sees a half-written file and ``pareto_rank`` is always consistent. The column order below is the
public schema (see README, "Leaderboard columns"); ``schema_version`` changes when it does.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = [
    "COLUMNS",
    "DETAIL_COLUMNS",
    "SUMMARY_COLUMNS",
    "SCHEMA_VERSION",
    "STATUSES",
    "Leaderboard",
    "device_objectives",
    "flag_drift",
    "merge_leaderboards",
    "pareto_ranks",
    "read_leaderboard",
    "write_csv",
]

#: 2: compression columns (deploy_precision ... compress_s); 3: screening, predictor, drift;
#: 4: quiet_wait_s, roofline_fraction, idle_w (energy_mj above idle); 5: latency_repeats
SCHEMA_VERSION = 5
STATUSES = ("ok", "infeasible", "pruned", "failed")

#: Fixed columns, in order; sampled parameters follow as ``arch.*``, ``compress.*`` and ``train.*`` (sorted).
COLUMNS: tuple[str, ...] = (
    "schema_version",
    "run",
    "trial_id",
    "study_trial",
    "status",
    "error",
    "device",
    "accuracy",
    "val_accuracy",
    "latency_ms",
    "latency_p90_ms",
    "latency_cov",
    "latency_ci_low_ms",
    "latency_ci_high_ms",
    "latency_repeats",
    "timing",
    "latency_pred_ms",
    "screened",
    "energy_mj",
    "energy_source",
    "idle_w",
    "size_bytes",
    "artifact_bytes",
    "peak_mem_bytes",
    "peak_mem_source",
    "params",
    "macs",
    "roofline_fraction",
    "deploy_precision",
    "int8_ops",
    "compute_ops",
    "sparsity",
    "quant_bits",
    "lowrank_layers",
    "teacher_accuracy",
    "accuracy_uncompressed",
    "params_uncompressed",
    "macs_uncompressed",
    "latency_uncompressed_ms",
    "speedup_vs_uncompressed",
    "max_abs_diff",
    "top1_agreement",
    "pareto_rank",
    "violations",
    "epochs",
    "build_s",
    "screen_s",
    "train_s",
    "compress_s",
    "export_s",
    "import_s",
    "compile_s",
    "tune_s",
    "tuned_trials",
    "tune_db_hits",
    "tune_db_misses",
    "latency_tuned_ms",
    "latency_tuned_p90_ms",
    "latency_tuned_cov",
    "tuned_max_abs_diff",
    "verify_s",
    "measure_s",
    "reference_s",
    "quiet_wait_s",
    "threads",
    "load_avg",
    "reference_latency_ms",
    "drift",
    "drift_flag",
    "cpu_model",
    "cpu_governor",
    "tvm_version",
    "torch_version",
    "node",
    "target",
    "seed",
    "started_at",
    "finished_at",
)


#: Columns that a finalist's re-tuned measurement replaces for ranking.
_TUNED = {"latency_ms": "latency_tuned_ms", "latency_p90_ms": "latency_tuned_p90_ms"}


#: The columns a person looks at first (CLI tables); reports add ``DETAIL_COLUMNS``.
SUMMARY_COLUMNS: tuple[str, ...] = (
    "trial_id",
    "status",
    "pareto_rank",
    "accuracy",
    "val_accuracy",
    "latency_ms",
    "latency_tuned_ms",
    "latency_cov",
    "energy_mj",
    "size_bytes",
    "macs",
    "deploy_precision",
    "speedup_vs_uncompressed",
)
DETAIL_COLUMNS: tuple[str, ...] = (
    "latency_p90_ms",
    "timing",
    "energy_source",
    "peak_mem_bytes",
    "params",
    "max_abs_diff",
    "latency_pred_ms",
    "screened",
    "drift_flag",
)


Interval = tuple[float, float]


def _dominates(a: Sequence[Interval], b: Sequence[Interval]) -> bool:
    """``a`` is better somewhere and worse nowhere; better means its interval lies wholly below."""
    better = worse = False
    for (alo, ahi), (blo, bhi) in zip(a, b, strict=True):
        if ahi < blo:
            better = True
        elif bhi < alo:
            worse = True
    return better and not worse


def pareto_ranks(points: Sequence[Sequence[float | Interval]]) -> list[int]:
    """Non-dominated sorting (all objectives minimised): rank 1 is the Pareto front.

    A value is a number or an interval ``(low, high)``. One candidate beats another on an objective
    only when its interval lies wholly below the other's; overlapping intervals tie, so two
    candidates whose latencies cannot be told apart by their measurements share a rank.
    """
    iv = [[(float(v), float(v)) if not isinstance(v, tuple) else v for v in p] for p in points]
    n = len(iv)
    ranks = [0] * n
    remaining = set(range(n))
    rank = 1
    while remaining:
        front = {i for i in remaining if not any(_dominates(iv[j], iv[i]) for j in remaining if j != i)}
        for i in front:
            ranks[i] = rank
        remaining -= front
        rank += 1
    return ranks


def _interval(row: Mapping[str, Any], column: str, value: float) -> Interval:
    """The measured spread of a timed value: the confidence interval of the median latency (energy
    scaled with it); a point for everything else, and for finalists' tuned latency. A device's
    column (``latency_ms@rpi5``) uses that device's interval."""
    base, at, device = column.partition("@")
    lo, hi = row.get(f"latency_ci_low_ms{at}{device}"), row.get(f"latency_ci_high_ms{at}{device}")
    lat = row.get(f"latency_ms{at}{device}")
    if base in ("latency_ms", "energy_mj") and isinstance(lo, int | float) and isinstance(hi, int | float):
        if base == "latency_ms":
            return (float(min(lo, value)), float(max(hi, value)))
        if isinstance(lat, int | float) and lat > 0:
            return (value * lo / lat, value * hi / lat)
    return (value, value)


def _objective_vector(
    row: Mapping[str, Any], objectives: Mapping[str, str], columns: Mapping[str, str]
) -> list[Interval] | None:
    vec = []
    for name, direction in objectives.items():
        column = columns.get(name, name)
        tuned = row.get(_TUNED.get(column, column))
        v = tuned or row.get(column)  # finalists rank on their tuned figure
        if v is None or v == "" or not math.isfinite(float(v)):
            return None
        lo, hi = (float(v), float(v)) if tuned else _interval(row, column, float(v))
        vec.append((-hi, -lo) if direction == "max" else (lo, hi))
    return vec


#: Objectives that come from a timing: an emulated device's timings are never ranked.
_TIMED = {"latency_ms", "latency_p90_ms", "energy_mj"}


def device_objectives(objectives: Mapping[str, str], device: str) -> dict[str, str]:
    """The objectives as seen on ``device`` of a multi-device search: its own latency and energy
    in place of the first device's (objectives that already name a device are kept)."""
    return {(f"{n}@{device}" if n in _TIMED else n): d for n, d in objectives.items()}


def rank_rows(
    rows: list[dict[str, Any]],
    objectives: Mapping[str, str],
    columns: Mapping[str, str],
    *,
    rank_column: str = "pareto_rank",
) -> None:
    """Set ``rank_column`` (default ``pareto_rank``) on the ``ok`` rows (in place); other rows get none.

    Ranking is noise-aware: latency (and energy, which is derived from the same timing) compare by
    their confidence intervals of the median, so a dominance counts only when the intervals
    separate (see ``pareto_ranks``).

    When the timings come from an emulated device (``timing == 'emulated'``), latency and energy
    objectives are left out of the ranking; with nothing left, no row is ranked.
    """
    # devices whose timings are emulated: '' is the first device (``timing``), 'pi' is ``timing@pi``
    emulated = {
        c.partition("@")[2] for r in rows for c, v in r.items() if c.partition("@")[0] == "timing" and v == "emulated"
    }
    if emulated:  # leave out the timed objectives measured there
        objectives = {
            k: v
            for k, v in objectives.items()
            if not (columns.get(k, k).partition("@")[0] in _TIMED and columns.get(k, k).partition("@")[2] in emulated)
        }
        if not objectives:
            for r in rows:
                r[rank_column] = None
            return
    idx, pts = [], []
    for i, r in enumerate(rows):
        r[rank_column] = None
        vec = _objective_vector(r, objectives, columns) if r.get("status") == "ok" else None
        if vec is not None:
            idx.append(i)
            pts.append(vec)
    for i, rank in zip(idx, pareto_ranks(pts), strict=True):
        rows[i][rank_column] = rank


#: A reference re-timing further than this from the run's first one is drift.
DRIFT_THRESHOLD = 0.10


def flag_drift(rows: list[dict[str, Any]], threshold: float = DRIFT_THRESHOLD) -> list[dict[str, Any]]:
    """Set ``drift`` on rows that timed the reference model (its latency over the run's first
    reference timing, minus 1) and ``drift_flag`` on every timed row whose nearest reference timing
    before or after it (by ``finished_at``) drifted more than ``threshold``. Returns the drifted
    reference rows, in time order."""
    timed = sorted(
        (r for r in rows if isinstance(r.get("latency_ms"), int | float) or r.get("reference_latency_ms")),
        key=lambda r: (r.get("finished_at") or "", str(r.get("trial_id"))),
    )
    refs = [i for i, r in enumerate(timed) if isinstance(r.get("reference_latency_ms"), int | float)]
    for r in rows:
        r.pop("drift", None)
        r.pop("drift_flag", None)
    if not refs:
        return []
    base = timed[refs[0]]["reference_latency_ms"]
    drifted = set()
    for i in refs:
        d = timed[i]["reference_latency_ms"] / base - 1.0
        timed[i]["drift"] = d
        if abs(d) > threshold:
            drifted.add(i)
    for pos, r in enumerate(timed):
        before = [i for i in refs if i <= pos]
        after = [i for i in refs if i >= pos]
        near = {before[-1]} if before else set()
        near |= {after[0]} if after else set()
        r["drift_flag"] = bool(near & drifted)
    return [timed[i] for i in sorted(drifted)]


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _fmt(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, str) and v.startswith(_FORMULA_START) and not _is_number(v):
        return "'" + v  # a spreadsheet must not run a cell as a formula
    if isinstance(v, float):
        return "" if math.isnan(v) else repr(round(v, 9)) if abs(v) < 1e15 else repr(v)
    if isinstance(v, bool):
        return str(v).lower()
    return v


class Leaderboard:
    """Writes a run's trials: append to ``trials.jsonl``, rebuild ``leaderboard.csv`` atomically.

    Safe under concurrent writers (threads or processes): every update holds an ``flock``.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        *,
        objectives: Mapping[str, str],
        metric_columns: Mapping[str, str],
        drift_threshold: float = DRIFT_THRESHOLD,
        devices: Sequence[str] = (),
    ):
        """``devices``: the other devices of a multi-device search, each ranked in ``pareto_rank@<device>``."""
        self.run_dir = Path(run_dir)
        self.devices = tuple(devices)
        self.drift_threshold = drift_threshold
        self.objectives = dict(objectives)
        self.metric_columns = dict(metric_columns)
        self.store = self.run_dir / "trials.jsonl"
        self.csv_path = self.run_dir / "leaderboard.csv"

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.run_dir / ".leaderboard.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def rows(self) -> list[dict[str, Any]]:
        """The stored rows, one per trial id (the last record of a trial wins), in trial order."""
        if not self.store.exists():
            return []
        by_id: dict[str, dict[str, Any]] = {}
        for line in self.store.read_text().splitlines():
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line torn by a crash mid-append; the trial is re-run on resume
                by_id[str(row["trial_id"])] = row
        return sorted(by_id.values(), key=lambda r: (r.get("started_at") or "", str(r["trial_id"])))

    def add(self, row: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Record one finished trial and rewrite the CSV; return all rows (ranked)."""
        with self._locked():
            with open(self.store, "a") as f:
                f.write(json.dumps(dict(row), default=str) + "\n")
                f.flush()
                os.fsync(f.fileno())
            return self._write_csv()

    def rewrite(self) -> list[dict[str, Any]]:
        with self._locked():
            return self._write_csv()

    def _write_csv(self) -> list[dict[str, Any]]:
        rows = self.rows()
        rank_rows(rows, self.objectives, self.metric_columns)
        for device in self.devices:
            objectives = device_objectives(self.objectives, device)
            rank_rows(rows, objectives, self.metric_columns, rank_column=f"pareto_rank@{device}")
        flag_drift(rows, self.drift_threshold)
        write_csv(rows, self.csv_path)
        return rows


def write_csv(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike[str]) -> None:
    """Write rows with the fixed columns first, then the other devices' columns (``<column>@<device>``,
    sorted), then the rest (the sampled parameters) sorted; replace ``path`` atomically."""
    extra = sorted({k for r in rows for k in r if k not in COLUMNS}, key=lambda k: ("@" not in k, k))
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow([*COLUMNS, *extra])
    for r in rows:
        w.writerow([_fmt(r.get(c)) for c in (*COLUMNS, *extra)])
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(buf.getvalue())
    os.replace(tmp, path)


def merge_leaderboards(paths: Sequence[str | os.PathLike[str]]) -> list[dict[str, Any]]:
    """Rows of several runs (and devices) in one list; ``run`` and ``device`` tell them apart."""
    out: list[dict[str, Any]] = []
    for p in paths:
        out.extend(read_leaderboard(p))
    return out


def read_leaderboard(run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read ``<run_dir>/leaderboard.csv`` (or a CSV path) into dicts with numbers parsed."""
    p = Path(run_dir)
    p = p / "leaderboard.csv" if p.is_dir() else p
    with open(p, newline="") as f:
        return [
            {k: v if k.partition("@")[0] in TEXT_COLUMNS and v else _parse(v) for k, v in row.items()}
            for row in csv.DictReader(f)
        ]


#: Columns that hold text even when a value looks like a number (Ray's hex trial id ``6191e151``
#: reads as 6.191e154; node ids and versions likewise).
TEXT_COLUMNS = frozenset(
    ("run", "trial_id", "status", "error", "device", "timing", "energy_source", "peak_mem_source")
    + ("deploy_precision", "screened", "violations", "cpu_model", "cpu_governor", "tvm_version")
    + ("torch_version", "node", "target", "started_at", "finished_at")
)


def _parse(v: str) -> Any:
    if v == "":
        return None
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(v, v)
