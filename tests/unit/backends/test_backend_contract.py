"""The backend contract, run over every entry of the registry: each converts a small model at fp32,
fp16 and int8, checks it against PyTorch, times it by the profile's policy, and reports a model it cannot
convert as the candidate's failure (a reason), never as a crash."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import autotune
from autotune.backends import BACKENDS, Job, check_backends
from autotune.backends.base import time_calls
from autotune.backends.openvino import saturates_int8
from autotune.compress.fakequant import QuantLayer, wrap_layers
from autotune.errors import CandidateFailed
from autotune.quiet import QuietLock
from autotune.records import Deployment

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "tests" / "fixtures"))


def _marks(name: str) -> list[pytest.MarkDecorator]:
    return [pytest.mark.slow, pytest.mark.tvm] if name == "tvm" else []


NAMES = [pytest.param(n, marks=_marks(n)) for n in BACKENDS.names()]


@pytest.fixture(scope="module")
def profile():
    return autotune.load_profile(REPO / "tests/fixtures/host_fast.yaml")


def _inputs(n: int = 8) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((n, 3, 8, 8)).astype(np.float32)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(16 * 4 * 4, 10),
    ).eval()  # fmt: skip


def _int8(model: nn.Module, xs: np.ndarray) -> nn.Module:
    """The model as the quantize pass leaves it for an int8 deployment (8-bit symmetric, per channel)."""
    q = copy.deepcopy(model)
    layers = wrap_layers(q, {"scheme": "linear", "bits": 8, "symmetric": True, "granularity": "channel"})
    for layer in layers:
        layer.act.calibrating = True
    with torch.no_grad():
        q(torch.from_numpy(xs))
    for layer in layers:
        layer.act.finish_calibration()
        layer.freeze()
    assert all(isinstance(m, QuantLayer) for m in (q[0], q[2], q[5]))
    return q.eval()


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_builds_checks_and_times(name, precision, profile, tmp_path):
    xs = _inputs()
    model = _int8(_model(), xs) if precision == "int8" else _model()
    seven_bit = name == "openvino" and precision == "int8" and saturates_int8()
    if seven_bit:  # 7-bit weights are another model: they may swap this untrained model's logits 0.14 % apart
        numerics = profile.numerics.model_copy(update={"min_top1_agreement": 0.75})
        profile = profile.model_copy(update={"numerics": numerics})
    stages: list[str] = []
    job = Job(model=model, profile=profile, inputs=xs, out_dir=tmp_path, lock=QuietLock(None),
              deployment=Deployment(precision, "channel"), on_stage=stages.append)  # fmt: skip
    result = BACKENDS.get(name).deploy(job)
    assert result.numerics is not None and result.numerics.samples == len(xs)
    assert result.numerics.top1_agreement >= profile.numerics.min_top1_agreement
    m = result.measurement
    assert m.latency_ms > 0 and m.latency_ci_low_ms <= m.latency_ms <= m.latency_ci_high_ms
    assert profile.measure.min_repeat <= m.latency_repeats <= profile.measure.repeat
    assert m.threads == profile.measure.threads and m.timing == "local"
    assert m.energy_source == "model" or m.energy_mj is not None
    art = result.artifact
    assert Path(art.path).is_file() and art.artifact_bytes > 0 and art.input_shape == (3, 8, 8)
    if precision == "fp16":  # a runtime without fp16 kernels on this CPU says what it ran instead
        assert art.deploy_precision in ("fp16", "bf16", "fp32")
    elif seven_bit:
        assert art.deploy_precision == "int8 (7-bit weights)"
    else:
        assert art.deploy_precision == precision or (name == "onnxruntime" and art.deploy_precision == "int8 (qdq)")
    assert stages, "the backend reports its stages"


@pytest.mark.parametrize("name", NAMES)
def test_time_only_skips_the_check(name, profile, tmp_path):
    job = Job(model=_model(), profile=profile, inputs=_inputs(), out_dir=tmp_path, lock=QuietLock(None), check=False)
    result = BACKENDS.get(name).deploy(job)
    assert result.numerics is None and result.measurement.latency_ms > 0


@pytest.mark.parametrize("name", [n for n in BACKENDS.names() if n != "tvm"])
def test_a_model_it_cannot_convert_is_the_candidates_failure(name, profile, tmp_path):
    from onnx_less_builder import build

    model = build({"width": 4}, (3, 8, 8), 10).eval()
    job = Job(model=model, profile=profile, inputs=_inputs(), out_dir=tmp_path, lock=QuietLock(None))
    with pytest.raises(CandidateFailed) as err:
        BACKENDS.get(name).deploy(job)
    assert err.value.stage == "convert" and "frac" in err.value.reason


def test_a_missing_package_is_named_with_its_install_command(profile, monkeypatch):
    backend = BACKENDS.get("openvino")
    monkeypatch.setattr(backend, "module", "no_such_openvino_module")
    wants = profile.model_copy(update={"backends": ("tvm", "openvino")})
    with pytest.raises(autotune.UserError) as err:
        check_backends(wants, file="dev.yaml")
    text = str(err.value)
    assert "dev.yaml" in text and "backends" in text and "pip install" in text and "openvino" in text
    check_backends(profile, file="dev.yaml")  # only tvm: nothing to install


def test_an_unknown_backend_suggests_the_closest(profile):
    with pytest.raises(autotune.UserError, match="did you mean 'onnxruntime'"):
        check_backends(profile.model_copy(update={"backends": ("tvm", "onnxruntim")}), file="dev.yaml")


def test_time_calls_grows_number_until_a_repeat_is_long_enough(profile):
    now = [0.0]

    def run(x: np.ndarray) -> np.ndarray:
        now[0] += 1e-4  # every call takes 0.1 ms on this clock
        return x

    cfg = profile.measure.model_copy(update={"warmup": 3, "number": 1, "min_repeat_ms": 2})
    seconds, number = time_calls(run, np.zeros(1), cfg, clock=lambda: now[0])
    assert number == 32  # doubled from 1 until a repeat of `number` calls lasts 2 ms
    assert cfg.min_repeat <= len(seconds) <= cfg.repeat
    assert seconds == pytest.approx([1e-4] * len(seconds))


def test_autotune_check_names_an_unknown_backend(tmp_path):
    text = (REPO / "device_profiles/host_runtimes.yaml").read_text().replace("openvino]", "openvin]")
    (tmp_path / "p.yaml").write_text(text)
    with pytest.raises(autotune.UserError, match="unknown backend 'openvin'") as err:
        autotune.check("digits_cnn", tmp_path / "p.yaml")
    assert str(tmp_path / "p.yaml") in str(err.value) and err.value.key == "backends"
