"""The driver's side of every trial: write its row to the leaderboard as it ends, feed the progress.

``RunRecorder`` holds the logic and runs without Ray (the unit tests drive it with stand-in
trials); ``make_callback`` wraps it in a Ray Tune ``Callback``.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from autotune.config.device_profile import DeviceProfile
from autotune.errors import disk_full
from autotune.leaderboard import Leaderboard
from autotune.leaderboard.row import LeaderboardRow, now
from autotune.search.progress import Progress, ProgressHook
from autotune.space import PARAM_PREFIXES

__all__ = ["RunRecorder", "lost_node", "make_callback", "make_stopper"]

log = logging.getLogger(__name__)


#: How Ray says that a trial's process died with its node (a worker node lost, preempted, rebooted).
_NODE_DIED = re.compile(r"node (?:has )?died|NodeDiedError|node \S+ is dead", re.I)


def lost_node(error: str, trial: Any = None) -> str | None:
    """The node a trial was lost with, when Ray's error says its node died (IP, node id or host);
    else None."""
    if not _NODE_DIED.search(error):
        return None
    ip = re.search(r"\bip:\s*([0-9a-fA-F.:]+[0-9a-fA-F])", error, re.I)
    node_id = re.search(r"[Nn]ode (?:ID|Id|id):?\s*([0-9a-f]{8,})", error)
    parts = [ip.group(1) if ip else None, node_id.group(1)[:12] if node_id else None]
    location = getattr(getattr(trial, "temporary_state", None), "location", None) or getattr(trial, "location", None)
    host = getattr(location, "hostname", None)
    return " ".join(p for p in parts if p) or host or "unknown node"


def _tail(path: str | None, *, full: bool = False) -> str:
    """The last line of Tune's ``error.txt`` for a trial whose worker raised or died (``full``: all of it)."""
    if not path or not Path(path).exists():
        return "the trial's process died (killed, or out of memory)"
    lines = [ln for ln in Path(path).read_text().splitlines() if ln.strip()]
    if full:
        return "\n".join(lines)
    return lines[-1][:500] if lines else "unknown error"


class RunRecorder:
    """Writes rows to the leaderboard as trials end and updates the progress.

    Tune calls the ``trial_*`` hooks (through ``make_callback``) in the driver: ``trial_start`` when
    a trial's worker starts it, ``trial_result`` for every report (stage names, epochs, the final
    row), ``trial_complete`` when it returned (its final row, or a ``pruned`` row when ASHA stopped
    it) and ``trial_error`` when its worker raised or died (a ``failed`` row). A trial lost with its
    node (Ray says the node died) is a ``failed`` row ``node lost: <node>``, and its parameters are
    enqueued in the study to run again, once: the search goes on with the nodes left.
    """

    def __init__(self, *, board: Leaderboard, run: str, profile: DeviceProfile, progress: Progress) -> None:
        self.board, self.run, self.profile = board, run, profile
        self.progress = progress
        self.drift_threshold = board.drift_threshold
        self.started: dict[str, str] = {}
        self.live: dict[str, Any] = {}  # trial id -> Tune trial, while it runs
        self.requeued: set[str] = set()  # parameter sets lost with a node and run again (once each)
        self.fatal: BaseException | None = None  # an error that stops the run (a full disk)
        self.on_progress: ProgressHook | None = None
        self.on_row: Callable[[], None] | None = None  # a row was stored (the live report)

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles callbacks with the run config
        state = self.__dict__.copy()
        state["on_progress"] = None
        state["on_row"] = None
        state["live"] = {}
        return state

    def emit(self) -> None:
        """Pass the progress to ``on_progress`` (the display)."""
        if self.on_progress:
            self.on_progress(self.progress)

    def record(self, row: dict[str, Any]) -> None:
        """Add a finished trial's row to the leaderboard and count it. A full disk is kept in
        ``fatal`` (the run then stops: ``FatalStopper``) rather than raised into Tune, which would
        log it and go on."""
        try:
            rows = self.board.add(row)  # the board's rewrite derives pareto_rank, drift and drift_flag
        except OSError as err:
            if disk_full(err) is None:
                raise
            log.error("the disk is full: trial %s's row could not be stored; the run stops", row.get("trial_id"))
            self.fatal = self.fatal or err
            return
        self.progress.record(row, rows, drift_threshold=self.drift_threshold)
        self.live.pop(str(row["trial_id"]), None)
        self.emit()
        if self.on_row:
            self.on_row()

    def record_unfinished(self, reason: str) -> int:
        """Write a ``pruned`` row for every trial still running when the search stopped; return how many."""
        left = list(self.live.values())
        for trial in left:
            row = self._base_row(trial, "pruned", reason)
            last = trial.last_result or {}
            row.update(val_accuracy=last.get("val_accuracy"), epochs=last.get("epoch"))
            self.record(row)
        return len(left)

    def trial_start(self, trial: Any) -> None:
        self.started.setdefault(trial.trial_id, now())
        self.live[trial.trial_id] = trial
        self.progress.running[trial.trial_id] = "starting"
        self.emit()

    def trial_result(self, trial: Any, result: dict[str, Any]) -> None:
        if result.get("stage"):
            self.progress.running[trial.trial_id] = str(result["stage"])
            self.emit()
        elif "epoch" in result and not result.get("final"):
            self.progress.running[trial.trial_id] = f"train: epoch {result['epoch']}"
            self.emit()
        elif result.get("final"):
            self.progress.running[trial.trial_id] = "finishing"

    def trial_complete(self, trial: Any) -> None:
        last = trial.last_result or {}
        if last.get("final") and last.get("row_json"):
            row = json.loads(last["row_json"])
            self._warn(row, last.get("traceback_file"))
        else:
            row = self._base_row(trial, "pruned", _stop_reason(last))
            row.update(val_accuracy=last.get("val_accuracy"), epochs=last.get("epoch"))
        self.record(row)

    def trial_error(self, trial: Any) -> None:
        error = _tail(trial.error_file, full=True)
        node = lost_node(error, trial)
        if node is None:
            self.record(self._base_row(trial, "failed", _tail(trial.error_file)))
            return
        row = self._base_row(trial, "failed", f"node lost: {node}")
        self.record(row)
        params = {k: v for k, v in row.items() if k.startswith(PARAM_PREFIXES) and v is not None}
        key = json.dumps(params, sort_keys=True, default=str)
        if key in self.requeued:
            log.warning("trial %s was lost with node %s again; it is not run a third time", trial.trial_id, node)
            return
        self.requeued.add(key)
        self.requeue(params, trial.trial_id)
        log.warning("trial %s was lost with node %s; its parameters run again", trial.trial_id, node)

    def requeue(self, params: dict[str, Any], trial_id: str) -> None:
        """Enqueue ``params`` in the run's study: the sampler's next trial runs them again."""
        import optuna

        from autotune.search.study import STUDY_NAME, storage

        study = optuna.load_study(study_name=STUDY_NAME, storage=storage(self.board.run_dir))
        study.enqueue_trial(params, user_attrs={"retry_of": trial_id})

    def _warn(self, row: dict[str, Any], traceback_file: str | None) -> None:
        """Name a trial that ended in an error of the user's or of ours on the console."""
        error = str(row.get("error") or "")
        if error.startswith("internal error"):
            log.warning(
                "trial %s hit a bug in autotune (%s); the traceback is in %s (please report it)",
                row["trial_id"],
                error,
                traceback_file or "the trial's directory",
            )
        elif error.startswith("user error"):
            log.warning("trial %s failed on an input to fix: %s", row["trial_id"], error.removeprefix("user error: "))

    def _base_row(self, trial: Any, status: str, error: str) -> dict[str, Any]:
        """The row of a trial that ended without one of its own (pruned, stopped, its worker lost)."""
        config = trial.config
        row = LeaderboardRow.unfinished(
            run=self.run,
            trial_id=trial.trial_id,
            device=self.profile.name,
            seed=int(config.get("seed") or 0) + int(config.get("study_trial") or 0),
            params={k: v for k, v in config.items() if k.startswith(PARAM_PREFIXES)},
            status=status,
            error=error,
            started_at=self.started.get(trial.trial_id),
            study_trial=config.get("study_trial"),
        )
        return dict(row)


def make_stopper(recorder: RunRecorder) -> Any:
    """A Ray Tune ``Stopper`` that stops the whole run once ``recorder.fatal`` is set."""
    from ray.tune import Stopper

    class FatalStopper(Stopper):
        def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
            return False

        def stop_all(self) -> bool:
            return recorder.fatal is not None

    return FatalStopper()


def make_callback(**kwargs: Any) -> Any:
    """A Ray Tune ``Callback`` that is a ``RunRecorder`` (``kwargs`` are its constructor's)."""
    from ray.tune import Callback

    class _RunCallback(RunRecorder, Callback):
        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.trial_start(trial)

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            self.trial_result(trial, result)

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.trial_complete(trial)

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.trial_error(trial)

    return _RunCallback(**kwargs)


def _stop_reason(last: dict[str, Any]) -> str:
    """Why the pruner (``autotune.search.pruning``) stopped a trial, from its last epoch's report."""
    from autotune.search.pruning import learned_nothing  # (imports Ray: the driver has it already)

    epoch = last.get("epoch")
    if learned_nothing(last):
        floor = last["accuracy_floor"]
        return f"stopped early by ASHA at epoch {epoch}: validation accuracy at or under the learned floor {floor:.3f}"
    return f"stopped early by ASHA at epoch {epoch}: validation loss above the median of no-slower trials"
