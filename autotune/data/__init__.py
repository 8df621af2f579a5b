"""Data sets: a registry of loaders, plug-in loaders named ``'pkg.module:load'``, and the user's files.

A loader takes the split settings and returns a ``DataSplits`` of numpy arrays. Everything here
works offline: digits ships inside scikit-learn; shapes is drawn locally (``autotune.data.shapes``);
synthetic data is generated; ``files`` reads
``task.data: {npz: …}``, ``{images: …}`` and ``{csv: …, label: …}``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from autotune.config.search_space import DataFiles
from autotune.errors import UserError
from autotune.plugins import load_plugin
from autotune.registry import Registry

__all__ = ["DATASETS", "DataSplits", "load_data"]


@dataclass(frozen=True)
class DataSplits:
    """Train / validation / held-out test arrays. ``x`` is float32 (N, *input_shape)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    labelled: bool = True  # False for synthetic inputs (latency-only studies)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


Loader = Callable[..., DataSplits]
DATASETS: Registry[Loader] = Registry("data set")


def _split(x: np.ndarray, y: np.ndarray, val: float, test: float, seed: int) -> tuple[np.ndarray, ...]:
    """Stratified train/val/test split, fixed by ``seed``."""
    from sklearn.model_selection import train_test_split

    strat = y if len(np.unique(y)) > 1 else None
    x_rest, x_test, y_rest, y_test = train_test_split(x, y, test_size=test, random_state=seed, stratify=strat)
    strat = y_rest if strat is not None else None
    x_tr, x_val, y_tr, y_val = train_test_split(
        x_rest, y_rest, test_size=val / (1 - test), random_state=seed, stratify=strat
    )
    return x_tr, y_tr, x_val, y_val, x_test, y_test


@DATASETS.register("digits")
def digits(*, val: float, test: float, seed: int, **_: Any) -> DataSplits:
    """scikit-learn's 8x8 handwritten digits (1797 images, 10 classes), scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None, :, :]
    parts = _split(x, d.target.astype(np.int64), val, test, seed)
    return DataSplits(*parts, num_classes=10)


@DATASETS.register("shapes")
def shapes(*, val: float, test: float, seed: int, **_: Any) -> DataSplits:
    """3x32x32 images of ten shape classes drawn locally (``autotune.data.shapes``; 8000 images, the
    same on every machine; ``seed`` picks the split)."""
    from autotune.data.shapes import CLASSES, draw

    x, y = draw(8000, seed=0)
    return DataSplits(*_split(x, y, val, test, seed), num_classes=len(CLASSES))


@DATASETS.register("synthetic")
def synthetic(
    *,
    val: float,
    test: float,
    seed: int,
    input_shape: list[int] | None = None,
    num_classes: int | None = None,
    **_: Any,
) -> DataSplits:
    """Random normal inputs of ``input_shape`` for latency-only studies (no training)."""
    if not input_shape:
        raise UserError("synthetic data needs task.input_shape", key="task.input_shape")
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((64, *input_shape), dtype=np.float32)
    y = rng.integers(0, num_classes or 10, 64)
    return DataSplits(x[:32], y[:32], x[32:48], y[32:48], x[48:], y[48:], num_classes or 10, labelled=False)


def _as_arrays(part: Any, name: str, ref: str) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(part, tuple | list) and len(part) == 2:
        x, y = part
        if isinstance(x, np.ndarray) or hasattr(x, "numpy"):
            return np.asarray(x, dtype=np.float32), np.asarray(y, dtype=np.int64)
    try:
        import torch.utils.data as tud

        if isinstance(part, tud.Dataset):
            xs, ys = zip(*[part[i] for i in range(len(part))], strict=True)  # type: ignore[arg-type]
            return np.stack([np.asarray(x, dtype=np.float32) for x in xs]), np.asarray(ys, dtype=np.int64)
    except (TypeError, ValueError) as err:
        raise UserError(f"{name} split could not be read: {err}", key="task.data", hint=ref) from None
    raise UserError(
        f"load() must return (train, val, test), each a torch Dataset or a numpy (X, y) pair; "
        f"the {name} split is {type(part).__name__}",
        key="task.data",
    )


def _plugin(ref: str, *, seed: int, **_: Any) -> DataSplits:
    fn = load_plugin(ref, key="task.data")
    if not callable(fn):
        raise UserError(f"plug-in {ref!r} is not a function", key="task.data")
    parts = fn(seed)
    if not isinstance(parts, tuple | list) or len(parts) != 3:
        raise UserError("load(seed) must return a (train, val, test) tuple", key="task.data", hint=ref)
    arrays = [_as_arrays(p, n, ref) for p, n in zip(parts, ("train", "val", "test"), strict=True)]
    num_classes = int(max(int(a[1].max()) for a in arrays) + 1)
    return DataSplits(*(v for pair in arrays for v in pair), num_classes=num_classes)


def _standardise(parts: list[np.ndarray]) -> list[np.ndarray]:
    """Scale x_train, x_val, x_test (every other entry) by the training split's mean and std per
    channel (images) or feature (tables)."""
    x_train = parts[0]
    axes = tuple(i for i in range(x_train.ndim) if i != 1)
    mean = x_train.mean(axis=axes, keepdims=True)
    std = x_train.std(axis=axes, keepdims=True) + 1e-6
    return [((p - mean) / std).astype(np.float32) if i % 2 == 0 else p for i, p in enumerate(parts)]


def _files(
    files: DataFiles,
    *,
    val: float,
    test: float,
    seed: int,
    input_shape: list[int] | None = None,
    num_classes: int | None = None,
    cache_dir: Path | None = None,
    **_: Any,
) -> DataSplits:
    """``task.data`` given as files (``autotune.data.files``), split as digits is."""
    from autotune.data.files import read_files

    got = read_files(files, input_shape=input_shape, cache_dir=cache_dir)
    key = f"task.data.{files.kind}"
    if "x" in got:
        try:
            parts = list(_split(np.asarray(got["x"], dtype=np.float32), got["y"], val, test, seed))
        except ValueError as err:
            raise UserError(f"the data cannot be split: {err}", file=files.path, key=key,
                            hint="each class needs a few samples in every split") from None  # fmt: skip
    else:
        parts = [np.asarray(got[k], dtype=np.float32) if k.startswith("x") else got[k] for k in got]
    if files.kind != "npz":
        parts = _standardise(parts)
    shape = parts[0].shape[1:]
    if files.kind != "images" and input_shape and tuple(input_shape) != shape:
        raise UserError(f"the samples have shape {list(shape)}, not task.input_shape {list(input_shape)}",
                        file=files.path, key="task.input_shape")  # fmt: skip
    if any(p.shape[1:] != shape for p in parts[::2]):
        raise UserError("x_train, x_val and x_test must have the same sample shape", file=files.path, key=key)
    found = int(max(int(y.max()) for y in parts[1::2]) + 1)
    classes = num_classes or len(got.get("classes") or ()) or found
    if classes < 2 or found > classes:
        raise UserError(f"{found} classes found, task.num_classes is {classes}" if found > classes
                        else "the data has a single class", file=files.path, key=key)  # fmt: skip
    return DataSplits(*parts, num_classes=classes)


def load_data(task_data: str | DataFiles, *, cache_dir: Path | None = None, **kwargs: Any) -> DataSplits:
    """Load a registered data set, a plug-in (``'pkg.module:load'``, imported by
    ``autotune.plugins.load_plugin``) or files (``DataFiles``; decoded images cached in ``cache_dir``)."""
    if isinstance(task_data, DataFiles):
        return _files(task_data, cache_dir=cache_dir, **kwargs)
    if ":" in task_data:
        return _plugin(task_data, **kwargs)
    return DATASETS.get(task_data, key="task.data")(**kwargs)
