"""The kernel table and the kernel-level latency predictor on synthetic kernels with known times."""

from __future__ import annotations

import json

import numpy as np
import pytest

from autotune.compiler.workloads import Workload, kernel_kind
from autotune.kernel_predictor import KernelPredictor
from autotune.kernel_table import KernelTable
from autotune.predictor import MIN_TO_PREDICT

KEY = {"profile": "p", "cpu_model": "test"}
KIND_OF = ("conv", "dwconv", "pwconv", "matmul", "elementwise")


def _kernels(n: int, seed: int = 0) -> list[Workload]:
    """``n`` distinct kernels of assorted kinds and sizes (one call each)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        c = int(rng.choice([8, 16, 24, 32]))
        hw = int(rng.choice([4, 8, 16]))
        args = (((1, c, hw, hw), "float32"), ((c, c, 3, 3), "float32"), ((1, c, hw, hw), "float32"))
        flops = float(2 * c * c * 9 * hw * hw)
        out.append(
            Workload(f"{i:016x}/default", f"fused_k{i}", KIND_OF[i % len(KIND_OF)], 1, flops, 4.0 * c * hw * hw, args)
        )
    return out


def _seconds(kernels: list[Workload], seed: int = 1) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    return {k.name: float(rng.uniform(2e-6, 60e-6)) for k in kernels}


def _table(tmp_path, kernels, seconds, key=KEY) -> KernelTable:
    table = KernelTable.load(tmp_path / "t.kernels.jsonl", key)
    table.add(kernels, seconds)
    return table


def _candidates(kernels: list[Workload], n: int, seed: int = 2) -> list[list[Workload]]:
    """``n`` networks, each a random subset of ``kernels`` with 1-3 calls per kernel."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        picked = rng.choice(len(kernels), size=min(len(kernels), int(rng.integers(4, 12))), replace=False)
        out.append([Workload(**{**kernels[i].__dict__, "calls": int(rng.integers(1, 4))}) for i in picked])
    return out


def _latency(
    net: list[Workload], seconds_by_key: dict[str, float], scale: dict[str, float], per_call_ms: float
) -> float:
    """The truth these tests set: per-kind scaled kernel sum, plus per-call overhead and a constant."""
    kernel_ms = sum(w.calls * seconds_by_key[w.key] * 1e3 * scale.get(w.kind, 1.0) for w in net)
    return kernel_ms + per_call_ms * sum(w.calls for w in net) + 0.003


def test_the_table_round_trips_skips_a_torn_line_and_other_environments(tmp_path):
    kernels = _kernels(6)
    table = _table(tmp_path, kernels, _seconds(kernels))
    with open(table.path, "a") as f:
        f.write(json.dumps({**KEY, "cpu_model": "other", "key": "x/default", "kind": "conv", "flops": 1,
                            "bytes": 1, "seconds": 1.0}) + "\n")  # fmt: skip
        f.write('{"profile": "p", "cpu_model": "test", "key": "torn')  # a crash mid-line
    again = KernelTable.load(table.path, KEY)
    assert set(again.entries) == {k.key for k in kernels}
    assert again.entries[kernels[0].key].args == kernels[0].args  # shapes survive JSON
    unknown = _kernels(8)[6:]
    assert again.missing(kernels[:2] + unknown) == unknown  # known kernels found, the others not
    assert all(again.entries[k.key] == table.entries[k.key] for k in kernels[:2])  # each entry round-trips


def test_missing_lists_each_new_kernel_once(tmp_path):
    kernels = _kernels(5)
    table = _table(tmp_path, kernels[:3], _seconds(kernels))
    twice = [*kernels, *kernels]
    assert [w.key for w in table.missing(twice)] == [kernels[3].key, kernels[4].key]


def test_the_sum_of_kernels_recovers_scales_and_per_call_overhead(tmp_path):
    kernels = _kernels(30)
    seconds = _seconds(kernels)
    table = _table(tmp_path, kernels, seconds)
    by_key = {k.key: seconds[k.name] for k in kernels}
    scale = {"conv": 1.2, "dwconv": 0.9}
    nets = _candidates(kernels, 40)
    y = [_latency(n, by_key, scale, 0.0004) for n in nets]
    kp = KernelPredictor(table).fit(nets[:30], y[:30])
    assert kp.ready and kp.samples_ == 30
    fitted = kp.scales()
    assert fitted["conv"] == pytest.approx(1.2, rel=0.05) and fitted["dwconv"] == pytest.approx(0.9, rel=0.05)
    for net, truth in zip(nets[30:], y[30:], strict=True):
        pred = kp.predict(net)
        assert pred.source == "kernels" and pred.latency_ms == pytest.approx(truth, rel=0.02)
    assert kp.sigma_ < 0.02
    unscaled = KernelPredictor(table).fit(nets, [_latency(n, by_key, {}, 0.0004) for n in nets])
    assert unscaled.per_call_ms == pytest.approx(0.0004, rel=0.05)  # the runtime's own work per call


def test_an_unseen_kernel_is_estimated_and_widens_the_uncertainty(tmp_path):
    kernels = _kernels(40)
    seconds = _seconds(kernels)
    by_key = {k.key: seconds[k.name] for k in kernels}
    table = _table(tmp_path, kernels[:30], seconds)
    nets = _candidates(kernels[:30], 20)
    kp = KernelPredictor(table).fit(nets, [_latency(n, by_key, {}, 0.0003) for n in nets])
    known = kp.predict(nets[0])
    with_new = kp.predict([*nets[0], kernels[35]])
    assert with_new.latency_ms > known.latency_ms  # the estimate adds time
    assert with_new.sigma > known.sigma == kp.sigma_


def test_no_prediction_before_enough_measurements_or_without_a_model_for_unknown_kernels(tmp_path):
    kernels = _kernels(12)
    seconds = _seconds(kernels)
    by_key = {k.key: seconds[k.name] for k in kernels}
    nets = _candidates(kernels[:3], MIN_TO_PREDICT + 2)
    few = KernelPredictor(_table(tmp_path, kernels, seconds)).fit(
        nets[:3], [_latency(n, by_key, {}, 0) for n in nets[:3]]
    )
    assert not few.ready and few.predict(nets[0]) is None
    tiny = KernelPredictor(_table(tmp_path / "b", kernels[:3], seconds))  # too few kernels to learn from
    tiny.fit(nets, [_latency(n, by_key, {}, 0) for n in nets])
    assert tiny.ready and tiny.predict(nets[0]) is not None
    assert tiny.predict([kernels[10]]) is None


def test_a_second_device_is_learned_from_the_first_ones_table(tmp_path):
    kernels = _kernels(30)
    seconds = _seconds(kernels)
    by_key = {k.key: seconds[k.name] for k in kernels}
    table_a = _table(tmp_path, kernels, seconds)  # timed on device A only
    device_b = {"conv": 2.5, "dwconv": 1.6, "pwconv": 2.2, "matmul": 2.0, "elementwise": 1.3}
    nets = _candidates(kernels, 40, seed=5)
    y_b = [_latency(n, by_key, device_b, 0.0008) for n in nets]
    table_b = KernelTable.load(tmp_path / "b.kernels.jsonl", KEY)  # device B has timed nothing yet
    kp = KernelPredictor(table_b, donor=table_a).fit(nets[:15], y_b[:15])  # prior: B's overall ratio
    errors = [abs(kp.predict(n).latency_ms / t - 1) for n, t in zip(nets[15:], y_b[15:], strict=True)]
    assert max(errors) < 0.05
    assert all(v > 0 for v in kp.scales(donor=True).values())
    # once B times a kernel itself, its own time is used (at scale 1), the donor's for the rest
    table_b.add(kernels[:1], {kernels[0].name: by_key[kernels[0].key] * 2.5})
    with_own = KernelPredictor(table_b, donor=table_a).fit(nets[:15], y_b[:15])
    errors = [abs(with_own.predict(n).latency_ms / t - 1) for n, t in zip(nets[15:], y_b[15:], strict=True)]
    assert max(errors) < 0.05


def test_a_second_device_maps_the_donors_kernels_through_the_ones_both_timed(tmp_path):
    kernels = _kernels(60)
    seconds = _seconds(kernels)
    on_a = {k.key: seconds[k.name] for k in kernels}
    # device B: twice as slow, and 1.6x more where the channels are not a multiple of 16 (its vectors)
    on_b = {k.key: on_a[k.key] * 2.0 * (1.6 if k.args[1][0][0] % 16 else 1.0) for k in kernels}
    table_a = _table(tmp_path, kernels, seconds)
    own = kernels[:30]  # what B's first measured candidates filled its table with
    table_b = _table(tmp_path / "b", own, {k.name: on_b[k.key] for k in own})
    nets = _candidates(own, 20, seed=5)
    y = [_latency(n, on_b, {}, 0.0008) for n in nets]
    held = _candidates(kernels[30:], 10, seed=6)  # only kernels B has not timed
    truth = [_latency(n, on_b, {}, 0.0008) for n in held]
    kp = KernelPredictor(table_b, donor=table_a).fit(nets, y)
    assert kp.ratio_model is not None and kp.ratio_model.size == 30
    preds = [kp.predict(n) for n in held]
    assert max(abs(p.latency_ms / t - 1) for p, t in zip(preds, truth, strict=True)) < 0.05
    assert all(p.sigma > kp.sigma_ for p in preds)  # mapped, not timed: the map's error widens it
    # per-kind scales alone (B timed nothing) cannot follow a ratio that varies within a kind
    alone = KernelPredictor(_table(tmp_path / "c", [], {}), donor=table_a).fit(nets, y)
    assert alone.ratio_model is None
    assert max(abs(alone.predict(n).latency_ms / t - 1) for n, t in zip(held, truth, strict=True)) > 0.1


@pytest.mark.parametrize(
    ("name", "channels", "weight", "kind"),
    [
        ("fused_conv2d3_add_relu", 16, (16, 1, 3, 3), "dwconv"),
        ("fused_conv2d4_add", 32, (16, 2, 5, 3), "dwconv"),  # the column phases of a strided one
        ("fused_conv2d_add", 1, (16, 1, 3, 3), "conv"),  # one input channel, shared by all outputs
        ("fused_conv2d_add", 8, (16, 8, 1, 1), "pwconv"),
        ("fused_int8_dot_vnni_conv1x1_n16_k8_p64_subtract", 2, (2, 64, 4), "pwconv"),
        ("fused_conv2d1_add_relu6", 8, (16, 8, 3, 3), "conv"),
        ("fused_matmul_add", 8, None, "matmul"),
        ("fused_mean", 8, None, "reduce"),
        ("fused_max_pool2d", 8, None, "pool"),
        ("fused_add_clip", 8, None, "elementwise"),
    ],
)
def test_kernel_kind_reads_the_name_and_the_weight_shape(name, channels, weight, kind):
    args = (((1, channels, 8, 8), "float32"),) + (((weight, "float32"),) if weight else ())
    assert kernel_kind(name, args) == kind
    assert kernel_kind(name, (((1, channels, 8, 8), "int8"), *args[1:])) == f"{kind}_int8"


PROFILE = """
name: {name}
target: {{host: true}}
power: {{idle_w: 5, active_w: 15, source: test}}
predictor: {{kernels_from: {donor}}}
"""


def test_kernels_from_names_a_profile_and_a_bad_one_is_a_clear_error(write_yaml):
    import autotune
    from autotune.catalog import kernels_donor
    from autotune.errors import UserError

    good = write_yaml(PROFILE.format(name="pi", donor="host"), "pi.yaml")
    donor = kernels_donor(autotune.load_profile(good), file=str(good))
    assert donor is not None and donor.name == "host"
    autotune.check(None, good)  # the check command accepts it
    for donor_ref, words in (
        ("no_such_profile", "no device profile 'no_such_profile'"),
        (good, "is this profile"),
    ):
        bad = write_yaml(PROFILE.format(name="pi", donor=donor_ref), "pi.yaml")
        with pytest.raises(UserError) as err:
            autotune.check(None, bad)
        assert err.value.key == "predictor.kernels_from" and str(bad) in str(err.value) and words in str(err.value)


def test_cross_validated_errors_line_up_with_the_samples(tmp_path):
    """``cv_log_ratios_``: one per sample given, nan for a measurement that lists no kernels."""
    kernels = _kernels(12)
    secs = _seconds(kernels)
    table = _table(tmp_path, kernels, secs)
    nets = _candidates(kernels, 3 * MIN_TO_PREDICT)
    truth = [_latency(c, {k.key: secs[k.name] for k in kernels}, {}, 0.002) for c in nets]
    nets[3] = []  # a measurement that lists no kernels
    kp = KernelPredictor(table).fit(nets, truth)
    assert kp.samples_ == len(nets) - 1 and np.isnan(kp.cv_log_ratios_[3])
    assert np.isfinite(np.delete(kp.cv_log_ratios_, 3)).all()
