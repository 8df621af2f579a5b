"""Search-space and device-profile validation: good files load, bad ones name file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

import autotune
from autotune.config.search_space import METRICS
from autotune.errors import UserError

GOOD_SPACE = """
task: {data: digits, model: mobilenet}
arch:
  stages: {type: int, low: 1, high: 3}
  kernel: {type: categorical, choices: [3, 5], per_stage: true}
train:
  optimizer: {type: categorical, choices: [sgd, adam]}
  momentum: {type: float, low: 0.5, high: 0.9, when: {optimizer: sgd}}
  lr: {type: float, low: 0.0001, high: 0.1, log: true}
objectives: {accuracy: max, latency_ms: min}
constraints: {latency_ms: {max: 5}}
"""

GOOD_PROFILE = """
name: p
target: {kind: llvm, mcpu: znver3, num-cores: 2}
power: {idle_w: 1, active_w: 2, source: datasheet}
"""


@pytest.mark.parametrize("name", ["digits_cnn", "digits_mlp", "latency_mobilenet224"])
def test_shipped_spaces_load(name):
    space = autotune.load_space(name)
    assert space.objectives
    assert space.task.model in ("mobilenet", "mlp")


SHIPPED_PROFILES = sorted(p.stem for p in (Path(__file__).parents[2] / "device_profiles").glob("*.yaml"))


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


def test_missing_cross_compiler_is_a_clear_error_before_the_search(write_yaml):
    from autotune.api import _preflight

    text = (Path(__file__).parents[2] / "device_profiles/rpi4.yaml").read_text()
    path = write_yaml(text.replace("compiler: aarch64-linux-gnu-gcc", "compiler: no-such-gcc"), name="p.yaml")
    with pytest.raises(UserError, match="the cross compiler 'no-such-gcc' is not on PATH") as err:
        _preflight(autotune.load_space("digits_cnn"), autotune.load_profile(path), profile_file=str(path))
    assert err.value.key == "compiler" and str(path) in err.value.render()


def test_good_space_and_profile(write_yaml):
    space = autotune.load_space(write_yaml(GOOD_SPACE, "s.yaml"))
    profile = autotune.load_profile(write_yaml(GOOD_PROFILE, "p.yaml"))
    assert space.arch["kernel"].per_stage
    assert space.train["momentum"].when == {"optimizer": "sgd"}
    assert profile.target["mcpu"] == "znver3"


BAD_SPACES = [
    # (yaml text, key that the message must name, words it must contain)
    (GOOD_SPACE.replace("arch:", "arhc:"), "arhc", "unknown key"),
    (GOOD_SPACE.replace("low: 1, high: 3", "low: 5, high: 3"), "arch.stages", "empty range"),
    (GOOD_SPACE.replace("low: 1, high: 3", "low: one, high: 3"), "arch.stages.low", "integer"),
    (
        GOOD_SPACE.replace("when: {optimizer: sgd}", "when: {optimiser: sgd}"),
        "train.momentum.when.optimiser",
        "unknown parameter",
    ),
    (GOOD_SPACE.replace("latency_ms: min}", "latency: min}"), "objectives.latency", "not a measured metric"),
    (GOOD_SPACE.replace("constraints: {latency_ms", "constraints: {latncy_ms"), "constraints.latncy_ms", "latency_ms"),
    (GOOD_SPACE.replace("choices: [sgd, adam]", "choices: [sgd, adamw]"), "train.optimizer", "adamw"),
    (GOOD_SPACE.replace("  lr:", "  learning_rate:"), "train.learning_rate", "unknown training parameter"),
    (GOOD_SPACE.replace("kernel: {", "kernal: {"), "arch.kernal", "did you mean 'kernel'"),
    (GOOD_SPACE.replace("model: mobilenet", "model: mobilnet"), "task.model", "did you mean 'mobilenet'"),
    (GOOD_SPACE.replace("data: digits", "data: digts"), "task.data", "unknown data set"),
    (GOOD_SPACE.replace("choices: [3, 5]", "choices: [3, 4]"), "arch.kernel", "4"),
    (GOOD_SPACE.replace("type: int, low: 1", "type: integer, low: 1"), "arch.stages.type", "did you mean 'int'"),
    (GOOD_SPACE.replace("objectives: {accuracy: max, latency_ms: min}", "objectives: {}"), "objectives", "at least 1"),
    (
        GOOD_SPACE.replace("latency_ms: min}", "latency_ms: min, accuracy@rpi5: max}"),
        "objectives.accuracy@rpi5",
        "only latency_ms, latency_p90_ms, energy_mj can name a device",
    ),
    (GOOD_SPACE.replace("latency_ms: min}", "latency_ms: min, latency_ms@: min}"), "objectives.latency_ms@", "name"),
    (GOOD_SPACE + "compress: {prune: {ratio: 1.0}}\n", "compress.prune.ratio", "must be < 1"),
    (GOOD_SPACE + "compress: {prune: {ratio: {type: float, low: 0.5, high: 1.2}}}\n", "compress.prune.ratio", "1.2"),
    (GOOD_SPACE + "compress: {prune: {ration: 0.5}}\n", "compress.prune.ration", "did you mean 'ratio'"),
    (GOOD_SPACE + "compress: {prune: {criterion: l3}}\n", "compress.prune.criterion", "l3"),
    (GOOD_SPACE + "compress: {quantize: {bits: 0}}\n", "compress.quantize.bits", "must be >= 2"),
    (GOOD_SPACE + "compress: {quantize: {bits: 9}}\n", "compress.quantize.bits", "must be <= 8"),
    (GOOD_SPACE + "compress: {quantise: {bits: 8}}\n", "compress.quantise", "did you mean 'quantize'"),
    (GOOD_SPACE + "compress: {quantize: {deploy: int8, scheme: log}}\n", "compress.quantize", "deploy int8 needs"),
    (
        GOOD_SPACE + "compress: {quantize: {deploy: int8, bits: {type: int, low: 4, high: 8}}}\n",
        "compress.quantize",
        "bits can be 4",
    ),
    (GOOD_SPACE + "compress: {quantize: {deploy: int4}}\n", "compress.quantize.deploy", "int4"),
    (GOOD_SPACE + "compress: {lowrank: {rank_ratio: 0.5, energy: 0.9}}\n", "compress.lowrank", "exactly one"),
    (GOOD_SPACE + "compress: {distill: {alpha: 0.5}}\n", "compress.distill.teacher", "required key is missing"),
    (
        GOOD_SPACE + "compress: {distill: {teacher: {arch: {stagez: 3}}}}\n",
        "compress.distill.teacher.arch.stagez",
        "did you mean 'stages'",
    ),
    (
        GOOD_SPACE + "compress: {distill: {teacher: {model: resnet}}}\n",
        "compress.distill.teacher.model",
        "unknown model family",
    ),
    (
        GOOD_SPACE + "compress: {distill: {teacher: {model: 'no_such_pkg.mod:build'}}}\n",
        "compress.distill.teacher.model",
        "cannot be found",
    ),
    (
        GOOD_SPACE + "compress: {prune: {ratio: {type: float, low: 0.2, high: 0.5, when: {knd: structured}}}}\n",
        "compress.prune.ratio.when.knd",
        "did you mean 'kind'",
    ),
]


@pytest.mark.parametrize("text,key,words", BAD_SPACES)
def test_bad_space_names_file_and_key(write_yaml, text, key, words):
    path = write_yaml(text, "bad_space.yaml")
    with pytest.raises(UserError) as info:
        autotune.load_space(path)
    msg = str(info.value)
    assert str(path) in msg
    assert key in msg
    assert words in msg


def test_latency_only_space_rejects_accuracy(write_yaml):
    path = write_yaml(
        """
        task: {data: synthetic, model: mobilenet, input_shape: [3, 32, 32]}
        arch: {stages: 2}
        objectives: {accuracy: max, latency_ms: min}
        """,
        "lat.yaml",
    )
    with pytest.raises(UserError, match=r"objectives\.accuracy.*not measured"):
        autotune.load_space(path)


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


def test_gpu_target_is_refused_before_the_search(write_yaml):
    from autotune.api import _preflight

    text = (Path(__file__).parents[2] / "device_profiles/rpi5.yaml").read_text()
    cuda = "target: {kind: cuda, arch: sm_87, host: {kind: llvm, mtriple: aarch64-linux-gnu}}\n"
    text = text[: text.index("target:")] + cuda + text[text.index("compiler:") :]
    path = write_yaml(text, name="gpu.yaml")
    with pytest.raises(UserError, match="the rpc runner measures CPU \\(llvm\\) targets only, got 'cuda'") as err:
        _preflight(autotune.load_space("digits_cnn"), autotune.load_profile(path), profile_file=str(path))
    assert err.value.key == "target.kind"


def test_a_device_metric_may_name_a_device(write_yaml):
    text = GOOD_SPACE.replace("latency_ms: min}", "latency_ms: min, energy_mj@rpi5: min}")
    space = autotune.load_space(write_yaml(text, "s.yaml"))
    assert space.objectives["energy_mj@rpi5"] == "min"
