"""Compressed candidates through the real TVM compile: int8 runs integer arithmetic, every technique
compiles and matches its PyTorch model, and a search fills the compression columns."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import REPO
from conftest import SMALL_MOBILENET as ARCH

import autotune
from autotune.cli import main
from autotune.compiler import compile_artifact, resolve_target
from autotune.compiler.dot_kernels import dot_path
from autotune.compress import PASSES
from autotune.compress.base import CompressContext
from autotune.compress.pipeline import compress, plan_compression
from autotune.data import load_data
from autotune.exporter import export_program
from autotune.models import build_model, resolve_family
from autotune.numerics import check_numerics, tolerance_for
from autotune.quiet import QuietLock

pytestmark = [pytest.mark.slow, pytest.mark.tvm]


@pytest.fixture(scope="module")
def digits():
    return load_data("digits", val=0.2, test=0.2, seed=0)


@pytest.fixture(scope="module")
def profile():
    return autotune.load_profile(REPO / "tests/fixtures/host_fast.yaml")


@pytest.fixture(scope="module")
def space():
    return autotune.load_space(REPO / "tests/fixtures/tiny_compress.yaml")


@pytest.fixture(scope="module")
def trained(digits):
    from autotune.config.search_space import TRAIN_KEYS
    from autotune.train import train

    torch.manual_seed(0)
    model = build_model(resolve_family("mobilenet"), ARCH, (1, 8, 8), 10)
    return train(model, digits, {**TRAIN_KEYS, "epochs": 3, "lr": 0.005}, seed=0).model.eval()


def _compress(model, name, settings, space, digits, tmp_path):
    cls = PASSES.get(name).Settings
    s = {**cls.defaults(), **settings}
    ctx = CompressContext(space=space, data=digits, train=None, seed=0, cache_dir=tmp_path, lock=QuietLock(None))
    out = compress(model, plan_compression({name: s}), ctx)
    return out.model, out.deployment


def _int8_model(trained, space, digits, tmp_path, granularity="channel"):
    q, how = _compress(trained, "quantize", {"deploy": "int8", "granularity": granularity}, space, digits, tmp_path)
    return q, how


@pytest.mark.parametrize("granularity", ["tensor", "channel"])
def test_int8_compiles_to_integer_arithmetic_and_matches_its_twin(
    trained, space, digits, profile, tmp_path, granularity
):
    q, how = _int8_model(trained, space, digits, tmp_path, granularity)
    program, exported, _ = export_program(q, (1, 8, 8))
    art = compile_artifact(
        program, profile=profile, out_dir=tmp_path / "int8", input_shape=(1, 8, 8), precision="int8",
        weight_granularity=how.weight_granularity,
    )  # fmt: skip
    assert art.deploy_precision == "int8"
    path = dot_path(resolve_target(profile))  # vnni, avx2 or generic on an x86 host
    dense = [
        m for m in q.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear) and getattr(m, "groups", 1) == 1
    ]
    # on the dot-product kernels too: a kernel larger than 1x1 (the stem) runs on them through im2col
    assert any(isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1) for m in dense)
    assert art.int8_ops == len(dense) > 0, "every non-depthwise conv and every matmul should run in int8"
    assert art.compute_ops > art.int8_ops  # the depthwise convs stay float (see autotune.compiler.precision.to_int8)
    assert art.int8_path == path
    if path in _INSTRUCTION:  # the convs and the classifier run it: no silent fallback to widening code
        assert _count_instruction(art.path, _INSTRUCTION[path]) > 0
    if granularity == "channel":  # each kernel builds alone, as `autotune profile` times them
        from autotune.compiler.kernels import build_kernels

        kernels = build_kernels(program, profile, out_dir=tmp_path / "kernels", precision="int8",
                                weight_granularity="channel")  # fmt: skip
        dot = [k for k in kernels if "int8_dot" in k.name]
        assert bool(dot) == (path != "generic") and all(Path(k.path).exists() for k in kernels)
        assert all(k.flops > 0 for k in kernels if "conv2d" in k.name)  # TVM counts all but the tensorized,
        for k in dot:  # whose multiply-adds are counted apart: activations and weights are the first two
            (a, _), (w, _) = k.args[:2]  # a [K/4, P, 4] and w [N, K], or a [P, K] and w [N/L, K/4, L, 4]
            macs = a[1] * a[0] * a[2] * w[0] if "conv1x1" in k.name else a[0] * a[1] * w[0] * w[2]
            assert k.flops == 2 * macs
    tol = tolerance_for(profile, precision="int8", act_bits=8)
    report = check_numerics(art, exported, digits.x_test, profile=profile, tolerance=tol)
    assert report.samples == len(digits.x_test)  # top-1 agreement over the whole test set
    assert report.top1_agreement >= 0.98
    program32, _, _ = export_program(trained, (1, 8, 8))
    fp32 = compile_artifact(program32, profile=profile, out_dir=tmp_path / "fp32", input_shape=(1, 8, 8))
    # weights stored as int8 (beside them: per-channel scales and, on the VNNI path, int32 shift corrections)
    assert art.weights_bytes < 0.45 * fp32.weights_bytes


#: The instruction each x86 dot-product path multiplies with.
_INSTRUCTION = {"vnni": "vpdpbusd", "avx2": "vpmaddubsw"}


def _count_instruction(path, mnemonic):
    """How often ``mnemonic`` occurs in the disassembly of the library at ``path``."""
    import shutil
    import subprocess

    assert shutil.which("objdump"), "objdump (binutils) is needed to inspect the compiled code"
    text = subprocess.run(["objdump", "-d", "--no-show-raw-insn", path], capture_output=True, text=True, check=True)
    return sum(1 for line in text.stdout.splitlines() if f"\t{mnemonic}" in line or f" {mnemonic} " in line)


def test_int8_lowered_tir_reads_int8_and_accumulates_int32(trained, space, digits, profile, tmp_path):
    """Inspect the compiled IR itself: the conv kernels take int8 buffers and produce int32."""
    from tvm import relax
    from tvm.relax.frontend.torch import from_exported_program

    from autotune.compiler.precision import to_int8

    q, _ = _int8_model(trained, space, digits, tmp_path)
    program, _, _ = export_program(q, (1, 8, 8))
    mod = from_exported_program(program, keep_params_as_input=False)
    mod, rewritten = to_int8(mod, granularity="channel")
    assert rewritten > 0
    target = resolve_target(profile)
    lowered = relax.get_default_pipeline(target)(mod)
    int8_kernels = []
    for gv, func in lowered.functions.items():
        if type(func).__name__ != "PrimFunc" or "conv2d" not in gv.name_hint:
            continue
        text = func.script()
        signature = text[text.index("def ") : text.index("):")]
        if '"int8")' in signature and '"int32")' in text and 'T.Cast("int32"' in text:
            int8_kernels.append(gv.name_hint)  # int8 inputs, int32 accumulator, widening multiply
    assert int8_kernels, "no conv2d kernel reads int8 and accumulates in int32"


def test_fp16_deploys_mixed_precision_and_matches(trained, space, digits, profile, tmp_path):
    q, how = _compress(trained, "quantize", {"scheme": "none", "deploy": "fp16"}, space, digits, tmp_path)
    program, exported, _ = export_program(q, (1, 8, 8))
    art = compile_artifact(program, profile=profile, out_dir=tmp_path, input_shape=(1, 8, 8), precision="fp16")
    assert art.deploy_precision == "fp16"
    check_numerics(art, exported, digits.x_test, profile=profile, tolerance=tolerance_for(profile, precision="fp16"))


@pytest.mark.parametrize(
    "name,settings",
    [
        ("prune", {"kind": "structured", "ratio": 0.5, "finetune_epochs": 0}),
        ("prune", {"kind": "unstructured", "ratio": 0.5, "finetune_epochs": 0}),
        ("lowrank", {"rank_ratio": 0.5, "finetune_epochs": 0}),
        ("quantize", {"scheme": "log", "bits": 4, "deploy": "fp32"}),
    ],
    ids=["structured", "unstructured", "lowrank", "log4"],
)
def test_compressed_model_compiles_and_matches(trained, space, digits, profile, tmp_path, name, settings):
    model, _ = _compress(trained, name, settings, space, digits, tmp_path)
    program, exported, _ = export_program(model, (1, 8, 8))
    art = compile_artifact(program, profile=profile, out_dir=tmp_path, input_shape=(1, 8, 8))
    report = check_numerics(art, exported, digits.x_test, profile=profile)  # the float32 bounds
    assert report.max_abs_diff <= 1e-3


def test_evaluate_fills_the_compression_columns(space, profile, tmp_path):
    params = {"arch.width_mult": 1.0, "arch.act": "relu", "compress.distill.alpha": 0.5}
    params |= {"compress.lowrank.enabled": False, "compress.prune.kind": "structured"}
    params |= {"compress.prune.criterion": "l2", "compress.quantize.deploy": "int8"}
    params |= {"compress.quantize.granularity": "channel"}
    row = autotune.evaluate(params, profile, space=space, work_dir=tmp_path)
    assert row["status"] == "ok", row["error"]
    assert row["deploy_precision"] == "int8"
    assert 0 < row["int8_ops"] < row["compute_ops"]  # depthwise convs stay float
    assert row["macs"] < row["macs_uncompressed"]
    assert row["params"] < row["params_uncompressed"]
    assert row["speedup_vs_uncompressed"] == pytest.approx(row["latency_uncompressed_ms"] / row["latency_ms"])
    assert 0 <= row["teacher_accuracy"] <= 1
    assert row["accuracy_uncompressed"] is not None
    assert row["compress_s"] > 0
    assert (tmp_path / "model.pt").exists()


def test_search_on_a_compression_space_fills_columns(tmp_path):
    fixtures = REPO / "tests" / "fixtures"
    args = ["search", "--space", str(fixtures / "tiny_compress.yaml"), "--device", str(fixtures / "host_fast.yaml")]
    args += ["--trials", "3", "--name", "compress", "--results-dir", str(tmp_path), "--no-early-stopping"]
    assert main(args) == 0
    rows = autotune.read_leaderboard(tmp_path / "compress")
    assert len(rows) == 3
    ok = [r for r in rows if r["status"] == "ok"]
    assert ok, [r["error"] for r in rows]
    for r in ok:
        assert r["deploy_precision"] in ("int8", "fp32")
        assert r["speedup_vs_uncompressed"] > 0
        assert r["compress.prune.kind"] in ("structured", "unstructured")
        assert r["sparsity"] is not None
    assert len(list((tmp_path / "compress" / "cache").glob("teacher-*.pt"))) == 1
    header = (tmp_path / "compress" / "leaderboard.csv").read_text().splitlines()[0].split(",")
    assert {"deploy_precision", "sparsity", "speedup_vs_uncompressed", "macs_uncompressed"} <= set(header)
    assert any(h.startswith("compress.") for h in header)
    # the compressed model is exported from its own stored module, checked at its precision
    best = max(ok, key=lambda r: r["accuracy"])
    out = tmp_path / "bundle"
    assert main(["export", str(tmp_path / "compress"), best["trial_id"], "--out", str(out)]) == 0
    record = json.loads((out / "params.json").read_text())
    assert record["compress"]["prune"]["kind"] == best["compress.prune.kind"]
    assert record["checks"]["tvm_max_abs_diff"] is not None


def test_search_on_the_shipped_compression_space(tmp_path):
    """The shipped space, two trials: every row is ok or a recorded failure, compression columns filled.

    Everything as shipped but the training's length (15 epochs, the teacher's 20: two minutes of this
    test), which the other searches already cover."""
    text = (REPO / "search_spaces/digits_cnn_compress.yaml").read_text()
    for long, short in [("  epochs: 15\n", "  epochs: 2\n"), ("train: {epochs: 20,", "train: {epochs: 2,")]:
        assert text.count(long) == 1, long
        text = text.replace(long, short)
    space = tmp_path / "digits_cnn_compress.yaml"
    space.write_text(text)
    args = ["search", "--space", str(space), "--device", str(REPO / "tests/fixtures/host_fast.yaml")]
    args += ["--trials", "2", "--name", "shipped", "--results-dir", str(tmp_path), "--no-early-stopping", "--seed", "1"]
    assert main(args) == 0
    rows = autotune.read_leaderboard(tmp_path / "shipped")
    assert len(rows) == 2
    for r in rows:
        assert r["status"] in ("ok", "infeasible", "failed")
        if r["status"] != "failed":
            assert r["deploy_precision"] in ("int8", "fp32")
            assert r["accuracy"] is not None
