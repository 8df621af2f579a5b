"""MetaSchedule's builder and runner, kept for the whole process instead of started per tuning.

A worker of MetaSchedule's builder or runner imports TVM when it starts (about 4 s here), and the
stock ``LocalBuilder`` starts a new pool for every batch of 8 candidates, so a small workload's
round of tuning spent more time starting workers than building. Here one pool serves every batch
and every ``Session`` of the process; a worker is replaced after ``MAX_USES`` builds (the leak the
stock builder's per-batch restart guards against) and whenever it times out or dies.

A pool belongs to the process that started it and to the environment it started in (a worker
inherits ``TVM_NUM_THREADS``, ``TMPDIR``, …): a forked child or a changed environment gets a new one.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tvm.s_tir import meta_schedule as ms

__all__ = ["MAX_USES", "close_all", "pooled_builder", "shared"]

#: Builds (or runs) a pool worker serves before it is replaced by a fresh one.
MAX_USES = 64

#: kind → (the pid that made it, (the environment, the key) it was made for, the object)
_SHARED: dict[str, tuple[int, Hashable, Any]] = {}


def shared(kind: str, key: Hashable, make: Callable[[], Any]) -> Any:
    """The process's object of ``kind`` made by ``make`` for ``key`` (made again when ``key``, the
    process or its environment changed; the one it replaces is closed)."""
    pid, stamp = os.getpid(), (tuple(sorted(os.environ.items())), key)
    held = _SHARED.get(kind)
    if held is not None and held[:2] == (pid, stamp):
        return held[2]
    if held is not None and held[0] == pid:  # never close what a parent process started
        _close(held[2])
    obj = make()
    _SHARED[kind] = (pid, stamp, obj)
    return obj


def _close(obj: Any) -> None:
    pool = getattr(obj, "pool", None)
    if pool is not None:
        pool.shutdown(wait=False)


@atexit.register
def close_all() -> None:
    """Shut down the pools this process started."""
    for kind, (pid, _, obj) in list(_SHARED.items()):
        if pid == os.getpid():
            _close(obj)
        del _SHARED[kind]


def pooled_builder(**kwargs: Any) -> ms.builder.Builder:
    """A ``LocalBuilder`` (same arguments) whose worker pool lives as long as the builder."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir import meta_schedule as ms
    from tvm.support.popen_pool import PopenPoolExecutor

    local = ms.builder.LocalBuilder._cls

    @derived_object
    class PooledBuilder(local):
        def _sanity_check(self) -> None:
            self.pool = PopenPoolExecutor(
                max_workers=self.max_workers,
                timeout=self.timeout_sec,
                initializer=self.initializer,
                maximum_process_uses=MAX_USES,
            )
            self.pool.submit(_check, self.f_build, self.f_export).result()

        def build(self, build_inputs: list[ms.builder.BuilderInput]) -> list[ms.builder.BuilderResult]:
            from tvm.s_tir.meta_schedule.builder import local_builder
            from tvm.support.popen_pool import StatusKind

            args = [
                (self.f_build, self.f_export, b.mod, b.target, local_builder._serialize_params(b.params))
                for b in build_inputs
            ]
            results = []
            for r in self.pool.map_with_error_catching(lambda x: local_builder._worker_func(*x), args):
                if r.status == StatusKind.COMPLETE:
                    results.append(ms.builder.BuilderResult(r.value, None))
                elif r.status == StatusKind.TIMEOUT:
                    msg = f"LocalBuilder: Timeout, killed after {self.timeout_sec} seconds"
                    results.append(ms.builder.BuilderResult(None, msg))
                else:
                    results.append(ms.builder.BuilderResult(None, f"LocalBuilder: An exception occurred\n{r.value}"))
            return results

    return PooledBuilder(**kwargs)


def _check(f_build: Any, f_export: Any) -> None:
    from tvm.s_tir.meta_schedule.utils import get_global_func_with_default_on_worker

    get_global_func_with_default_on_worker(name=f_build, default=None)
    get_global_func_with_default_on_worker(name=f_export, default=None)
