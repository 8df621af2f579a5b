"""Logging setup for the CLI: a rich handler on the ``autotune`` logger, on stderr."""

from __future__ import annotations

import logging

__all__ = ["setup_logging"]


def setup_logging(console: object, *, debug: bool = False) -> None:
    """Route ``autotune`` logs through rich on ``console``; quieten Ray, Optuna and TVM."""
    from rich.logging import RichHandler

    handler = RichHandler(console=console, show_path=debug, show_time=debug, markup=False)  # type: ignore[arg-type]
    root = logging.getLogger("autotune")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    root.propagate = False
    for noisy in ("ray", "optuna", "tvm", "filelock"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
