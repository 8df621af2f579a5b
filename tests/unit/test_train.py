"""Training: every optimizer and schedule, early stopping, NaN detection, held-out accuracy."""

from __future__ import annotations

import pytest
import torch

from autotune.config.search_space import OPTIMIZERS, SCHEDULES, TRAIN_KEYS
from autotune.data import load_data
from autotune.errors import CandidateFailed
from autotune.models import MODEL_FAMILIES, build_model
from autotune.train import make_optimizer, make_scheduler, train


@pytest.fixture(scope="module")
def digits():
    return load_data("digits", val=0.2, test=0.2, seed=0)


def _mlp(digits):
    torch.manual_seed(0)
    return build_model(MODEL_FAMILIES.get("mlp"), {"layers": 1, "width": 64}, digits.input_shape, 10)


def test_digits_split_is_disjoint_and_stratified(digits):
    assert digits.x_train.shape[1:] == (1, 8, 8)
    n = len(digits.x_train) + len(digits.x_val) + len(digits.x_test)
    assert n == 1797
    assert set(digits.y_test.tolist()) == set(range(10))
    flat = lambda x: {a.tobytes() for a in x}  # noqa: E731
    assert not flat(digits.x_test) & flat(digits.x_train)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_steps(name):
    p = torch.nn.Parameter(torch.ones(3))
    opt = make_optimizer([p], {**TRAIN_KEYS, "optimizer": name, "lr": 0.1})
    (p**2).sum().backward()
    opt.step()
    assert not torch.equal(p.detach(), torch.ones(3))


@pytest.mark.parametrize("name", SCHEDULES)
def test_every_schedule(name):
    p = torch.nn.Parameter(torch.ones(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = make_scheduler(opt, {**TRAIN_KEYS, "schedule": name, "epochs": 10, "step_size": 2, "gamma": 0.5})
    lrs = []
    for _ in range(10):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[-1] <= 1.0
    assert (lrs[-1] < 1.0) == (name != "constant")


def test_training_learns_digits(digits):
    epochs = []
    trained = train(
        _mlp(digits),
        digits,
        {**TRAIN_KEYS, "epochs": 5, "lr": 0.01},
        seed=0,
        on_epoch=lambda e, a, loss: epochs.append((e, a)),
    )
    assert [e for e, _ in epochs] == [1, 2, 3, 4, 5]
    assert trained.val_accuracy == max(a for _, a in epochs)
    assert trained.accuracy > 0.85  # held-out test set, chance is 0.1
    assert trained.train_s > 0


def test_early_stopping(digits):
    trained = train(_mlp(digits), digits, {**TRAIN_KEYS, "epochs": 50, "lr": 1e-7, "patience": 2}, seed=0)
    assert trained.epochs < 50


def test_diverging_loss_fails_the_candidate(digits):
    with pytest.raises(CandidateFailed, match="train: loss is (nan|inf)"):
        train(_mlp(digits), digits, {**TRAIN_KEYS, "optimizer": "sgd", "lr": 1e12, "epochs": 3}, seed=0)
