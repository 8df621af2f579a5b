"""The one validation front (``autotune.validate``): a space is checked in full, once: metrics,
conditions, training keys, the data set and model family, compression passes and plug-in references."""

from __future__ import annotations

import pytest

import autotune
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


def test_a_device_metric_may_name_a_device(write_yaml):
    text = GOOD_SPACE.replace("latency_ms: min}", "latency_ms: min, energy_mj@rpi5: min}")
    space = autotune.load_space(write_yaml(text, "s.yaml"))
    assert space.objectives["energy_mj@rpi5"] == "min"
