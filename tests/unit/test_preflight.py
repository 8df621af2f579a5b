"""Pre-flight: each plug-in checks itself before the first trial; the model builder must build at
least one of a few sampled configurations (one that fails for some starts the search)."""

from __future__ import annotations

import pytest
from conftest import REPO

import autotune
from autotune.errors import UserError
from autotune.preflight import check_model, preflight, sample_configs

FIXTURES = REPO / "tests" / "fixtures"

PLUGIN_SPACE = """
task: {{data: digits, model: 'flaky_builder:{builder}'}}
arch:
  kernel: {{type: categorical, choices: [3, 5, 7, 12]}}
  width: {{type: int, low: 2, high: 8, step: 2}}
objectives: {{latency_ms: min}}
"""


def _space(write_yaml, monkeypatch, builder: str):
    monkeypatch.chdir(FIXTURES)  # plug-ins are looked for in the working directory
    path = write_yaml(PLUGIN_SPACE.format(builder=builder), "plugin.yaml")
    return autotune.load_space(path), path


def test_missing_cross_compiler_is_a_clear_error_before_the_search(write_yaml):
    text = (REPO / "device_profiles/rpi4.yaml").read_text()
    path = write_yaml(text.replace("compiler: aarch64-linux-gnu-gcc", "compiler: no-such-gcc"), name="p.yaml")
    with pytest.raises(UserError, match="the cross compiler 'no-such-gcc' is not on PATH") as err:
        preflight(autotune.load_space("digits_cnn"), autotune.load_profile(path), profile_file=str(path))
    assert err.value.key == "compiler" and str(path) in err.value.render()


def test_gpu_target_is_refused_before_the_search(write_yaml):
    text = (REPO / "device_profiles/rpi5.yaml").read_text()
    cuda = "target: {kind: cuda, arch: sm_87, host: {kind: llvm, mtriple: aarch64-linux-gnu}}\n"
    text = text[: text.index("target:")] + cuda + text[text.index("compiler:") :]
    path = write_yaml(text, name="gpu.yaml")
    with pytest.raises(UserError, match="the rpc runner measures CPU \\(llvm\\) targets only, got 'cuda'") as err:
        preflight(autotune.load_space("digits_cnn"), autotune.load_profile(path), profile_file=str(path))
    assert err.value.key == "target.kind"


def test_sampled_configurations_are_the_corners_then_seeded_random_samples(write_yaml, monkeypatch):
    space, _ = _space(write_yaml, monkeypatch, "build_some")
    configs = sample_configs(space, 3, seed=0)
    assert configs[0] == {"arch.kernel": 3, "arch.width": 2} and configs[1] == {"arch.kernel": 12, "arch.width": 8}
    assert len(configs) == 3 and len({tuple(sorted(c.items())) for c in configs}) == 3
    assert sample_configs(space, 3, seed=0) == configs  # deterministic for a seed


def test_a_constant_space_is_built_once():
    space = autotune.load_space(FIXTURES / "tiny_cnn.yaml")
    configs = sample_configs(space, 3)
    assert 1 <= len(configs) <= 3 and sample_configs(space, 3) == configs


def test_a_builder_that_fails_for_one_of_three_configurations_starts_the_search(write_yaml, monkeypatch):
    space, path = _space(write_yaml, monkeypatch, "build_some")
    check = check_model(space, autotune.load_profile("host"), file=str(path))
    assert (check.built, len(check.failures)) == (2, 1)
    assert "kernel=12" in check.failures[0] and "larger than the 8x8 feature map" in check.failures[0]


def test_a_builder_that_always_fails_is_refused_with_file_and_key(write_yaml, monkeypatch):
    space, path = _space(write_yaml, monkeypatch, "build_never")
    with pytest.raises(UserError, match="failed for every configuration tried") as err:
        check_model(space, autotune.load_profile("host"), file=str(path))
    assert err.value.file == str(path) and err.value.key == "task.model"
    assert "RuntimeError: this builder always fails" in err.value.render()


def test_a_builder_with_the_wrong_signature_is_refused(write_yaml, monkeypatch):
    space, path = _space(write_yaml, monkeypatch, "build_no_args")
    with pytest.raises(UserError, match=r"must take \(params, input_shape, num_classes\)") as err:
        check_model(space, autotune.load_profile("host"), file=str(path))
    assert err.value.file == str(path) and err.value.key == "task.model"


def test_shipped_families_are_built_too():
    check = check_model(autotune.load_space("digits_cnn"), autotune.load_profile("host"))
    assert check.built >= 1 and not check.failures
