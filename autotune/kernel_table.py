"""The per-profile kernel table: every fused workload (``autotune.compiler.workloads``) timed once on
the device, alone, under the quiet lock, and reused by every later candidate that contains it.

It lives beside the predictor's history, ``<results>/.predictor/<profile>.kernels.jsonl``: one JSON
line per workload, appended under an flock, a line cut by a crash skipped on reading. Lines from
another environment (``autotune.predictor.environment_key``: CPU, TVM version, target, threads,
paired timing) are not used. ``fill`` is called after a candidate is timed: it times only the
workloads the table lacks, from the candidate's own library (paired with the reference network when
the profile pairs its timings, ``autotune.measure.kernels.time_in_library``).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autotune.compiler.workloads import Workload

if TYPE_CHECKING:
    from autotune.config.device_profile import DeviceProfile
    from autotune.quiet import QuietLock

__all__ = ["KernelTable", "TableEntry", "table_path"]


@dataclass(frozen=True)
class TableEntry:
    """One timed workload: its key and description (``Workload``) and the seconds of one call."""

    key: str
    kind: str
    flops: float
    bytes: float
    seconds: float
    args: tuple[tuple[tuple[int, ...], str], ...] = ()


def table_path(profile: DeviceProfile, results_dir: str | os.PathLike[str]) -> Path:
    """Where ``profile``'s kernel table is kept (beside ``predictor.history_path``)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", profile.name)
    return Path(results_dir) / ".predictor" / f"{safe}.kernels.jsonl"


@dataclass
class KernelTable:
    """The timed workloads of one environment, read from ``path`` (see the module doc)."""

    path: Path
    key: Mapping[str, Any]
    entries: dict[str, TableEntry] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | os.PathLike[str], key: Mapping[str, Any]) -> KernelTable:
        """The table at ``path`` in environment ``key`` (empty when there is no file)."""
        table = cls(Path(path), dict(key))
        if not table.path.exists():
            return table
        with open(table.path) as f:
            fcntl.flock(f, fcntl.LOCK_SH)
            lines = f.read().splitlines()
        for line in lines:
            try:
                rec = json.loads(line)
                if not all(rec.get(k) == v for k, v in table.key.items()):
                    continue
                args = tuple((tuple(int(d) for d in shape), str(dtype)) for shape, dtype in rec.get("args", ()))
                entry = TableEntry(rec["key"], rec["kind"], float(rec["flops"]), float(rec["bytes"]),
                                   float(rec["seconds"]), args)  # fmt: skip
            except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
                continue  # a line cut by a crash, or not ours
            table.entries[entry.key] = entry
        return table

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, key: object) -> bool:
        return key in self.entries

    def missing(self, workloads: Iterable[Workload]) -> list[Workload]:
        """The workloads not in the table yet (each key once)."""
        seen: dict[str, Workload] = {}
        for w in workloads:
            if w.key not in self.entries and w.key not in seen:
                seen[w.key] = w
        return list(seen.values())

    def add(self, workloads: Sequence[Workload], seconds: Mapping[str, float]) -> None:
        """Append the timed ``workloads`` (``seconds`` by workload name) to the file and the table."""
        new = [
            TableEntry(w.key, w.kind, w.flops, w.bytes, float(seconds[w.name]), w.args)
            for w in workloads
            if w.name in seconds
        ]
        if not new:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = "".join(json.dumps({**self.key, **e.__dict__}) + "\n" for e in new)
        with open(self.path, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        self.entries.update((e.key, e) for e in new)

    def fill(self, artifact_path: str, workloads: Sequence[Workload], profile: DeviceProfile,
             lock: QuietLock | None = None) -> int:  # fmt: skip
        """Time the workloads of a compiled model the table lacks, from its library, on the profile's
        device, and add them; returns how many were timed."""
        from autotune.measure.kernels import time_in_library

        new = self.missing(workloads)
        if new:
            self.add(new, time_in_library(artifact_path, new, profile, lock))
        return len(new)
