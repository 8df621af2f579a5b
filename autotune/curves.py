"""Training curves of a trial: per epoch, the training loss, the validation loss and accuracy and the
learning rate, written as TensorBoard event files (``results/<run>/tensorboard/<trial_id>``, one run
per trial: ``tensorboard --logdir results/<run>/tensorboard``) and as ``curves.json`` beside them,
which the report draws.

Event files are written with tensorboardX (a dependency of Ray Tune already, small, no TensorFlow);
viewing them needs TensorBoard itself (``pip install 'autotune[tensorboard]'``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["CURVES_FILE", "Curves", "read_curves"]

CURVES_FILE = "curves.json"
#: Scalar tags, as TensorBoard shows them.
TAGS = {"train_loss": "loss/train", "val_loss": "loss/val", "val_accuracy": "accuracy/val", "lr": "lr"}


class Curves:
    """Writes one trial's curves under ``directory`` as the epochs end (a no-op for None)."""

    def __init__(self, directory: str | os.PathLike[str] | None) -> None:
        self.directory = Path(directory) if directory else None
        self.points: list[dict[str, float]] = []
        self._writer: Any = None

    def add(self, point: dict[str, float]) -> None:
        """Record one epoch: ``{"epoch", "train_loss", "val_loss", "val_accuracy", "lr"}``."""
        if self.directory is None:
            return
        if self._writer is None:
            from tensorboardX import SummaryWriter

            self.directory.mkdir(parents=True, exist_ok=True)
            self._writer = SummaryWriter(logdir=str(self.directory), flush_secs=5)
        step = int(point["epoch"])
        for key, tag in TAGS.items():
            if point.get(key) is not None:
                self._writer.add_scalar(tag, float(point[key]), step)
        self._writer.flush()
        self.points.append(dict(point))
        tmp = self.directory / f".{CURVES_FILE}.tmp"
        tmp.write_text(json.dumps(self.points))
        os.replace(tmp, self.directory / CURVES_FILE)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def read_curves(directory: str | os.PathLike[str]) -> list[dict[str, float]]:
    """A trial's recorded epochs (``[]`` when it has none)."""
    path = Path(directory) / CURVES_FILE
    try:
        return list(json.loads(path.read_text()))
    except (OSError, ValueError):
        return []
