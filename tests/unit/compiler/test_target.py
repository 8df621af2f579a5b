"""The profile's TVM target and the compiler's pre-flight check (``check_profile``)."""

from __future__ import annotations

import pytest

import autotune
from autotune.compiler import check_profile, resolve_target, target_json
from autotune.errors import UserError

PROFILE = """
name: p
target: {host: true}
power: {idle_w: 1, active_w: 2, source: datasheet}
"""


def test_host_target_is_this_cpu(write_yaml):
    profile = autotune.load_profile(write_yaml(PROFILE))
    t = target_json(profile)
    assert t["kind"] == "llvm" and t["mcpu"] and t["num-cores"] >= 1
    assert str(resolve_target(profile).kind.name) == "llvm"
    check_profile(profile, file="p.yaml")


def test_check_profile_refuses_a_gpu_target(write_yaml):
    profile = autotune.load_profile(write_yaml(PROFILE.replace("{host: true}", "{kind: cuda, arch: sm_80}")))
    with pytest.raises(UserError, match="CPU \\(llvm\\) targets only") as err:
        check_profile(profile, file="p.yaml")
    assert err.value.key == "target.kind"


def test_check_profile_needs_the_cross_compiler_on_path(write_yaml):
    cross = PROFILE.replace("{host: true}", "{kind: llvm, mtriple: aarch64-linux-gnu}")
    profile = autotune.load_profile(write_yaml(cross + "compiler: no-such-cross-gcc\n"))
    with pytest.raises(UserError, match="not on PATH") as err:
        check_profile(profile, file="p.yaml")
    assert err.value.key == "compiler" and "p.yaml" in str(err.value)
