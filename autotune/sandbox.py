"""Run one trial's work in a forked child process, under a time limit and a memory cap.

The parent (a Ray Tune worker) stays alive whatever the child does: a candidate that segfaults
inside TVM, exhausts memory or hangs in a compile is killed and reported with its reason, and the
worker goes on to the next trial. ``fork`` keeps the imports the parent already paid for (torch,
TVM), so isolation costs milliseconds, not the seconds of a fresh interpreter.

What ``fn`` raises keeps its kind: a ``CandidateFailed`` comes back as itself (stage and reason), a
``UserError`` and any other exception as a ``TrialError`` (``user`` or ``internal``) that carries
the child's full traceback, so a bug inside a trial can be debugged after the run.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, Literal

import psutil

from autotune.errors import CandidateFailed, UserError

__all__ = ["TrialError", "run_isolated"]

#: ``fn(send)`` runs in the child; ``send(message)`` passes a message to the parent's ``on_message``.
Work = Callable[[Callable[[Any], None]], Any]


class TrialError(Exception):
    """Raised in the parent when the trial's work raised something other than ``CandidateFailed``.

    ``kind`` is ``user`` for a ``UserError`` (the user's input is wrong; ``message`` is its text)
    and ``internal`` for any other exception, a bug of ours (``message`` is ``<ExcType>: <text>``).
    ``traceback`` is the child's full formatted traceback. ``str()`` is the row's ``error``:
    ``user error: <message>`` or ``internal error: <ExcType>: <text>``.
    """

    def __init__(self, kind: Literal["user", "internal"], message: str, traceback: str) -> None:
        self.kind = kind
        self.message = message
        self.traceback = traceback
        super().__init__(f"{kind} error: {message}")


def _child(fn: Work, conn: Connection) -> None:
    try:
        result = fn(lambda message: conn.send(("message", message)))
        conn.send(("result", result))
    except CandidateFailed as err:
        conn.send(("failed", err.stage, err.reason))
    except UserError as err:
        message = err.render().replace("\n  hint: ", "; hint: ")  # one line, as rows hold it
        conn.send(("error", "user", message, traceback.format_exc()))
    except Exception as err:
        text = f"{type(err).__name__}: {err}".splitlines()[0][:500]
        conn.send(("error", "internal", text, traceback.format_exc()))
    except BaseException as err:  # KeyboardInterrupt, SystemExit: the trial stopped, no bug
        conn.send(("failed", "crash", f"the trial's process stopped: {type(err).__name__}"))
    finally:
        conn.close()
        os._exit(0)  # skip atexit handlers inherited from the parent (Ray's among them)


def _unique_bytes(proc: psutil.Process, below: int | None = None) -> int:
    """Memory the child and its children hold of their own (USS): pages shared with the parent
    after ``fork`` (torch, TVM, the data) are not counted against the trial.

    With ``below``, their resident size (which includes the USS, and costs a fifth as much to read
    as the USS's page walk) is returned instead when it is under ``below``: the cap cannot be
    passed then."""
    procs = [proc, *proc.children(recursive=True)]
    if below is not None and (rss := _sum(procs, lambda p: p.memory_info().rss)) < below:
        return rss
    return _sum(procs, lambda p: p.memory_full_info().uss)


def _sum(procs: list[psutil.Process], read: Callable[[psutil.Process], int]) -> int:
    """``read`` summed over ``procs``, skipping those that have exited."""
    total = 0
    for p in procs:
        try:
            total += read(p)
        except psutil.Error:
            pass
    return total


def _kill(proc: mp.process.BaseProcess) -> None:
    if proc.is_alive() and proc.pid:
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.join(5)


def run_isolated(
    fn: Work,
    *,
    timeout_s: float | None = None,
    memory_bytes: int | None = None,
    on_message: Callable[[Any], None] | None = None,
    poll_s: float = 0.2,
) -> Any:
    """Run ``fn`` in a forked child and return its result.

    Raises:
        CandidateFailed: what ``fn`` raised (its stage and reason); ``limit`` when the child ran past
            ``timeout_s`` or the memory it holds of its own (USS, children included) passed
            ``memory_bytes``; ``crash`` when it died without a result.
        TrialError: ``fn`` raised a ``UserError`` (kind ``user``) or any other exception (kind
            ``internal``), with the child's traceback.
    """
    ctx = mp.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(fn, send), daemon=True)
    t0 = time.monotonic()
    proc.start()
    send.close()
    ps = psutil.Process(proc.pid)
    peak = 0
    try:
        while True:
            if recv.poll(poll_s):
                try:
                    kind, *payload = recv.recv()
                except EOFError:
                    break
                if kind == "message":
                    if on_message:
                        on_message(payload[0])
                    continue
                if kind == "result":
                    return payload[0]
                if kind == "failed":
                    raise CandidateFailed(*payload)
                raise TrialError(*payload)
            if timeout_s is not None and time.monotonic() - t0 > timeout_s:
                raise CandidateFailed("limit", f"timeout: still running after {timeout_s:.0f} s")
            if memory_bytes is not None:
                peak = max(peak, _unique_bytes(ps, below=memory_bytes))
                if peak > memory_bytes:
                    raise CandidateFailed(
                        "limit", f"out of memory: {peak / 2**20:.0f} MiB in use > cap {memory_bytes / 2**20:.0f} MiB"
                    )
            if not proc.is_alive() and not recv.poll(0):
                break
        proc.join(5)
        code = proc.exitcode
        how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        hint = " (killed: out of memory?)" if code == -signal.SIGKILL else ""
        raise CandidateFailed("crash", f"the trial's process died with {how}{hint}")
    finally:
        _kill(proc)
        recv.close()
