"""Run directories: a run name may not leave the results directory; a finished run is read back."""

from __future__ import annotations

import pytest

from autotune.errors import UserError
from autotune.runs import leaderboard_csv, read_run, run_name_dir


@pytest.mark.parametrize("name", ["../escape", "a/b", "..", ".hidden", "", "x" * 200])
def test_run_name_cannot_escape(tmp_path, name):
    with pytest.raises(UserError, match="--name"):
        run_name_dir(tmp_path, name)


def test_a_plain_name_is_a_directory_of_the_results_dir(tmp_path):
    assert run_name_dir(tmp_path, "run-1.a_b") == (tmp_path / "run-1.a_b").resolve()


def test_not_a_run_directory(tmp_path):
    with pytest.raises(UserError, match="not a run directory"):
        read_run(tmp_path)
    with pytest.raises(UserError, match="no leaderboard.csv here"):
        leaderboard_csv(tmp_path)


HOLD = (
    "import sys, time; from autotune.runs import DriverLock; DriverLock(sys.argv[1]).acquire(); "
    "print('held', flush=True); time.sleep(120)"
)


def test_one_driver_per_run_and_a_dead_drivers_lock_is_taken_over(tmp_path, caplog):
    import signal
    import socket
    import subprocess
    import sys

    import autotune
    from autotune.runs import DriverLock

    run = tmp_path / "run"
    run.mkdir()
    (run / "space.yaml").write_text("name: x\n")
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match=f"in use by another driver: PID {holder.pid} on host") as err:
            autotune.search(name="run", results_dir=tmp_path, resume=True)
        assert socket.gethostname() in str(err.value) and err.value.key == "--resume"
        cli = subprocess.run([sys.executable, "-m", "autotune.cli", "search", "--resume", str(run)],
                             capture_output=True, text=True)  # fmt: skip
        assert cli.returncode == 1 and f"PID {holder.pid}" in cli.stderr and "Traceback" not in cli.stderr
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with caplog.at_level("INFO", logger="autotune.runs"), DriverLock(run):  # the kernel freed the dead driver's lock
        assert f"PID {holder.pid}" in caplog.text and "taking over" in caplog.text
        assert f'"pid": {__import__("os").getpid()}' in (run / DriverLock.FILE).read_text()
