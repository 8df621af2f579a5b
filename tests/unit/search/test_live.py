"""The live report's writer: requests fold into one write at a time; stop waits for the one running."""

from __future__ import annotations

import threading

from autotune.search.live import LiveReport


def test_requests_fold_into_one_write_and_nothing_is_written_after_stop():
    started, release, second, done = threading.Event(), threading.Event(), threading.Event(), []

    def write():
        started.set()
        release.wait(5)
        done.append(1)
        if len(done) == 2:
            second.set()

    live = LiveReport(write, min_interval_s=0.0)
    live.request()
    assert started.wait(5)
    for _ in range(10):  # rows arriving while a write runs: one more write, not ten
        live.request()
    release.set()
    second.wait(5)  # (a guard against a hang; the assertions below decide)
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
    live._stopped.wait(5)  # until stop has begun (it has refused more writes), then let the write end
    release.set()
    stopper.join(5)
    assert events == ["written", "stopped"]  # stop returned after the write it waited for


def test_a_failing_write_does_not_stop_the_writer(caplog):
    calls, wrote = [], [threading.Event(), threading.Event()]

    def write():
        calls.append(1)
        wrote[min(len(calls), 2) - 1].set()
        raise RuntimeError("matplotlib fell over")

    live = LiveReport(write, min_interval_s=0.0)
    live.request()
    wrote[0].wait(5)  # (guards against a hang; the assertion below decides)
    live.request()  # the writer survived the first failure: it writes again
    wrote[1].wait(5)
    live.stop()
    assert len(calls) == 2 and "could not be written: matplotlib fell over" in caplog.text
