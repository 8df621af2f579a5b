"""The ``mobilenet`` family (``autotune/models/families/mobilenet.py``): per-stage values, bad values."""

from __future__ import annotations

import pytest
import torch

from autotune.models import MODEL_FAMILIES, build_model


def test_mobilenet_per_stage_values_shape_the_network():
    fam = MODEL_FAMILIES.get("mobilenet")
    m = build_model(fam, {"stages": 2, "kernel_0": 3, "kernel_1": 7, "depth_1": 2}, (1, 8, 8), 10)
    ks = [mod.kernel_size[0] for mod in m.stages.modules() if isinstance(mod, torch.nn.Conv2d) and mod.groups > 1]
    assert ks == [3, 7, 7]


def test_bad_family_parameter_value_raises():
    fam = MODEL_FAMILIES.get("mobilenet")
    with pytest.raises(ValueError, match="stages"):
        build_model(fam, {"stages": 9}, (1, 8, 8), 10)
