"""A full disk is recognised however it reaches the driver: an OSError, SQLite's message, or wrapped."""

from __future__ import annotations

import errno

from autotune.errors import disk_full


def test_disk_full_is_found_in_the_exception_chain():
    direct = OSError(errno.ENOSPC, "No space left on device", "/r/trials.jsonl")
    assert disk_full(direct) == "/r/trials.jsonl: No space left on device"
    assert disk_full(OSError(errno.EDQUOT, "Disk quota exceeded")) == "Disk quota exceeded"
    try:
        try:
            raise direct
        except OSError as inner:
            raise RuntimeError("Tune's step failed") from inner
    except RuntimeError as wrapped:
        assert disk_full(wrapped) == "/r/trials.jsonl: No space left on device"
    sqlite = Exception("(sqlite3.OperationalError) database or disk is full\n[SQL: INSERT ...]")
    assert disk_full(sqlite) == "(sqlite3.OperationalError) database or disk is full"
    assert disk_full(OSError(errno.EACCES, "Permission denied")) is None
    assert disk_full(ValueError("no")) is None
