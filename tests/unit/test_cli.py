"""The CLI: exit codes, one-line errors without tracebacks, listings, schema, leaderboard."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from autotune.cli import main, parse_duration
from autotune.config.search_space import METRICS
from autotune.leaderboard import Leaderboard


def _run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "autotune.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_check_ok(repo):
    r = _run("check", "search_spaces/digits_cnn.yaml", "device_profiles/host.yaml", cwd=repo)
    assert r.returncode == 0, r.stderr
    assert "ok: space digits_cnn" in r.stdout


def test_check_bad_file_is_one_line_exit_1(write_yaml):
    bad = write_yaml("task: {data: digits, model: mobilenet}\nobjectives: {acuracy: max}\n", "typo.yaml")
    r = _run("check", str(bad), "host")
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert f"{bad}: objectives.acuracy" in r.stderr and "did you mean 'accuracy'" in r.stderr


def test_search_validates_before_work(write_yaml, tmp_path):
    bad = write_yaml(
        "task: {data: digits, model: mobilenet}\narch: {depth: {type: int, low: 3, high: 1}}\n"
        "objectives: {latency_ms: min}\n",
        "empty.yaml",
    )
    r = _run("search", "--space", str(bad), "--results-dir", str(tmp_path / "res"))
    assert r.returncode == 1 and "empty range" in r.stderr and "arch.depth" in r.stderr
    assert not (tmp_path / "res").exists()


def test_search_refuses_cross_target_on_local_runner(tmp_path):
    r = _run("search", "--device", "rpi4", "--results-dir", str(tmp_path), "--trials", "1")
    assert r.returncode == 1
    assert "aarch64" in r.stderr and "runner.kind" in r.stderr


def test_listings_and_schema(capsys):
    assert main(["spaces"]) == 0
    assert "digits_cnn" in capsys.readouterr().out
    assert main(["profiles"]) == 0
    assert "rpi4" in capsys.readouterr().out
    assert main(["schema", "space"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert {"task", "arch", "train", "objectives", "constraints"} <= set(schema["properties"])
    assert main(["schema", "profile"]) == 0
    assert "target" in json.loads(capsys.readouterr().out)["properties"]


def test_no_command_is_usage():
    assert main([]) == 2


@pytest.mark.parametrize("text,seconds", [("90", 90), ("90s", 90), ("30m", 1800), ("8h", 28800), ("1.5h", 5400)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


def test_device_commands_go_through_the_error_boundary(tmp_path, capsys):
    cache = str(tmp_path / "emu")
    assert main(["device", "emulate", "status", "--cache-dir", cache]) == 0
    assert capsys.readouterr().out.strip() == "not running (no pid file)"
    assert main(["device", "emulate", "stop", "--cache-dir", cache, "--key", "k"]) == 0
    assert capsys.readouterr().out.strip() == "not running (no pid file)"
    assert main(["device", "calibrate", "bad/name"]) == 1
    assert "error: NAME: profile name 'bad/name'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["device", "emulate", "reboot"])


def test_leaderboard_command(tmp_path, capsys):
    board = Leaderboard(tmp_path, objectives={"accuracy": "max", "latency_ms": "min"}, metric_columns=METRICS)
    board.add({"trial_id": "a", "status": "ok", "val_accuracy": 0.9, "latency_ms": 2.0, "started_at": "1"})
    board.add({"trial_id": "b", "status": "ok", "val_accuracy": 0.8, "latency_ms": 3.0, "started_at": "2"})
    board.add({"trial_id": "c", "status": "failed", "error": "compile: boom", "started_at": "3"})
    assert main(["leaderboard", str(tmp_path), "--pareto", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["trial_id"] for r in rows] == ["a"]
    assert main(["leaderboard", str(tmp_path), "--sort", "latency_ms", "--json"]) == 0
    assert [r["trial_id"] for r in json.loads(capsys.readouterr().out)] == ["a", "b", "c"]
    assert main(["leaderboard", str(tmp_path), "--sort", "nope"]) == 1


def test_the_terminal_leaderboard_fits_80_columns(tmp_path):
    board = Leaderboard(tmp_path, objectives={"accuracy": "max", "latency_ms": "min"}, metric_columns=METRICS)
    for i in range(5):
        board.add({"trial_id": f"6191e15{i}", "status": "ok", "accuracy": 0.91234 + i / 100, "val_accuracy": 0.9,
                   "latency_ms": 0.0123 * (i + 1), "latency_tuned_ms": 0.01, "latency_cov": 0.013, "energy_mj": 0.2,
                   "size_bytes": 123456, "macs": 2071040, "deploy_precision": "int8",
                   "speedup_vs_uncompressed": 1.8, "arch.width_mult": 0.75, "arch.kernel_0": 5,
                   "started_at": str(i)})  # fmt: skip
    env = {**__import__("os").environ, "COLUMNS": "80"}
    r = subprocess.run([sys.executable, "-m", "autotune.cli", "leaderboard", str(tmp_path)], capture_output=True,
                       text=True, env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "6191e150" in r.stdout and "0.9223" in r.stdout  # whole cells, not wrapped into slivers
    assert "more columns" in r.stdout and "--columns" in r.stdout
    chosen = subprocess.run([sys.executable, "-m", "autotune.cli", "leaderboard", str(tmp_path), "--columns",
                             "trial_id,arch.kernel_0,macs"], capture_output=True, text=True, env=env)  # fmt: skip
    header = next(line for line in chosen.stdout.splitlines() if "trial_id" in line)
    assert "arch.kernel_0" in header and "macs" in header and "latency_ms" not in header
    bad = subprocess.run([sys.executable, "-m", "autotune.cli", "leaderboard", str(tmp_path), "--columns", "latncy_ms"],
                         capture_output=True, text=True, env=env)  # fmt: skip
    assert bad.returncode == 1 and "--columns" in bad.stderr and "did you mean 'latency_ms'" in bad.stderr
