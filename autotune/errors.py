"""The two error types autotune raises on purpose.

``UserError`` is a mistake the user can fix (bad YAML, unknown name, unreachable device); the CLI
prints it as one line without a traceback. ``CandidateFailed`` is a candidate that could not be
built, trained, compiled, verified or measured; ``evaluate`` turns it into a ``failed`` row and the
search goes on. Anything else is a bug and propagates.
"""

from __future__ import annotations

import errno

__all__ = ["AutotuneError", "CandidateFailed", "UserError", "describe", "disk_full"]


class AutotuneError(Exception):
    """Root of autotune's own errors."""


class UserError(AutotuneError):
    """Raised when an input the user wrote or chose is wrong.

    Rendered as ``<file>: <key>: <problem>`` plus an optional ``hint:`` line.
    """

    def __init__(
        self,
        problem: str,
        *,
        file: str | None = None,
        key: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.problem = problem
        self.file = file
        self.key = key
        self.hint = hint
        super().__init__(self.render())

    def render(self) -> str:
        parts = [p for p in (self.file, self.key) if p]
        head = ": ".join([*parts, self.problem])
        return f"{head}\n  hint: {self.hint}" if self.hint else head


class CandidateFailed(AutotuneError):
    """Raised inside a stage when one candidate cannot go on; the search continues."""

    def __init__(self, stage: str, reason: str) -> None:
        self.stage = stage
        self.reason = reason
        super().__init__(f"{stage}: {reason}")


def describe(err: BaseException) -> str:
    """``<ExceptionType>: <first line of its message>``: how a third-party error (TVM's, torch's)
    becomes a ``CandidateFailed`` reason on one row line."""
    return f"{type(err).__name__}: {err}".splitlines()[0]


def disk_full(err: BaseException) -> str | None:
    """What filled up, when ``err`` (or an exception it was raised from) says the disk is full (ENOSPC,
    EDQUOT, SQLite's "database or disk is full"); else None."""
    seen: set[int] = set()
    e: BaseException | None = err
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return f"{e.filename}: {e.strerror}" if e.filename else e.strerror or "no space left"
        if "database or disk is full" in str(e) or "No space left on device" in str(e):
            return str(e).splitlines()[0]
        e = e.__cause__ or e.__context__
    return None
