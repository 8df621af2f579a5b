"""The YAML loader and the schemas: good files load, bad ones (YAML, profiles) name file and key."""

from __future__ import annotations

import pytest
from conftest import REPO

import autotune
from autotune.config.search_space import METRICS
from autotune.errors import UserError

GOOD_PROFILE = """
name: p
target: {kind: llvm, mcpu: znver3, num-cores: 2}
power: {idle_w: 1, active_w: 2, source: datasheet}
"""


SHIPPED_PROFILES = sorted(p.stem for p in (REPO / "device_profiles").glob("*.yaml"))


def test_every_device_of_the_issue_has_a_profile():
    assert {"host", "x86_avx512_server", "rpi4", "rpi5", "jetson_orin_nano", "android_arm64"} <= set(SHIPPED_PROFILES)


@pytest.mark.parametrize("name", SHIPPED_PROFILES)
def test_shipped_profiles_load(name):
    from autotune.compiler import resolve_target

    profile = autotune.load_profile(name)
    assert profile.name == name
    assert profile.power.source
    assert resolve_target(profile).kind.name == "llvm"  # TVM accepts the target dict
    if profile.runner.kind == "rpc" and not profile.runner.emulated:  # a real device: say how to attach it
        assert any(profile.runner.key in cmd for cmd in profile.attach)
        assert profile.runner.tracker.startswith("127.0.0.1:")  # unauthenticated RPC stays on loopback


def test_malformed_yaml_names_line(write_yaml):
    path = write_yaml("task: {data: digits\nobjectives: [\n", "broken.yaml")
    with pytest.raises(UserError, match=r"broken\.yaml: malformed YAML: line \d+"):
        autotune.load_space(path)


def test_missing_file():
    with pytest.raises(UserError, match=r"nope\.yaml: file not found"):
        autotune.load_space("nope.yaml")


def test_yaml_is_loaded_safely(write_yaml):
    path = write_yaml("task: !!python/object/apply:os.system ['echo pwned']\n", "evil.yaml")
    with pytest.raises(UserError, match="malformed YAML"):
        autotune.load_space(path)


BAD_PROFILES = [
    (GOOD_PROFILE.replace("kind: llvm", "kind: llvmm"), "target", "target.kind must be one of"),
    (GOOD_PROFILE.replace("idle_w: 1, active_w: 2", "idle_w: 3, active_w: 2"), "power", "active_w"),
    (GOOD_PROFILE + "measure: {repeat: 1}\n", "measure.repeat", "greater than or equal to 3"),
    (GOOD_PROFILE + "measure: {threds: 2}\n", "measure.threds", "did you mean 'threads'"),
    (GOOD_PROFILE + "measure: {repeat: 6, min_repeat: 8}\n", "measure", "min_repeat (8) must be <= repeat (6)"),
    (GOOD_PROFILE + "measure: {ci_target: 5}\n", "measure.ci_target", "less than 1"),
    (GOOD_PROFILE.replace("name: p\n", ""), "name", "required key is missing"),
    (GOOD_PROFILE + "meter: geiger\n", "meter", "auto"),
    (GOOD_PROFILE + "runner: {kind: rcp}\n", "runner.kind", "local"),
    (
        GOOD_PROFILE + "runner: {kind: rpc, tracker: '127.0.0.1:9190', key: k}\nmeasure: {paired: true}\n",
        "measure.paired",
        "which the rpc runner does not do",
    ),
    (GOOD_PROFILE + "backends: [tvm, onnxruntime]\nmeasure: {paired: true}\n", "measure.paired", "other backends"),
]


@pytest.mark.parametrize("text,key,words", BAD_PROFILES)
def test_bad_profile_names_file_and_key(write_yaml, text, key, words):
    path = write_yaml(text, "bad_profile.yaml")
    with pytest.raises(UserError) as info:
        autotune.load_profile(path)
    msg = str(info.value)
    assert str(path) in msg and key in msg and words in msg


def test_every_metric_maps_to_a_leaderboard_column():
    assert set(METRICS.values()) <= set(autotune.COLUMNS)
