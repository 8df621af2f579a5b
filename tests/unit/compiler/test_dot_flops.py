"""The operations of a kernel built on a dot-product kernel, read from the sizes in its name."""

from __future__ import annotations

import pytest

from autotune.compiler.dot_kernels import dot_flops


@pytest.mark.parametrize(
    ("name", "want"),
    [
        ("int8_dot_vnni_conv1x1_n48_k16_p12544", 2 * 48 * 16 * 12544),
        ("fused_int8_dot_avx2_conv1x1_u7_n16_k48_p3136_subtract_cast1_multiply1_add", 2 * 16 * 48 * 3136),
        ("fused_int8_dot_vnni_dense_p1_k160_n1008_strided_slice_subtract7_cast21", 2 * 160 * 1008),
        ("fused_conv2d1_add1_relu1", None),  # TVM counts the others
        ("int8_pack_vnni_pack_k48_p12544", None),  # a copy, not a dot-product kernel
    ],
)
def test_a_dot_kernels_operations_come_from_its_sizes(name, want):
    assert dot_flops(name) == want
