"""The vector lanes the default schedule gives a depthwise layer's width."""

from __future__ import annotations

import pytest

from autotune.tuning.default import _depthwise_lanes


@pytest.mark.parametrize(
    ("width", "divisor", "lanes", "want"),
    [
        (28, 7, 8, 4),  # AVX2: 4 lanes, not 7
        (14, 7, 8, 7),  # no power of two of at least 4 divides 14
        (7, 7, 8, 7),
        (56, 8, 8, 8),
        (56, 14, 16, 8),  # AVX-512
        (28, 14, 16, 14),
        (12, 6, 8, 4),
        (3, 3, 4, 3),
    ],
)
def test_a_depthwise_width_takes_a_power_of_two_of_lanes_where_one_is_near(width, divisor, lanes, want):
    assert _depthwise_lanes(width, divisor, lanes) == want
