"""Compression passes on small models: each changes the model as configured (no TVM here)."""

from __future__ import annotations

import copy
import multiprocessing as mp
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SMALL_MOBILENET as ARCH
from torch import nn

import autotune
from autotune.compress import PASSES, CompressContext, PassSettings, trial_settings
from autotune.compress.distill import DistillSettings, Teacher, distill_loss, load_teacher
from autotune.compress.fakequant import FakeQuant, QuantLayer, fake_quant_weight
from autotune.compress.lowrank import factorize
from autotune.compress.pipeline import compress, deployment, plan_compression
from autotune.compress.weights import sparsity
from autotune.config.search_space import TRAIN_KEYS
from autotune.data import load_data
from autotune.errors import CandidateFailed
from autotune.models import build_model, resolve_family
from autotune.quiet import QuietLock
from autotune.space import example_params

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def digits():
    return load_data("digits", val=0.2, test=0.2, seed=0)


@pytest.fixture(scope="module")
def space():
    return autotune.load_space(REPO / "search_spaces" / "digits_cnn_compress.yaml")


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(resolve_family("mobilenet"), ARCH, (1, 8, 8), 10).eval()


def _ctx(space, digits, tmp_path, *, train=None) -> CompressContext:
    return CompressContext(
        space=space, data=digits, train=train, seed=0, cache_dir=tmp_path / "cache", lock=QuietLock(None)
    )


def _macs_params(model: nn.Module) -> tuple[int, int]:
    import torch_pruning as tp

    with torch.no_grad():
        macs, params = tp.utils.count_ops_and_params(model.eval(), torch.zeros(1, 1, 8, 8))
    return int(macs), int(params)


def _compress(model, settings, ctx):
    return compress(model, plan_compression(settings), ctx)


def _run(model, settings, ctx):
    return _compress(model, settings, ctx).model


def _defaults(name: str, **over):
    return {**PASSES.get(name).Settings.defaults(), **over}


# --- the registry contract: adding a technique means one pass and this test passing for it ---


@pytest.mark.parametrize("name", PASSES.names())
def test_pass_contract(name):
    cls = PASSES.get(name)
    assert issubclass(cls.Settings, PassSettings)
    assert cls.name == name
    orders = [PASSES.get(n).order for n in PASSES.names()]
    assert len(set(orders)) == len(orders), "pipeline order must be unambiguous"
    assert "enabled" in cls.Settings.model_fields


def test_pipeline_order_is_fixed():
    settings = {n: {"enabled": True} for n in ("quantize", "prune", "distill", "lowrank", "cluster")}
    settings["distill"]["teacher"] = {}  # settings without a default
    settings["lowrank"]["rank_ratio"] = 0.5
    order = ["distill", "lowrank", "prune", "cluster", "quantize"]
    assert [p.name for p, _ in plan_compression(settings)] == order


def test_disabled_pass_is_left_out():
    plan = plan_compression({"prune": {"enabled": False}, "quantize": {"enabled": True}})
    assert [p.name for p, _ in plan] == ["quantize"]


def test_trial_settings_fill_defaults_and_sampled_values(space):
    params = example_params(space, seed=3)
    s = trial_settings(space, params)
    assert set(s) == {"distill", "lowrank", "prune", "quantize"}
    assert s["prune"]["finetune_epochs"] == 2  # a constant of the space
    assert s["quantize"]["calib_batches"] == 8  # a default of the pass
    assert isinstance(s["distill"]["teacher"], Teacher)


def test_pass_settings_are_validated_once_per_space(space):
    from autotune.compress import compress_settings

    first = compress_settings(space)
    assert compress_settings(space) is first  # sampling a trial does not validate again
    assert trial_settings(space, example_params(space, seed=3))["prune"]["finetune_epochs"] == 2


def test_sampled_params_carry_compress_prefix(space):
    params = example_params(space, seed=1)
    assert any(k.startswith("compress.") for k in params)


def test_disabled_technique_samples_nothing_else(space):
    for seed in range(20):
        p = example_params(space, seed=seed)
        if p.get("compress.prune.enabled") is False:
            assert not any(k.startswith("compress.prune.") and k != "compress.prune.enabled" for k in p)
            return
    pytest.fail("no sample disabled pruning in 20 seeds")


# --- pruning ---


@pytest.mark.parametrize("criterion", ["l1", "l2"])
def test_structured_pruning_shrinks_params_and_macs(space, digits, tmp_path, criterion):
    model = _model()
    macs0, params0 = _macs_params(model)
    s = {"prune": _defaults("prune", kind="structured", criterion=criterion, ratio=0.5, finetune_epochs=0)}
    pruned = _run(copy.deepcopy(model), s, _ctx(space, digits, tmp_path))
    macs1, params1 = _macs_params(pruned)
    assert macs1 < 0.5 * macs0
    assert params1 < 0.5 * params0


def test_structured_pruning_keeps_depthwise_and_se_consistent(space, digits, tmp_path):
    s = {"prune": _defaults("prune", ratio=0.5, finetune_epochs=0)}
    pruned = _run(_model(), s, _ctx(space, digits, tmp_path))
    for m in pruned.modules():
        if isinstance(m, nn.Conv2d) and m.groups > 1:
            assert m.groups == m.in_channels == m.out_channels
    assert pruned(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_taylor_criterion_uses_gradients_and_prunes(space, digits, tmp_path):
    train = {**TRAIN_KEYS, "epochs": 1}
    s = {"prune": _defaults("prune", criterion="taylor", ratio=0.3, steps=2, finetune_epochs=0)}
    macs0, _ = _macs_params(_model())
    pruned = _run(_model(), s, _ctx(space, digits, tmp_path, train=train))
    assert _macs_params(pruned)[0] < macs0


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_unstructured_pruning_reaches_sparsity_and_keeps_macs(space, digits, tmp_path, scope):
    model = _model()
    macs0, params0 = _macs_params(model)
    ctx = _ctx(space, digits, tmp_path)
    s = {"prune": _defaults("prune", kind="unstructured", ratio=0.6, scope=scope, steps=2, finetune_epochs=0)}
    out = _compress(model, s, ctx)
    pruned = out.model
    assert sparsity(pruned) == pytest.approx(0.6, abs=0.02)
    assert out.reports[0].columns["sparsity"] == pytest.approx(sparsity(pruned))
    assert _macs_params(pruned) == (macs0, params0)  # dense kernels: nothing removed
    assert not any(hasattr(m, "weight_orig") for m in pruned.modules()), "pruning must be made permanent"


def test_unstructured_zeros_survive_finetuning(space, digits, tmp_path):
    train = {**TRAIN_KEYS, "epochs": 1}
    s = {"prune": _defaults("prune", kind="unstructured", ratio=0.5, finetune_epochs=1)}
    pruned = _run(_model(), s, _ctx(space, digits, tmp_path, train=train))
    assert sparsity(pruned) >= 0.49


# --- low-rank ---


def test_factorize_linear_at_full_energy_is_exact():
    torch.manual_seed(0)
    lin = nn.Linear(64, 48)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(48, 4) @ torch.randn(4, 64))  # rank 4
    fac = factorize(lin, rank_ratio=None, energy=0.999999)
    assert fac is not None
    assert fac[0].out_features == 4
    x = torch.randn(5, 64)
    torch.testing.assert_close(fac(x), lin(x), atol=1e-4, rtol=1e-4)


def test_factorize_conv_into_two_convs():
    torch.manual_seed(0)
    conv = nn.Conv2d(32, 64, 3, padding=1)
    fac = factorize(conv, rank_ratio=0.25, energy=None)
    assert [type(m) for m in fac] == [nn.Conv2d, nn.Conv2d]
    assert fac[0].out_channels == 16  # a quarter of the full rank min(64, 32*3*3)
    assert fac[1].kernel_size == (1, 1)
    assert sum(p.numel() for p in fac.parameters()) < sum(p.numel() for p in conv.parameters())
    assert fac(torch.randn(1, 32, 8, 8)).shape == (1, 64, 8, 8)


def test_factorize_skips_depthwise_and_layers_that_would_grow():
    assert factorize(nn.Conv2d(16, 16, 3, groups=16), rank_ratio=0.5, energy=None) is None
    assert factorize(nn.Linear(4, 10), rank_ratio=0.9, energy=None) is None


def test_lowrank_pass_cuts_params(space, digits, tmp_path):
    model = _model()
    _, params0 = _macs_params(model)
    ctx = _ctx(space, digits, tmp_path)
    compressed = _compress(model, {"lowrank": _defaults("lowrank", rank_ratio=0.25, finetune_epochs=0)}, ctx)
    out = compressed.model
    assert compressed.reports[0].columns["lowrank_layers"] > 0
    assert _macs_params(out)[1] < params0


# --- quantization ---


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("granularity", ["tensor", "channel"])
def test_linear_symmetric_weights_have_at_most_2b_minus_1_levels(bits, granularity):
    torch.manual_seed(0)
    w = torch.randn(6, 5, 3, 3)
    q = fake_quant_weight(w, scheme="linear", bits=bits, symmetric=True, granularity=granularity)
    rows = q.reshape(6, -1) if granularity == "channel" else q.reshape(1, -1)
    for row in rows:
        assert len(torch.unique(row)) <= 2**bits - 1
    assert (q - w).abs().max() <= w.abs().max() / (2 ** (bits - 1) - 1)  # at most one step


def test_linear_asymmetric_uses_full_range():
    w = torch.linspace(-0.1, 1.0, 500).reshape(5, 100)
    q = fake_quant_weight(w, scheme="linear", bits=4, symmetric=False, granularity="tensor")
    assert len(torch.unique(q)) <= 16
    assert (q - w).abs().max() <= 1.1 / 15


def test_log_weights_are_signed_powers_of_two_times_alpha():
    torch.manual_seed(0)
    w = torch.randn(4, 32)
    q = fake_quant_weight(w, scheme="log", bits=4, symmetric=True, granularity="channel")
    alpha = w.abs().amax(dim=1, keepdim=True)
    nz = q != 0
    k = -torch.log2(q.abs() / alpha)[nz]
    assert torch.allclose(k, k.round(), atol=1e-5)
    assert k.min() >= 0
    assert k.max() <= 2 ** (4 - 1) - 2


def test_activation_quantizer_calibrates_and_passes_gradients():
    fq = FakeQuant(8, True)
    fq.calibrating = True
    fq(torch.tensor([-2.0, 1.0, 3.0]))
    fq.finish_calibration()
    assert float(fq.scale) == pytest.approx(3.0 / 127)
    fq.train()
    x = torch.tensor([0.5, 1.0], requires_grad=True)
    fq(x).sum().backward()
    assert torch.equal(x.grad, torch.ones(2))  # straight-through
    fq.eval()
    assert torch.allclose(fq(torch.tensor([10.0])), torch.tensor([3.0]))  # clipped at the range


def test_quantize_pass_ptq_freezes_8bit_weights(space, digits, tmp_path):
    ctx = _ctx(space, digits, tmp_path)
    s = {"quantize": _defaults("quantize", deploy="int8", granularity="channel")}
    compressed = _compress(_model(), s, ctx)
    model = compressed.model
    layers = [m for m in model.modules() if isinstance(m, QuantLayer)]
    assert layers and all(q.frozen and q.act is not None for q in layers)
    for q in layers:
        w = q.layer.weight.detach().reshape(q.layer.weight.shape[0], -1)
        scale = w.abs().amax(dim=1, keepdim=True) / 127
        scale[scale == 0] = 1
        assert torch.allclose(w / scale, (w / scale).round(), atol=1e-3)
    assert compressed.deployment.precision == "int8"
    assert deployment(plan_compression(s)).precision == "int8"
    assert compressed.reports[0].columns["deploy_precision"] == "int8"


def test_int8_deploy_with_a_non_int8_scheme_fails_the_trial(space, digits, tmp_path):
    s = {"quantize": _defaults("quantize", deploy="int8", bits=4)}
    with pytest.raises(CandidateFailed, match="8-bit symmetric"):
        _run(_model(), s, _ctx(space, digits, tmp_path))


def test_qat_changes_weights(space, digits, tmp_path):
    train = {**TRAIN_KEYS, "epochs": 1, "lr": 0.01}
    before = _model()
    s = {"quantize": _defaults("quantize", method="qat", qat_epochs=1, bits=4)}
    after = _run(copy.deepcopy(before), s, _ctx(space, digits, tmp_path, train=train))
    w0 = next(m for m in before.modules() if isinstance(m, nn.Conv2d)).weight
    w1 = next(m for m in after.modules() if isinstance(m, QuantLayer)).layer.weight
    assert not torch.allclose(w0, w1)


# --- distillation ---


def test_distill_loss_matches_the_formula():
    torch.manual_seed(0)
    teacher = nn.Linear(4, 3)
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    s = torch.randn(8, 3)
    t_log = torch.log_softmax(teacher(x) / 2.0, 1)
    kl = (t_log.exp() * (t_log - torch.log_softmax(s / 2.0, 1))).sum(1).mean()
    want = 0.3 * 4.0 * kl + 0.7 * nn.functional.cross_entropy(s, y)
    got = distill_loss(teacher, alpha=0.3, temperature=2.0)(s, x, y)
    torch.testing.assert_close(got, want.detach())
    ce_only = distill_loss(teacher, alpha=0.0, temperature=2.0)(s, x, y)
    torch.testing.assert_close(ce_only, nn.functional.cross_entropy(s, y))


def _teacher_worker(args):
    space_path, cache = args
    space = autotune.load_space(space_path)
    data = load_data("digits", val=0.2, test=0.2, seed=0)
    ctx = CompressContext(space=space, data=data, train=None, seed=0, cache_dir=Path(cache), lock=QuietLock(None))
    teacher = DistillSettings.model_validate(
        {"teacher": {"arch": {"stages": 1, "width_mult": 0.5}, "train": {"epochs": 1}}}
    ).teacher
    model, info = load_teacher(teacher, ctx)
    return info["train_s"], float(next(model.parameters()).detach().sum())


@pytest.mark.slow
def test_teacher_is_trained_once_for_concurrent_trials(tmp_path):
    args = (str(REPO / "search_spaces" / "digits_cnn_compress.yaml"), str(tmp_path / "cache"))
    with mp.get_context("spawn").Pool(2) as pool:
        results = pool.map(_teacher_worker, [args, args])
    assert len(list((tmp_path / "cache").glob("teacher-*.pt"))) == 1
    assert results[0] == results[1]  # the same record and weights: one training, read by both


def test_distillation_needs_a_train_section(write_yaml):
    path = write_yaml(
        """
        task: {data: synthetic, model: mobilenet, input_shape: [1, 8, 8]}
        arch: {stages: 1}
        objectives: {latency_ms: min}
        compress: {distill: {teacher: {arch: {stages: 2}}}}
        """
    )
    with pytest.raises(autotune.UserError, match="needs a train section"):
        autotune.load_space(path)


# --- mild settings keep accuracy ---


@pytest.mark.slow
@pytest.mark.parametrize(
    "settings",
    [
        {"prune": {"kind": "structured", "ratio": 0.2, "finetune_epochs": 2}},
        {"prune": {"kind": "unstructured", "ratio": 0.3, "finetune_epochs": 1}},
        {"lowrank": {"energy": 0.99, "finetune_epochs": 1}},
        {"quantize": {"deploy": "int8", "granularity": "channel"}},
    ],
    ids=["structured", "unstructured", "lowrank", "int8"],
)
def test_mild_compression_keeps_accuracy(space, digits, tmp_path, settings):
    from autotune.train import accuracy, train

    tr = {**TRAIN_KEYS, "epochs": 6, "lr": 0.005}
    model = train(_model(), digits, tr, seed=0).model
    base, _ = accuracy(model, digits.x_test, digits.y_test)
    name, s = next(iter(settings.items()))
    out = _run(copy.deepcopy(model), {name: _defaults(name, **s)}, _ctx(space, digits, tmp_path, train=tr))
    acc, _ = accuracy(out, digits.x_test, digits.y_test)
    assert acc >= base - 0.03, f"{name}: {base:.3f} -> {acc:.3f}"


def test_quantized_model_outputs_stay_close_to_float(space, digits, tmp_path):
    model = _model()
    s = {"quantize": _defaults("quantize", deploy="int8")}
    q = _run(copy.deepcopy(model), s, _ctx(space, digits, tmp_path))
    from autotune.models.layers import fold_batchnorm

    fold_batchnorm(model)
    x = torch.from_numpy(np.ascontiguousarray(digits.x_test[:16]))
    with torch.no_grad():
        ref, got = model(x), q(x)
    assert (ref - got).abs().max() <= 0.1 * ref.abs().max()
