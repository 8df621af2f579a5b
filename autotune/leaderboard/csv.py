"""The leaderboard as CSV: writing (atomic, spreadsheet-safe), reading back with types, merging runs."""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from autotune.leaderboard.schema import COLUMNS, TEXT_COLUMNS, split_device

__all__ = ["format_cell", "merge_leaderboards", "parse_cell", "read_leaderboard", "write_csv"]

#: A cell starting with one of these would run as a formula in a spreadsheet.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def format_cell(v: Any) -> Any:
    """A value as written in the CSV: None and NaN empty, booleans lower-case, formulas neutralised."""
    if v is None:
        return ""
    if isinstance(v, str) and v.startswith(_FORMULA_START) and not _is_number(v):
        return "'" + v  # a spreadsheet must not run a cell as a formula
    if isinstance(v, float):
        return "" if math.isnan(v) else repr(round(v, 9)) if abs(v) < 1e15 else repr(v)
    if isinstance(v, bool):
        return str(v).lower()
    return v


def parse_cell(v: str) -> Any:
    """A CSV cell back as a value: empty is None, then int, float, boolean, or the text itself."""
    if v == "":
        return None
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(v, v)


def write_csv(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike[str]) -> None:
    """Write rows with the fixed columns first, then the other devices' columns (``<column>@<device>``,
    sorted), then the rest (the sampled parameters) sorted; replace ``path`` atomically."""
    extra = sorted({k for r in rows for k in r if k not in COLUMNS}, key=lambda k: ("@" not in k, k))
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow([*COLUMNS, *extra])
    for r in rows:
        w.writerow([format_cell(r.get(c)) for c in (*COLUMNS, *extra)])
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w") as f:
            f.write(buf.getvalue())
            f.flush()
            os.fsync(f.fileno())
    except OSError:
        tmp.unlink(missing_ok=True)  # a full disk: the last good CSV stays in place
        raise
    os.replace(tmp, path)


def read_leaderboard(run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read ``<run_dir>/leaderboard.csv`` (or a CSV path) into dicts with numbers parsed."""
    p = Path(run_dir)
    p = p / "leaderboard.csv" if p.is_dir() else p
    with open(p, newline="") as f:
        return [
            {k: v if split_device(k)[0] in TEXT_COLUMNS and v else parse_cell(v) for k, v in row.items()}
            for row in csv.DictReader(f)
        ]


def merge_leaderboards(paths: Sequence[str | os.PathLike[str]]) -> list[dict[str, Any]]:
    """Rows of several runs (and devices) in one list; ``run`` and ``device`` tell them apart."""
    out: list[dict[str, Any]] = []
    for p in paths:
        out.extend(read_leaderboard(p))
    return out
