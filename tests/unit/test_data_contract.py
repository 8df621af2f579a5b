"""Contract over the data-set registry (``autotune.data.DATASETS``): every registered data set loads
offline at a tiny size, with consistent shapes and classes, and splits the same way for a seed."""

from __future__ import annotations

import numpy as np
import pytest

from autotune.data import DATASETS, DataSplits, load_data
from autotune.errors import UserError

#: Per data set: the loader's arguments for a tiny load, and what it must give back.
CONTRACT = {
    "digits": {"kwargs": {}, "input_shape": (1, 8, 8), "num_classes": 10, "labelled": True},
    "shapes": {"kwargs": {}, "input_shape": (3, 32, 32), "num_classes": 10, "labelled": True},
    "synthetic": {
        "kwargs": {"input_shape": [3, 4, 4], "num_classes": 3},
        "input_shape": (3, 4, 4),
        "num_classes": 3,
        "labelled": False,
    },
}


def _load(name: str, seed: int) -> DataSplits:
    return load_data(name, val=0.2, test=0.2, seed=seed, **CONTRACT[name]["kwargs"])


def test_every_data_set_has_a_contract():
    assert set(DATASETS.names()) == set(CONTRACT)


@pytest.mark.parametrize("name", DATASETS.names())
def test_data_set_loads_with_consistent_shapes_and_classes(name):
    want = CONTRACT[name]
    d = _load(name, seed=0)
    assert d.input_shape == want["input_shape"] and d.num_classes == want["num_classes"]
    assert d.labelled is want["labelled"]
    splits = [(d.x_train, d.y_train), (d.x_val, d.y_val), (d.x_test, d.y_test)]
    for x, y in splits:
        assert len(x) == len(y) > 0
        assert x.dtype == np.float32 and x.shape[1:] == want["input_shape"] and np.isfinite(x).all()
        assert np.issubdtype(y.dtype, np.integer) and y.min() >= 0 and y.max() < d.num_classes
    assert len(d.x_train) > len(d.x_val) and len(d.x_train) > len(d.x_test)


@pytest.mark.parametrize("name", DATASETS.names())
def test_data_set_split_is_fixed_by_the_seed(name):
    a, b, other = _load(name, seed=3), _load(name, seed=3), _load(name, seed=4)
    for field in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.x_train, other.x_train)


def test_digits_splits_are_disjoint_and_stratified():
    d = _load("digits", seed=0)
    assert len(d.x_train) + len(d.x_val) + len(d.x_test) == 1797
    rows = {x.tobytes() for x in d.x_train}
    assert not any(x.tobytes() in rows for x in d.x_test)
    assert set(np.unique(d.y_val)) == set(range(10)) == set(np.unique(d.y_test))


def test_synthetic_needs_an_input_shape():
    with pytest.raises(UserError, match="input_shape") as err:
        load_data("synthetic", val=0.2, test=0.2, seed=0)
    assert err.value.key == "task.input_shape"


def test_unknown_data_set_names_the_key_and_a_close_name():
    with pytest.raises(UserError, match="unknown data set") as err:
        load_data("digit", val=0.2, test=0.2, seed=0)
    assert err.value.key == "task.data" and "digits" in (err.value.hint or "")


def test_shapes_classes_are_balanced_and_distinct():
    from autotune.data.shapes import CLASSES, SIZE, _masks

    d = _load("shapes", seed=0)
    counts = np.bincount(np.concatenate([d.y_train, d.y_val, d.y_test]), minlength=len(CLASSES))
    assert counts.min() == counts.max() == 800
    # every class at one pose: a non-empty shape, and no two classes draw the same pixels
    grid = (np.arange(SIZE, dtype=np.float32) + 0.5) / SIZE * 2 - 1
    ux = np.broadcast_to(grid[None, None, :], (len(CLASSES), SIZE, SIZE)) / 0.6
    uy = np.broadcast_to(grid[None, :, None], (len(CLASSES), SIZE, SIZE)) / 0.6
    masks = _masks(ux, uy, np.arange(len(CLASSES)))
    assert all(m.sum() > 20 for m in masks)
    flat = {m.tobytes() for m in masks}
    assert len(flat) == len(CLASSES)
