"""Kernel profiles are timed on this machine: a profile that measures elsewhere is refused first."""

from __future__ import annotations

import pytest

import autotune
from autotune.errors import UserError
from autotune.measure.kernels import check_measures_here


def test_a_profile_that_measures_elsewhere_is_refused():
    check_measures_here(autotune.load_profile("host"))
    with pytest.raises(UserError, match="measures with the 'rpc' runner") as err:
        check_measures_here(autotune.load_profile("rpi4_emulated"), key="--device")
    assert err.value.key == "--device" and "--device host" in err.value.hint
