"""The quiet-measurement lock: timing excludes work; work does not exclude work."""

from __future__ import annotations

import multiprocessing as mp
import time
import types

from autotune import quiet
from autotune.quiet import QuietLock


class _StepClock:
    """A clock shared across ``fork``, standing in for the lock's ``time``: every reading moves it
    0.1 ms, and ``step`` moves it 1 s. The test asserts the order of its readings, never a duration."""

    def __init__(self, ctx) -> None:
        self.now = ctx.Value("d", 1e9)

    def read(self, by: float = 1e-4) -> float:
        with self.now.get_lock():
            self.now.value += by
            return self.now.value

    def step(self) -> float:
        return self.read(1.0)


def _hold_shared(path, ready, release, released_at, clock):
    lock = QuietLock(path)
    with lock.shared():
        ready.set()
        release.wait(5)  # until the other process is about to ask for the exclusive hold
        time.sleep(0.5)  # so that it is blocked when this hold ends (ordering, not measured)
        released_at.value = clock.step()  # just before the hold ends


def test_exclusive_waits_for_shared_and_reports_the_wait(tmp_path, monkeypatch):
    ctx = mp.get_context("fork")
    clock = _StepClock(ctx)
    monkeypatch.setattr(quiet, "time", types.SimpleNamespace(perf_counter=clock.read, time=clock.read))
    ready, release, released_at = ctx.Event(), ctx.Event(), ctx.Value("d", 0.0)
    p = ctx.Process(target=_hold_shared, args=(tmp_path, ready, release, released_at, clock))
    p.start()
    ready.wait(5)
    lock = QuietLock(tmp_path)
    release.set()
    with lock.exclusive():
        acquired_at = clock.read()
    p.join()
    assert 0 < released_at.value <= acquired_at  # it had to wait for the shared holder to let go
    (start, end), *_ = lock.waits  # and the span is recorded, in the lock's clock, around the release
    assert start <= released_at.value <= end <= acquired_at
    assert sum(e - s for s, e in lock.waits) <= lock.waited_s + 1e-6


def test_uncontended_holds_record_no_wait_span(tmp_path):
    lock = QuietLock(tmp_path)
    for _ in range(50):
        with lock.shared():
            pass
    with lock.exclusive():
        pass
    assert lock.waits == []


def test_shared_holders_do_not_block_each_other(tmp_path):
    a, b = QuietLock(tmp_path), QuietLock(tmp_path)
    with a.shared(), b.shared():
        pass
    assert a.waits == b.waits == []  # neither was blocked (one shared hold blocking another: a hang)


def test_no_directory_is_a_no_op():
    lock = QuietLock(None)
    with lock.exclusive(), lock.shared():
        pass
    assert lock.waited_s == 0.0
