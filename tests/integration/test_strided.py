"""Stride-2 convolutions split into column phases (``autotune.compiler.strided``): the rewritten
layer computes what PyTorch computes (depthwise and regular, even widths copied as float pairs, odd
ones gathered), and only the layers it pays for are rewritten."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from autotune.compiler.build import FINALIZE, FUSE, SCHEDULE, BuildOptions, run_steps
from autotune.compiler.strided import MIN_COLUMNS_NARROW, MIN_WIDTH, MIN_WIDTH_DENSE, split_strided_convs

pytestmark = [pytest.mark.tvm]


def _depthwise(channels, size, kernel, stride, padding, out_channels=None, groups=None):
    from tvm.relax.frontend.torch import from_exported_program

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(channels, out_channels or channels, kernel, stride, padding,
                           groups=groups or channels).eval()  # fmt: skip
    x = torch.randn(1, channels, size, size)
    program = torch.export.export(conv, (x,))
    return from_exported_program(program, keep_params_as_input=False), conv, x


def _phases(mod):
    return [gv.name_hint for gv, _ in mod.functions_items() if gv.name_hint.startswith("column_phases")]


@pytest.mark.parametrize(
    ("size", "kernel", "padding", "out_channels", "groups"),
    [(14, 5, 2, None, None), (13, 5, 2, None, None), (12, 7, 3, None, None), (10, 5, 0, None, None),
     (14, 3, 1, 8, 1), (13, 3, 1, 8, 1), (12, 3, 1, 4, 2)],
    ids=["dw-even", "dw-odd", "dw-7x7", "dw-unpadded", "stem-even", "stem-odd", "grouped"],
)  # fmt: skip
def test_split_layer_matches_pytorch(size, kernel, padding, out_channels, groups):
    import tvm
    from tvm import relax

    mod, conv, x = _depthwise(6, size, kernel, 2, padding, out_channels, groups)
    split = split_strided_convs(mod)
    assert _phases(split), "the stride-2 layer was not rewritten"
    (kernel,) = [f for gv, f in split.functions_items() if gv.name_hint.startswith("column_phases")]
    assert ('"int64"' in kernel.script()) == (size % 2 == 0)  # read as float pairs; odd widths: gathers
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


@pytest.mark.parametrize(("kernel", "stride", "groups"), [(3, 2, None), (MIN_WIDTH, 1, None), (1, 2, 1),
                                                          (MIN_WIDTH_DENSE, 1, 1)])  # fmt: skip
def test_layers_it_does_not_pay_for_are_left_alone(kernel, stride, groups):
    mod, _, _ = _depthwise(6, 14, kernel, stride, kernel // 2, 8 if groups else None, groups)
    assert not _phases(split_strided_convs(mod))


def test_a_3x3_depthwise_layer_is_split_from_its_minimum_width():
    wide, _, _ = _depthwise(2, MIN_COLUMNS_NARROW, 3, 2, 1)
    narrow, _, _ = _depthwise(2, MIN_COLUMNS_NARROW - 2, 3, 2, 1)
    assert _phases(split_strided_convs(wide)) and not _phases(split_strided_convs(narrow))
