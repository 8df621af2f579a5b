"""A chunk of tuning work that can run on any node: workloads in, measured records out.

``autotune tune`` (``autotune.spacetune``) hands each node a ``Chunk``: the workloads' PrimFuncs as
TVM JSON, the trials to measure for each, and the best records the shared database already has for
them (so a top-up continues from them). ``run_chunk`` tunes them on the node it runs on, in a
temporary directory, with the profile's runner, and returns a ``ChunkResult``: the new records as
MetaSchedule ``JSONDatabase`` lines. ``merge_result`` appends those to the shared database and credits
the ledger, under the database's data lock, on the driver. A node therefore needs no shared
filesystem, and no workload's records are ever written by two processes at once.
"""

from __future__ import annotations

import json
import socket
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

from autotune.config.device_profile import DeviceProfile
from autotune.tuning.database import TuningDatabase
from autotune.tuning.intrin import stub_tensor_intrin
from autotune.tuning.session import Session, rebind

if TYPE_CHECKING:
    import tvm

__all__ = ["Chunk", "ChunkResult", "best_latencies", "merge_result", "pack_chunk", "run_chunk"]

#: Records of a workload a chunk carries to seed its search (MetaSchedule's own top-k for a top-up).
SEED_RECORDS = 64
_WORKLOADS, _RECORDS = "database_workload.json", "database_tuning_record.json"


@dataclass(frozen=True)
class Chunk:
    """Tuning work for one node.

    Attributes:
        target: the TVM target, as ``Target.export()`` JSON.
        profile: the device profile (its runner measures, its compiler builds).
        funcs: workload key → (task name, the workload's IRModule as TVM JSON).
        todo: workload key → trials to measure now.
        seeds: the shared database's records of these workloads, as (workload lines, record lines).
        seed: seeds MetaSchedule's search.
        defaults: workloads whose default schedule is measured first (``Session.measure_defaults``).
    """

    target: str
    profile: DeviceProfile
    funcs: Mapping[str, tuple[str, str]]
    todo: Mapping[str, int]
    seeds: tuple[str, str]
    seed: int = 0
    defaults: tuple[str, ...] = ()


@dataclass(frozen=True)
class ChunkResult:
    """What a node measured: the new records as ``JSONDatabase`` lines (all workloads, new records).

    Attributes:
        node: the host name of the node that measured.
        measured: schedules measured.
        valid: keys of the workloads that now have a valid (error-free) record.
        best_s: workload key → its best measured seconds per call (None: no valid record).
        seconds: wall time on the node.
        defaults: workloads whose default schedule was measured without error.
    """

    node: str
    todo: Mapping[str, int]
    workload_lines: str
    record_lines: str
    measured: int
    valid: tuple[str, ...]
    best_s: Mapping[str, float | None]
    seconds: float
    defaults: tuple[str, ...] = ()


def _database_lines(directory: Path) -> tuple[str, str]:
    return tuple(  # type: ignore[return-value]
        (directory / name).read_text() if (directory / name).exists() else "" for name in (_WORKLOADS, _RECORDS)
    )


def pack_chunk(
    db: TuningDatabase,
    target: tvm.target.Target,
    profile: DeviceProfile,
    mods: Mapping[str, tuple[str, tvm.IRModule]],
    todo: Mapping[str, int],
    seed: int = 0,
    defaults: tuple[str, ...] = (),
) -> Chunk:
    """A chunk tuning ``todo`` of the workloads ``mods`` (key → (task name, IRModule)), seeded with the
    shared database's best records of them."""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    with tempfile.TemporaryDirectory(prefix="autotune-chunk-") as tmp:
        out = ms.database.JSONDatabase(work_dir=tmp)
        with db.reading():
            shared = ms.database.JSONDatabase(work_dir=str(db.directory)) if db.record_file.exists() else None
            for key in todo:
                mod = mods[key][1]
                if shared is not None and shared.has_workload(mod):
                    for r in shared.get_top_k(shared.commit_workload(mod), SEED_RECORDS):
                        out.commit_tuning_record(rebind(r, out.commit_workload(mod)))
        seeds = _database_lines(Path(tmp))
    return Chunk(
        target=json.dumps(dict(target.export()), default=list),
        profile=profile,
        funcs={k: (mods[k][0], tvm.ir.save_json(mods[k][1])) for k in todo},
        todo=dict(todo),
        seeds=seeds,
        seed=seed,
        defaults=tuple(defaults),
    )


def run_chunk(chunk: Chunk) -> ChunkResult:
    """Tune the chunk's workloads here, with the profile's runner, and return the new records."""
    import tvm

    t0 = time.perf_counter()
    target = tvm.target.Target(json.loads(chunk.target))
    stub_tensor_intrin(target)
    with tempfile.TemporaryDirectory(prefix="autotune-chunk-") as tmp:
        seeded = Path(tmp, "seeded")
        seeded.mkdir()
        (seeded / _WORKLOADS).write_text(chunk.seeds[0])
        (seeded / _RECORDS).write_text(chunk.seeds[1])
        seed_bytes = len(chunk.seeds[1].encode())
        db = TuningDatabase(seeded)
        tasks = {
            k: SimpleNamespace(dispatched=[tvm.ir.load_json(text)], task_name=name)
            for k, (name, text) in chunk.funcs.items()
        }
        with db.staging() as staging:
            session = Session(tasks, staging, target=target, db=db, seed=chunk.seed, profile=chunk.profile)
            defaults = session.measure_defaults(list(chunk.defaults))
            session.tune(dict(chunk.todo))
            measured, valid = session.merge()
            best = {k: session.latency_s(k) for k in chunk.todo}
        workloads = (seeded / _WORKLOADS).read_text()
        with (seeded / _RECORDS).open("rb") as f:
            f.seek(seed_bytes)
            records = f.read().decode()
    return ChunkResult(
        node=socket.gethostname(),
        todo=dict(chunk.todo),
        workload_lines=workloads,
        record_lines=records,
        measured=measured,
        valid=tuple(sorted(valid)),
        best_s=best,
        seconds=time.perf_counter() - t0,
        defaults=tuple(sorted(defaults)),
    )


def merge_result(
    db: TuningDatabase,
    target: tvm.target.Target,
    result: ChunkResult,
    names: Mapping[str, str],
    *,
    tuned: Mapping[str, int],
) -> int:
    """Append a chunk's new records to the shared database and credit the ledger with the workloads
    that now have a valid record (``tuned`` + the chunk's trials). Returns the records appended."""
    from tvm.s_tir import meta_schedule as ms

    with tempfile.TemporaryDirectory(prefix="autotune-merge-") as tmp:
        Path(tmp, _WORKLOADS).write_text(result.workload_lines)
        Path(tmp, _RECORDS).write_text(result.record_lines)
        records = ms.database.JSONDatabase(work_dir=tmp).get_all_tuning_records()
        with db.writing():
            db.directory.mkdir(parents=True, exist_ok=True)
            shared = ms.database.JSONDatabase(work_dir=str(db.directory))
            for r in records:
                shared.commit_tuning_record(rebind(r, shared.commit_workload(r.workload.mod)))
            credit = {k: (names[k], tuned.get(k, 0) + n) for k, n in result.todo.items() if k in result.valid}
            db.credit(str(target), credit, defaults={k: names[k] for k in result.defaults if k in result.valid})
    return len(records)


def best_latencies(db: TuningDatabase, mods: Mapping[str, tvm.IRModule]) -> dict[str, float | None]:
    """Each workload's best measured seconds per call in the shared database (None: no valid record)."""
    from tvm.s_tir import meta_schedule as ms

    out: dict[str, float | None] = dict.fromkeys(mods)
    with db.reading():
        if not db.record_file.exists():
            return out
        shared = ms.database.JSONDatabase(work_dir=str(db.directory))
        for key, mod in mods.items():
            if shared.has_workload(mod) and (best := shared.get_top_k(shared.commit_workload(mod), 1)):
                out[key] = sum(float(x) for x in best[0].run_secs) / len(best[0].run_secs)
    return out
