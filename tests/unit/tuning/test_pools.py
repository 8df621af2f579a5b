"""The process's MetaSchedule builder and runner: kept across batches and sessions, replaced when the
key, the process or the environment changes, and never closed from a forked child."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest

from autotune.tuning import pools
from autotune.tuning.intrin import stub_tables, unused_intrin_tables


class _Pooled:
    def __init__(self) -> None:
        self.pool = self
        self.closed = False

    def shutdown(self, wait: bool = True) -> None:
        self.closed = True


@pytest.fixture(autouse=True)
def _empty():
    pools.close_all()
    yield
    pools.close_all()


def test_the_same_key_gets_the_same_object_and_a_new_key_closes_the_old(monkeypatch):
    made = []

    def make():
        made.append(_Pooled())
        return made[-1]

    first = pools.shared("runner", "a", make)
    assert pools.shared("runner", "a", make) is first and len(made) == 1
    second = pools.shared("runner", "b", make)
    assert second is not first and first.closed and not second.closed
    monkeypatch.setenv("TVM_NUM_THREADS", "3")  # a worker inherits the environment it started in
    third = pools.shared("runner", "b", make)
    assert third is not second and second.closed and len(made) == 3


def test_a_forked_child_starts_its_own_and_leaves_the_parents_open(monkeypatch):
    parent = pools.shared("builder", "k", _Pooled)
    pid = os.getpid()
    monkeypatch.setattr(os, "getpid", lambda: pid + 1)
    child = pools.shared("builder", "k", _Pooled)
    assert child is not parent and not parent.closed
    pools.close_all()
    assert child.closed and not parent.closed


@pytest.mark.slow
@pytest.mark.tvm
def test_one_worker_builds_every_batch(tmp_path):
    """Two batches, one pool: the same worker process built both, and what it built runs."""
    import numpy as np
    import tvm
    from tvm import te
    from tvm.s_tir import meta_schedule as ms

    a = te.placeholder((16,), "float32", name="a")
    add_one = te.create_prim_func([a, te.compute((16,), lambda i: a[i] + 1.0, name="b")])

    def export_by_pid(out: str, built) -> str:  # local: sent to the worker by value
        import os
        from pathlib import Path

        path = Path(out, f"{os.getpid()}-{len(list(Path(out).iterdir()))}.so")
        built.export_library(str(path))
        return str(path)

    target = tvm.target.Target("llvm")
    mod = tvm.IRModule({"main": add_one.with_attr("global_symbol", "main")})
    stub = functools.partial(stub_tables, unused_intrin_tables(target))  # as a tuning session's builder
    export = functools.partial(export_by_pid, str(tmp_path))
    builder = pools.pooled_builder(max_workers=1, timeout_sec=60, initializer=stub, f_export=export)
    results = [r for _ in range(2) for r in builder.build([ms.builder.BuilderInput(mod, target)] * 2)]
    assert [r.error_msg for r in results] == [None] * 4
    assert len({Path(r.artifact_path).name.split("-")[0] for r in results}) == 1  # one worker, never restarted
    f = tvm.runtime.load_module(results[-1].artifact_path)["main"]
    a, b = tvm.runtime.tensor(np.arange(16, dtype="float32")), tvm.runtime.tensor(np.zeros(16, "float32"))
    f(a, b)
    np.testing.assert_array_equal(b.numpy(), np.arange(16) + 1)
    builder.pool.shutdown()
