"""The live report's writer: requests fold into one write at a time; stop waits for the one running."""

from __future__ import annotations

import threading
import time

from autotune.search.live import LiveReport


def test_requests_fold_and_stop_waits_for_the_write_in_progress():
    started, release, done = threading.Event(), threading.Event(), []

    def write():
        started.set()
        release.wait(5)
        done.append(time.monotonic())

    live = LiveReport(write, min_interval_s=0.0)
    live.request()
    assert started.wait(5)
    for _ in range(10):  # rows arriving while a write runs: one more write, not ten
        live.request()
    release.set()
    deadline = time.monotonic() + 5
    while len(done) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    assert len(done) == 2
    started.clear()
    release.clear()
    live.request()
    assert started.wait(5)
    stopper = threading.Thread(target=live.stop)
    stopper.start()
    time.sleep(0.2)
    assert stopper.is_alive()  # stop waits for the write in progress
    release.set()
    stopper.join(5)
    assert not stopper.is_alive() and len(done) == 3
    live.request()
    time.sleep(0.3)
    assert len(done) == 3  # nothing after stop


def test_a_failing_write_does_not_stop_the_writer(caplog):
    calls = []

    def write():
        calls.append(1)
        raise RuntimeError("matplotlib fell over")

    def wait_for(n):  # the deadline only ends the wait; the assertion below decides
        deadline = time.monotonic() + 5
        while len(calls) < n and time.monotonic() < deadline:
            time.sleep(0.01)

    live = LiveReport(write, min_interval_s=0.0)
    live.request()
    wait_for(1)
    live.request()  # the writer survived the first failure: it writes again
    wait_for(2)
    live.stop()
    assert len(calls) == 2 and "could not be written: matplotlib fell over" in caplog.text
