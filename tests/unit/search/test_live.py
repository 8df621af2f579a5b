"""The live report's writer: requests fold into one write at a time; stop waits for the one running."""

from __future__ import annotations

import threading
import time

from autotune.search.live import LiveReport


def test_requests_fold_into_one_write_and_nothing_is_written_after_stop():
    started, release, done = threading.Event(), threading.Event(), []

    def write():
        started.set()
        release.wait(5)
        done.append(1)

    live = LiveReport(write, min_interval_s=0.0)
    live.request()
    assert started.wait(5)
    for _ in range(10):  # rows arriving while a write runs: one more write, not ten
        live.request()
    release.set()
    deadline = time.monotonic() + 5  # (ends the wait only; the assertions below decide)
    while len(done) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    live.stop()  # joins the writer: no write can start or still run after it
    assert len(done) == 2 and live.writes == 2
    live.request()
    assert len(done) == 2  # nothing after stop


def test_stop_waits_for_the_write_in_progress():
    started, release, events = threading.Event(), threading.Event(), []

    def write():
        started.set()
        release.wait(5)
        events.append("written")

    live = LiveReport(write, min_interval_s=0.0)
    live.request()
    assert started.wait(5)

    def stop():
        live.stop()
        events.append("stopped")

    stopper = threading.Thread(target=stop)
    stopper.start()
    deadline = time.monotonic() + 5  # (ends the wait only) until stop has begun: it has refused more writes
    while not live._stopped.is_set() and time.monotonic() < deadline:
        time.sleep(0.01)
    release.set()
    stopper.join(5)
    assert events == ["written", "stopped"]  # stop returned after the write it waited for


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
