"""``export_program``: a trained model → a ``torch.export`` program ready for TVM.

(Not ``export.py``: that name would shadow the ``autotune.export`` API function once imported.)
"""

from __future__ import annotations

import copy
import time
import warnings
from typing import TYPE_CHECKING

import torch
from torch import nn

from autotune.errors import CandidateFailed
from autotune.models.layers import fold_batchnorm

if TYPE_CHECKING:
    from torch.export import ExportedProgram

__all__ = ["export_program"]


def export_program(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[ExportedProgram, nn.Module, float]:
    """Export a copy of ``model`` for batch 1, with BatchNorm folded into convolutions.

    Folding in torch (exact in eval mode) spares TVM's slow constant folding of BatchNorm.
    Returns the program, the exported (folded) eval-mode copy and the seconds spent.

    Raises:
        CandidateFailed: torch.export cannot trace the model.
    """
    t0 = time.perf_counter()
    m = copy.deepcopy(model).eval()
    fold_batchnorm(m)
    x = torch.zeros((1, *input_shape), dtype=torch.float32)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            ep = torch.export.export(m, (x,))
    except Exception as err:  # torch raises many types here; any of them fails this candidate
        raise CandidateFailed("export", f"{type(err).__name__}: {err}") from err
    return ep, m, time.perf_counter() - t0
