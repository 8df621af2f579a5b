"""Weight clustering: at most ``clusters`` shared values per layer, pruned zeros kept, accuracy kept."""

from __future__ import annotations

import pytest
import torch
from conftest import SMALL_MOBILENET as ARCH

from autotune.compress import CompressContext
from autotune.compress.cluster import kmeans_1d
from autotune.compress.pipeline import compress, plan_compression
from autotune.compress.weights import weight_layers
from autotune.config.search_space import TRAIN_KEYS, SearchSpace
from autotune.data import load_data
from autotune.models import build_model, resolve_family
from autotune.quiet import QuietLock
from autotune.train import accuracy, train


@pytest.fixture(scope="module")
def digits():
    return load_data("digits", val=0.2, test=0.2, seed=0)


def _ctx(digits, tmp_path, train_settings=None) -> CompressContext:
    space = SearchSpace.model_validate(
        {"task": {"data": "digits", "model": "mobilenet"}, "arch": ARCH, "objectives": {"accuracy": "max"}}
    )
    return CompressContext(space=space, data=digits, train=train_settings, seed=0, cache_dir=tmp_path,
                           lock=QuietLock(None))  # fmt: skip


def test_kmeans_1d_finds_separated_clusters():
    values = torch.cat([torch.full((50,), -1.0), torch.full((30,), 0.5), torch.full((20,), 2.0)])
    values += torch.linspace(-0.01, 0.01, 100)
    centroids, idx = kmeans_1d(values, 3, 50)
    assert sorted(round(float(c), 1) for c in centroids) == [-1.0, 0.5, 2.0]
    assert torch.bincount(idx).tolist() in ([50, 30, 20],)


def test_clustering_shares_weights_and_keeps_pruned_zeros(digits, tmp_path):
    torch.manual_seed(0)
    model = build_model(resolve_family("mobilenet"), ARCH, (1, 8, 8), 10).eval()
    settings = {
        "prune": {"kind": "unstructured", "ratio": 0.5, "finetune_epochs": 0},
        "cluster": {"clusters": 8, "finetune_epochs": 0},
    }
    out = compress(model, plan_compression(settings), _ctx(digits, tmp_path))
    for layer in weight_layers(out.model):
        assert layer.weight.unique().numel() <= 8 + 1  # 8 shared values and the pruned zeros
    assert out.sparsity == pytest.approx(0.5, abs=0.02)
    assert out.reports[-1].name == "cluster" and 2 <= out.reports[-1].columns["weight_clusters"] <= 9


@pytest.mark.slow
def test_clustering_with_finetuning_keeps_accuracy(digits, tmp_path):
    torch.manual_seed(0)
    settings = {**TRAIN_KEYS, "epochs": 6, "lr": 0.01}
    model = build_model(resolve_family("mobilenet"), ARCH, (1, 8, 8), 10)
    trained = train(model, digits, settings, seed=0, lock=QuietLock(None))
    before, _ = accuracy(trained.model, digits.x_test, digits.y_test)
    plan = plan_compression({"cluster": {"clusters": 16, "finetune_epochs": 1}})
    out = compress(trained.model, plan, _ctx(digits, tmp_path, settings))
    assert all(m.weight.unique().numel() <= 16 for m in weight_layers(out.model))
    assert out.accuracy >= before - 0.05, (before, out.accuracy)
