"""Stride-2 depthwise convolutions split into column phases (``autotune.compiler.strided``): the
rewritten layer computes what PyTorch computes, and only the layers it pays for are rewritten."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from autotune.compiler.build import FINALIZE, FUSE, SCHEDULE, BuildOptions, run_steps
from autotune.compiler.strided import MIN_WIDTH, split_strided_depthwise

pytestmark = [pytest.mark.tvm]


def _depthwise(channels, size, kernel, stride, padding):
    from tvm.relax.frontend.torch import from_exported_program

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(channels, channels, kernel, stride, padding, groups=channels).eval()
    x = torch.randn(1, channels, size, size)
    program = torch.export.export(conv, (x,))
    return from_exported_program(program, keep_params_as_input=False), conv, x


def _phases(mod):
    return [gv.name_hint for gv, _ in mod.functions_items() if gv.name_hint.startswith("column_phases")]


@pytest.mark.parametrize(("size", "kernel", "padding"), [(14, 5, 2), (13, 5, 2), (12, 7, 3), (10, 5, 0)])
def test_split_layer_matches_pytorch(size, kernel, padding):
    import tvm
    from tvm import relax

    mod, conv, x = _depthwise(6, size, kernel, 2, padding)
    split = split_strided_depthwise(mod)
    assert _phases(split), "the stride-2 depthwise layer was not rewritten"
    target = tvm.target.Target({"kind": "llvm", "num-cores": 1})
    options = BuildOptions(target)
    lowered = run_steps(FUSE + SCHEDULE + FINALIZE, split, options)
    ex = tvm.compile(lowered, target=target, relax_pipeline=None)
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x.numpy()))
    got = (got[0] if not hasattr(got, "numpy") else got).numpy()
    with torch.inference_mode():
        ref = conv(x).numpy()
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("kernel", "stride"), [(3, 2), (MIN_WIDTH, 1)])
def test_layers_it_does_not_pay_for_are_left_alone(kernel, stride):
    mod, _, _ = _depthwise(6, 14, kernel, stride, kernel // 2)
    assert not _phases(split_strided_depthwise(mod))
