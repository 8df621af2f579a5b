"""The quiet-measurement lock: timing excludes work; work does not exclude work."""

from __future__ import annotations

import multiprocessing as mp
import time

from autotune.quiet import QuietLock


def _hold_shared(path, seconds, ready, released_at):
    lock = QuietLock(path)
    with lock.shared():
        ready.set()
        time.sleep(seconds)
        released_at.value = time.time()  # just before the hold ends


def test_exclusive_waits_for_shared_and_reports_the_wait(tmp_path):
    ctx = mp.get_context("fork")
    ready, released_at = ctx.Event(), ctx.Value("d", 0.0)
    p = ctx.Process(target=_hold_shared, args=(tmp_path, 0.5, ready, released_at))
    p.start()
    ready.wait(5)
    lock = QuietLock(tmp_path)
    with lock.exclusive():
        acquired_at = time.time()
    p.join()
    assert 0 < released_at.value <= acquired_at  # it had to wait for the shared holder to let go
    (start, end), *_ = lock.waits  # and the span is recorded, in Unix time, around the release
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
