"""The user's own data from files, no code: ``task.data: {npz: …}``, ``{images: …}`` or ``{csv: …, label: …}``.

Each reader returns the arrays and the split rules of ``autotune.data`` apply (stratified, seeded by
``task.split``; the test split is never selected on). Bad input is a ``UserError`` naming the file,
the key (``task.data.npz`` …) and what is wrong, raised when the data is loaded: by pre-flight,
before any trial. Decoded image folders are cached (``cache_dir``: the run's ``cache/``), so a run's
workers decode once between them.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from autotune.config.search_space import DataFiles
from autotune.errors import UserError

__all__ = ["IMAGE_SUFFIXES", "read_files"]

#: Files read as images in a class folder (others are ignored).
IMAGE_SUFFIXES = frozenset((".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"))
_SPLIT_KEYS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")


def _fail(files: DataFiles, problem: str, hint: str | None = None) -> UserError:
    return UserError(problem, file=files.path, key=f"task.data.{files.kind}", hint=hint)


def _labels(files: DataFiles, y: np.ndarray, what: str) -> np.ndarray:
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or (y.size and y.min() < 0):
        raise _fail(files, f"{what} must be one non-negative integer class per sample (got {y.dtype}, shape {y.shape})")
    return y.astype(np.int64)


def _npz(files: DataFiles) -> tuple[np.ndarray, np.ndarray] | dict[str, np.ndarray]:
    try:
        with np.load(files.path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as err:
        raise _fail(files, f"cannot read the .npz file: {err}") from None
    if set(_SPLIT_KEYS) <= set(arrays):
        out = {k: arrays[k] for k in _SPLIT_KEYS}
        for part in ("train", "val", "test"):
            x, y = out[f"x_{part}"], out[f"y_{part}"]
            out[f"y_{part}"] = _labels(files, y, f"y_{part}")
            if len(x) != len(y) or not len(x):
                raise _fail(files, f"x_{part} and y_{part} must hold the same number (> 0) of samples")
        return out
    if "x" not in arrays or "y" not in arrays:
        raise _fail(files, f"the .npz file needs arrays x and y, or {', '.join(_SPLIT_KEYS)}; it has "
                    f"{', '.join(sorted(arrays)) or 'none'}")  # fmt: skip
    x, y = arrays["x"], _labels(files, arrays["y"], "y")
    if len(x) != len(y):
        raise _fail(files, f"x has {len(x)} samples and y {len(y)}")
    return x, y


def _csv(files: DataFiles) -> tuple[np.ndarray, np.ndarray, list[str]]:
    try:
        with open(files.path, newline="") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError) as err:
        raise _fail(files, f"cannot read the CSV file: {err}") from None
    if len(rows) < 2:
        raise _fail(files, "the CSV file needs a header and at least one row")
    header = [h.strip() for h in rows[0]]
    if files.label not in header:
        raise UserError(
            f"the label column {files.label!r} is not in the CSV's header ({', '.join(header)})",
            file=files.path,
            key="task.data.label",
        )
    li = header.index(files.label)
    feats = [i for i in range(len(header)) if i != li]
    if not feats:
        raise _fail(files, "the CSV file has no feature column besides the label")
    x = np.empty((len(rows) - 1, len(feats)), dtype=np.float32)
    labels = []
    for r, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise _fail(files, f"line {r} has {len(row)} fields; the header has {len(header)}")
        for j, i in enumerate(feats):
            try:
                x[r - 2, j] = float(row[i])
            except ValueError:
                raise _fail(
                    files, f"column {header[i]!r} is not numeric: {row[i]!r} on line {r}",
                    hint="encode categorical features as numbers, or drop the column",
                ) from None  # fmt: skip
        labels.append(row[li].strip())

    def order(v: str) -> tuple[bool, int, str]:  # integer labels in numeric order, then the others
        number = v.lstrip("-").isdigit()
        return (not number, int(v) if number else 0, v)

    classes = sorted(set(labels), key=order)
    index = {c: k for k, c in enumerate(classes)}
    return x, np.array([index[v] for v in labels], dtype=np.int64), classes


def _image_files(files: DataFiles) -> dict[str, list[Path]]:
    root = Path(files.path)
    if not root.is_dir():
        raise _fail(files, "the image folder does not exist" if not root.exists() else "not a folder")
    classes = {d.name: sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
               for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")}  # fmt: skip
    classes = {k: v for k, v in classes.items() if v}
    if len(classes) < 2:
        raise _fail(
            files, f"the image folder needs one sub-folder of images per class, at least 2; it has {len(classes)}",
            hint=f"e.g. {root}/cat/1.png, {root}/dog/1.png",
        )  # fmt: skip
    return classes


def _decode(files: DataFiles, classes: dict[str, list[Path]], shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image, UnidentifiedImageError

    channels, height, width = shape
    mode = {1: "L", 3: "RGB"}[channels]
    xs, ys, bad = [], [], []
    for k, paths in enumerate(classes.values()):
        for p in paths:
            try:
                with Image.open(p) as im:
                    im = im.convert(mode).resize((width, height), Image.Resampling.BILINEAR)
                    a = np.asarray(im, dtype=np.float32) / 255.0
            except (OSError, UnidentifiedImageError, ValueError):
                bad.append(str(p.relative_to(files.path)))
                continue
            xs.append(a[None] if channels == 1 else a.transpose(2, 0, 1))
            ys.append(k)
    if bad:
        first = ", ".join(bad[:3]) + (", ..." if len(bad) > 3 else "")
        raise _fail(files, f"{len(bad)} image(s) cannot be decoded: {first}", hint="remove or replace them")
    return np.stack(xs), np.array(ys, dtype=np.int64)


def _image_key(files: DataFiles, classes: dict[str, list[Path]], shape: tuple[int, ...]) -> str:
    stats = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for paths in classes.values() for p in paths]
    return hashlib.sha256(json.dumps([str(Path(files.path).resolve()), shape, stats]).encode()).hexdigest()[:16]


def _images(
    files: DataFiles, shape: list[int] | None, cache_dir: Path | None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    if not shape or len(shape) != 3 or shape[0] not in (1, 3):
        raise UserError("an image folder needs task.input_shape [C, H, W] with C 1 (grey) or 3 (RGB)",
                        key="task.input_shape", hint="e.g. [3, 32, 32]")  # fmt: skip
    classes = _image_files(files)
    names = list(classes)
    cached = cache_dir / f"images-{_image_key(files, classes, tuple(shape))}.npz" if cache_dir else None
    if cached is not None and cached.exists():
        with np.load(cached) as z:
            return z["x"], z["y"], names
    x, y = _decode(files, classes, tuple(shape))
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, x=x, y=y)
        os.replace(tmp, cached)  # workers that decode at the same time write the same arrays
    return x, y, names


def read_files(files: DataFiles, *, input_shape: list[int] | None, cache_dir: Path | None = None) -> dict[str, Any]:
    """Read the files: ``{"x", "y"}`` (to split) or the six pre-split arrays, plus ``classes`` (names,
    when the source has them).

    Raises:
        UserError: the file, the key and what is wrong (a missing file, a folder with one class,
            images that cannot be decoded, a label column that is not there, non-numeric features).
    """
    if files.kind != "images" and not Path(files.path).is_file():
        raise _fail(files, "the file does not exist" if not Path(files.path).exists() else "not a file")
    if files.kind == "npz":
        got = _npz(files)
        return got if isinstance(got, dict) else {"x": got[0], "y": got[1]}
    if files.kind == "csv":
        x, y, classes = _csv(files)
    else:
        x, y, classes = _images(files, input_shape, cache_dir)
    return {"x": x, "y": y, "classes": classes}
