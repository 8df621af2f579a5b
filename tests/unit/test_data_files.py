"""The user's data from files (``task.data: {npz|images|csv: ...}``): each source loads and splits like
digits; every kind of bad input names the file and the key."""

from __future__ import annotations

import numpy as np
import pytest

from autotune.config.search_space import DataFiles
from autotune.data import load_data
from autotune.errors import UserError
from autotune.validate import load_space

SPLIT = {"val": 0.2, "test": 0.2, "seed": 0}


def _blobs(n=60, features=4, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = (rng.normal(size=(n, features)) + y[:, None] * 3.0).astype(np.float32)
    return x, y


def _images(root, classes=("circle", "square"), per_class=6, size=12, broken=0):
    from PIL import Image

    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            a = np.zeros((size, size, 3), dtype=np.uint8)
            a[2 + i % 3 : 8, 2 : 8 + k * 2, k] = 255
            Image.fromarray(a).save(root / name / f"{i}.png")
    for i in range(broken):
        (root / classes[0] / f"broken{i}.png").write_bytes(b"not a png")
    return root


def test_npz_with_x_and_y_is_split_stratified(tmp_path):
    x, y = _blobs()
    np.savez(tmp_path / "d.npz", x=x, y=y)
    d = load_data(DataFiles(npz=str(tmp_path / "d.npz")), **SPLIT)
    assert d.num_classes == 3 and d.input_shape == (4,)
    assert len(d.x_train) + len(d.x_val) + len(d.x_test) == 60 and len(d.x_test) == 12
    assert sorted(np.bincount(d.y_test)) == [4, 4, 4]  # stratified
    again = load_data(DataFiles(npz=str(tmp_path / "d.npz")), **SPLIT)
    assert np.array_equal(again.x_test, d.x_test)  # seeded


def test_npz_pre_split_is_kept(tmp_path):
    x, y = _blobs()
    np.savez(tmp_path / "d.npz", x_train=x[:40], y_train=y[:40], x_val=x[40:50], y_val=y[40:50],
             x_test=x[50:], y_test=y[50:])  # fmt: skip
    d = load_data(DataFiles(npz=str(tmp_path / "d.npz")), **SPLIT)
    assert np.array_equal(d.x_test, x[50:]) and np.array_equal(d.y_val, y[40:50])


def test_csv_features_are_standardised_and_labels_mapped(tmp_path):
    x, y = _blobs()
    names = np.array(["low", "mid", "high"])[y]
    rows = ["a,b,kind,c,d"] + [f"{r[0]},{r[1]},{n},{r[2]},{r[3]}" for r, n in zip(x, names, strict=True)]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    d = load_data(DataFiles(csv=str(tmp_path / "t.csv"), label="kind"), **SPLIT)
    assert d.input_shape == (4,) and d.num_classes == 3
    assert np.allclose(d.x_train.mean(axis=0), 0, atol=1e-5) and np.allclose(d.x_train.std(axis=0), 1, atol=1e-3)


def test_an_image_folder_is_decoded_resized_and_cached(tmp_path):
    root = _images(tmp_path / "imgs")
    files, cache = DataFiles(images=str(root)), tmp_path / "cache"
    d = load_data(files, input_shape=[3, 8, 8], cache_dir=cache, **SPLIT)
    assert d.input_shape == (3, 8, 8) and d.num_classes == 2 and len(d.y_train) + len(d.y_val) + len(d.y_test) == 12
    (cached,) = cache.glob("images-*.npz")
    grey = load_data(files, input_shape=[1, 8, 8], cache_dir=cache, **SPLIT)  # another shape: another cache
    assert grey.input_shape == (1, 8, 8) and len(list(cache.glob("images-*.npz"))) == 2
    stamp = cached.stat().st_mtime_ns
    again = load_data(files, input_shape=[3, 8, 8], cache_dir=cache, **SPLIT)
    assert np.allclose(again.x_test, d.x_test, atol=1e-6) and cached.stat().st_mtime_ns == stamp  # read, not decoded


@pytest.mark.parametrize(
    ("make", "key", "problem"),
    [
        (lambda p: np.savez(p / "d.npz", a=np.zeros(3)), "task.data.npz", "needs arrays x and y"),
        (lambda p: np.savez(p / "d.npz", x=np.zeros((4, 2)), y=np.array([0.5, 1, 0, 1])), "task.data.npz",
         "one non-negative integer class per sample"),
        (lambda p: np.savez(p / "d.npz", x=np.zeros((4, 2)), y=np.zeros(4, dtype=int)), "task.data.npz",
         "single class"),
        (lambda p: (p / "t.csv").write_text("a,b,y\n1,2,0\n"), "task.data.label", "'kind' is not in the CSV"),
        (lambda p: (p / "t.csv").write_text("a,b,kind\n1,x,0\n2,3,1\n"), "task.data.csv",
         "column 'b' is not numeric: 'x' on line 2"),
        (lambda p: _images(p / "imgs", classes=("only",)), "task.data.images", "at least 2; it has 1"),
        (lambda p: _images(p / "imgs", broken=4), "task.data.images",
         "4 image(s) cannot be decoded: circle/broken0.png, circle/broken1.png, circle/broken2.png, ..."),
    ],
)  # fmt: skip
def test_bad_data_names_the_file_and_the_key(tmp_path, make, key, problem):
    make(tmp_path)
    source = key.split(".")[-1]
    if source == "label":
        files = DataFiles(csv=str(tmp_path / "t.csv"), label="kind")
    elif source == "csv":
        files = DataFiles(csv=str(tmp_path / "t.csv"), label="kind")
    elif source == "images":
        files = DataFiles(images=str(tmp_path / "imgs"))
    else:
        files = DataFiles(npz=str(tmp_path / "d.npz"))
    with pytest.raises(UserError) as err:
        load_data(files, input_shape=[3, 8, 8] if source == "images" else None, **SPLIT)
    assert err.value.key == key and problem in err.value.problem and err.value.file == files.path


def test_the_space_check_finds_a_missing_path_before_any_work(write_yaml, tmp_path):
    space = write_yaml(
        f"task: {{data: {{images: {tmp_path / 'nowhere'}}}, model: mobilenet, input_shape: [3, 8, 8]}}\n"
        "arch: {stages: 1}\ntrain: {epochs: 1}\nobjectives: {accuracy: max}\n"
    )
    with pytest.raises(UserError, match="no such folder") as err:
        load_space(space)
    assert err.value.file == str(space) and err.value.key == "task.data.images"
    (tmp_path / "nowhere").mkdir()
    no_shape = write_yaml(
        f"task: {{data: {{images: {tmp_path / 'nowhere'}}}, model: mobilenet}}\n"
        "arch: {stages: 1}\ntrain: {epochs: 1}\nobjectives: {accuracy: max}\n",
        "s2.yaml",
    )
    with pytest.raises(UserError, match="needs an input shape") as err:
        load_space(no_shape)
    assert err.value.key == "task.input_shape"
