"""A real search: the CLI, Ray Tune, Optuna and TVM together, on digits."""

from __future__ import annotations

import datetime as dt
import json
import math
import shutil
import subprocess
import sys

import optuna
import pytest
from conftest import search_args

import autotune
from autotune.curves import read_curves

pytestmark = [pytest.mark.slow, pytest.mark.tvm, pytest.mark.ray]


def _cli(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "autotune.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=900
    )


def _dominates(a, b):
    """Noise-aware: latency counts only when the confidence intervals of the medians separate."""
    acc_better, acc_worse = a["val_accuracy"] > b["val_accuracy"], a["val_accuracy"] < b["val_accuracy"]
    lat_better = a["latency_ci_high_ms"] < b["latency_ci_low_ms"]
    lat_worse = b["latency_ci_high_ms"] < a["latency_ci_low_ms"]
    return (acc_better or lat_better) and not (acc_worse or lat_worse)


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    """One three-trial search that several tests read: (its working directory, arguments, result)."""
    tmp_path = tmp_path_factory.mktemp("three")
    args = search_args(tmp_path / "results", "it", "--concurrency", "2", "--seed", "1")
    return tmp_path, args, _cli(*args, cwd=tmp_path)


def test_three_trial_search_end_to_end(three):
    tmp_path, args, r = three
    assert r.returncode == 0, r.stderr[-3000:]
    run = tmp_path / "results" / "it"
    assert f"leaderboard: {run / 'leaderboard.csv'}" in r.stdout
    assert r.stderr.endswith("\n")  # the progress display's last frame is a whole line in a log
    rows = autotune.read_leaderboard(run)
    assert len(rows) == 3 and len({r["trial_id"] for r in rows}) == 3
    assert {r["status"] for r in rows} <= {"ok", "pruned", "infeasible", "failed"}
    ok = [r for r in rows if r["status"] == "ok"]
    assert ok, rows
    for row in ok:
        assert row["accuracy"] > 0.5 and row["val_accuracy"] > 0.5  # trained: chance is 0.1
        assert row["latency_ms"] > 0
        assert row["max_abs_diff"] < 1e-4
        assert row["run"] == "it" and row["device"] == "host_fast"
        assert row["arch.stages"] in (1, 2) and row["train.optimizer"] in ("adam", "nadam")
    # Pareto ranks agree with the objectives (val accuracy max, latency min)
    for row in ok:
        assert (row["pareto_rank"] == 1) == (not any(_dominates(o, row) for o in ok))
    for row in rows:
        if row["status"] != "ok":
            assert row["pareto_rank"] is None
    # each finished trial's timeline: its process's span, within the row's times, less its lock waits
    for row in rows:
        if row["status"] in ("ok", "infeasible"):
            timeline = run / "trials" / row["trial_id"] / "timeline.json"
            line = json.loads(timeline.read_text())
            start, end = dt.datetime.fromisoformat(row["started_at"]), dt.datetime.fromisoformat(row["finished_at"])
            # orders, not durations: the row's stamps are whole seconds (truncated); the driver stamped the
            # start before the process ended, and the process stamped the finish between its own bounds
            assert start.timestamp() <= line["finished"]
            assert math.floor(line["started"]) <= end.timestamp() <= line["finished"]
            # the process wrote its timeline before the run wrote its last leaderboard (one file-system clock)
            assert timeline.stat().st_mtime <= (run / "leaderboard.csv").stat().st_mtime
            waits = sum(b - a for a, b in line["quiet_waits"])
            assert all(line["started"] <= a < b <= line["finished"] for a, b in line["quiet_waits"])
            assert waits <= row["quiet_wait_s"] + 1e-6
    # the Optuna study holds the same trials, none left RUNNING
    study = optuna.load_study(study_name="autotune", storage=f"sqlite:///{run / 'study.db'}")
    states = [t.state.name for t in study.trials]
    assert len(states) == 3 and "RUNNING" not in states
    assert states.count("COMPLETE") == len([r for r in rows if r["status"] in ("ok", "infeasible")])

    # the same name again is refused; --resume continues without losing or duplicating trials
    again = _cli(*args, cwd=tmp_path)
    assert again.returncode == 1 and "already exists" in again.stderr and "--resume" in again.stderr
    resumed = _cli("search", "--resume", str(run), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # Tune keeps no scheduler state: the resumed early stopping is given the trials the rung judged
    rung = autotune.load_space(run / "space.yaml").train["epochs"] // 2
    judged = [r for r in rows if any(p["epoch"] == rung for p in read_curves(run / "tensorboard" / r["trial_id"]))]
    assert judged and f"early stopping: {len(judged)} earlier trials judged at epoch {rung}" in resumed.stderr
    after = autotune.read_leaderboard(run)
    assert [(r["trial_id"], r["status"], r["latency_ms"]) for r in after] == [
        (r["trial_id"], r["status"], r["latency_ms"]) for r in rows
    ]


def test_time_budget_stops_the_search_and_records_every_started_trial(tmp_path, repo):
    res = tmp_path / "results"
    r = _cli(*search_args(res, "budget", "--time-budget", "15s", "--concurrency", "2", trials=100), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = autotune.read_leaderboard(res / "budget")
    assert 0 < len(rows) < 100
    study = optuna.load_study(study_name="autotune", storage=f"sqlite:///{res / 'budget' / 'study.db'}")
    assert "RUNNING" not in {t.state.name for t in study.trials}
    numbers = {row["study_trial"] for row in rows}
    assert numbers <= {t.number for t in study.trials}
    assert {t.number for t in study.trials if t.state.name == "COMPLETE"} <= numbers
    stopped = [row for row in rows if row["error"] == "stopped: the time budget ran out"]
    assert all(row["status"] == "pruned" for row in stopped)


def test_report_merge_and_export(tmp_path, three):
    import numpy as np
    import onnxruntime as ort
    import tvm
    from tvm import relax

    assert three[2].returncode == 0, three[2].stderr[-3000:]
    run = three[0] / "results" / "it"
    html = (run / "report.html").read_text()
    assert (run / "pareto.png").stat().st_size > 1000
    assert 'id="pareto"' in html and "data:image/png;base64," in html and "3 trials" in html

    merged = tmp_path / "merged.csv"
    r = _cli("leaderboard", str(run), str(run), "--merge", str(merged), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert len(autotune.read_leaderboard(merged)) == 6

    rows = [row for row in autotune.read_leaderboard(run) if row["status"] == "ok"]
    best = rows[0]
    out = tmp_path / "bundle"
    r = _cli("export", str(run), best["trial_id"], "--out", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert {p.name for p in out.iterdir()} >= {"model.onnx", "model.so", "params.json", "README.md", "profile.yaml"}
    x = np.random.default_rng(0).random((1, 1, 8, 8), dtype=np.float32)
    onnx_out = ort.InferenceSession(str(out / "model.onnx")).run(None, {"input": x})[0]
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(out / "model.so")), tvm.cpu())
    tvm_out = vm["main"](tvm.runtime.tensor(x))[0].numpy()
    np.testing.assert_allclose(tvm_out, onnx_out, atol=1e-4)
    assert str(best["latency_ms"])[:6] in (out / "README.md").read_text()
    r = _cli("export", str(run), "no-such-trial", cwd=tmp_path)
    assert r.returncode == 1 and "no trial 'no-such-trial'" in r.stderr


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium")
def test_the_report_is_live_during_the_run_and_renders_in_headless_chromium(tmp_path, repo):
    import threading
    import time

    from matplotlib.image import imread

    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'chrome'}",
    ]

    def dom(url: str) -> str:
        r = subprocess.run(["chromium", *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
        return r.stdout

    res, name = tmp_path / "results", "rendered"
    args = search_args(res, name, "--no-early-stopping", "--concurrency", "1", trials=4)
    search = threading.Thread(target=lambda: _cli(*args, cwd=tmp_path))
    search.start()
    report, live_dom = res / name / "report.html", None
    while search.is_alive() and live_dom is None:  # the report appears and is redrawn as trials end
        if report.exists() and 'id="live"' in report.read_text():
            snapshot = tmp_path / "live.html"
            snapshot.write_bytes(report.read_bytes())
            live_dom = dom(snapshot.as_uri())
        time.sleep(0.5)
    search.join()
    assert live_dom is not None, "no live report while the search ran"
    assert 'id="live"' in live_dom and 'class="trial" id="trial-' in live_dom and 'http-equiv="refresh"' in live_dom
    final = report.read_text()
    assert 'id="live"' not in final and "4 trials" in final
    rows = autotune.read_leaderboard(res / name)
    sorted_dom = dom(report.as_uri() + "#sort=-latency_ms")  # the page's script sorts the table
    table = sorted_dom[sorted_dom.index('<table id="all"') :]
    table = table[: table.index("</table>")]
    shown = [r["trial_id"] for r in rows if str(r["trial_id"]) in table]
    order = sorted(shown, key=lambda t: table.index(f"#trial-{t}"))  # the rows as the page shows them
    latency = {r["trial_id"]: r["latency_ms"] for r in rows}
    measured = [t for t in order if latency[t] is not None]
    assert len(shown) == 4 and measured == sorted(measured, key=lambda t: -latency[t])
    best = min((r for r in rows if r["latency_ms"] is not None), key=lambda r: r["latency_ms"])["trial_id"]
    shot = tmp_path / "shot.png"
    subprocess.run(
        ["chromium", *flags, f"--screenshot={shot}", "--window-size=1200,1600", report.as_uri() + f"#trial-{best}"],
        capture_output=True,
        timeout=120,
        check=True,
    )
    img = imread(str(shot))
    assert img.shape[0] >= 1000 and img.std() > 0.05  # a page with content, not a blank one


def test_search_with_tuning_fills_tuning_columns(tmp_path, repo):
    res = tmp_path / "results"
    r = _cli(
        *search_args(res, "tuned", "--no-early-stopping", "--concurrency", "2", trials=2, device="host_tuned"),
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    rows = autotune.read_leaderboard(res / "tuned")
    ok = [row for row in rows if row["status"] == "ok"]
    assert ok, [row.get("error") for row in rows]
    for row in ok:
        assert row["tuned_trials"] > 0 or row["tune_db_hits"] > 0  # tuned now, or reused the other trial's work
        assert row["tune_db_hits"] + row["tune_db_misses"] > 0 and row["max_abs_diff"] < 1e-4
    finalists = [row for row in ok if row.get("latency_tuned_ms")]
    assert len(finalists) == 1 and finalists[0]["pareto_rank"] == 1
    assert finalists[0]["tuned_max_abs_diff"] < 1e-4
    assert (res / "tuning_db" / "host_tuned" / "ledger.json").exists()


def test_warm_start_enqueues_the_earlier_front_and_adds_priors(tmp_path, three):
    res, first = tmp_path / "results", three[0] / "results" / "it"
    assert three[2].returncode == 0, three[2].stderr[-3000:]
    earlier = [r for r in autotune.read_leaderboard(first) if r["status"] in ("ok", "infeasible")]
    front = [r for r in earlier if r["pareto_rank"] == 1]
    args = search_args(res, "second", "--no-early-stopping", "--warm-start", str(first), trials=1)
    second = _cli(*args, cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    study = optuna.load_study(study_name="autotune", storage=f"sqlite:///{res / 'second' / 'study.db'}")
    priors = [t for t in study.trials if t.user_attrs.get("warm_start")]
    assert len(priors) == len(earlier)
    new = [t for t in study.trials if not t.user_attrs.get("warm_start") and t.state.is_finished()]
    assert len(new) == 1

    def carried(row):
        return {
            k: v for k, v in row.items() if k.startswith(("arch.", "train.")) and v is not None and k in new[0].params
        }

    assert any(carried(r) and all(new[0].params[k] == v for k, v in carried(r).items()) for r in front)
    assert len(autotune.read_leaderboard(res / "second")) == 1  # priors are not re-run or re-listed
