"""The user's own data from files, through a real 2-trial search: an .npz, a CSV and an image folder."""

from __future__ import annotations

import numpy as np
import pytest

import autotune

pytestmark = [pytest.mark.slow, pytest.mark.tvm, pytest.mark.ray]

MLP = "model: mlp}\narch: {layers: 1, width: {type: int, low: 16, high: 32}}\n"
TRAIN = "train: {optimizer: adam, lr: 0.03, epochs: 8, batch_size: 16}\nobjectives: {accuracy: max, latency_ms: min}\n"


def _blobs(n=150, features=6, classes=3):
    rng = np.random.default_rng(0)
    y = np.arange(n) % classes
    return (rng.normal(size=(n, features)) + y[:, None] * 3.0).astype(np.float32), y


def _space(tmp_path, source: str) -> str:
    if source == "npz":
        x, y = _blobs()
        np.savez(tmp_path / "d.npz", x=x, y=y)
        return f"task: {{data: {{npz: {tmp_path / 'd.npz'}}}, " + MLP + TRAIN
    if source == "csv":
        x, y = _blobs()
        body = [",".join(f"{v:.4f}" for v in r) + f",c{k}" for r, k in zip(x, y, strict=True)]
        lines = ["f0,f1,f2,f3,f4,f5,label", *body]
        (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
        return f"task: {{data: {{csv: {tmp_path / 'd.csv'}, label: label}}, " + MLP + TRAIN
    from PIL import Image

    rng = np.random.default_rng(0)
    for k, name in enumerate(("red", "green")):
        (tmp_path / "imgs" / name).mkdir(parents=True)
        for i in range(30):
            a = rng.integers(0, 60, (12, 12, 3), dtype=np.uint8)
            a[..., k] += 150
            Image.fromarray(a).save(tmp_path / "imgs" / name / f"{i}.png")
    return (
        f"task: {{data: {{images: {tmp_path / 'imgs'}}}, model: mobilenet, input_shape: [3, 12, 12]}}\n"
        "arch: {stages: 1, width_mult: {type: categorical, choices: [0.5, 0.75]}, expand: 2, se: false}\n" + TRAIN
    )


@pytest.mark.parametrize("source", ["npz", "csv", "images"])
def test_a_search_on_files(tmp_path, write_yaml, repo, source):
    space = write_yaml(_space(tmp_path, source))
    rows = autotune.search(space, repo / "tests/fixtures/host_fast.yaml", name=source, results_dir=tmp_path / "r",
                           trials=2, concurrency=1, early_stopping=False)  # fmt: skip
    assert [r["status"] for r in rows] == ["ok", "ok"], [r.get("error") for r in rows]
    assert all(r["accuracy"] is not None and r["accuracy"] > 0.5 for r in rows)  # learnable, held-out
    if source == "images":  # decoded once by the pre-flight, read from the run's cache by the workers
        assert len(list((tmp_path / "r" / source / "cache").glob("images-*.npz"))) == 1
    if source == "npz":  # each trial's curves: TensorBoard events (one point per epoch) and the report's charts
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        for r in rows:
            acc = EventAccumulator(str(tmp_path / "r" / source / "tensorboard" / r["trial_id"]))
            acc.Reload()
            assert [e.step for e in acc.Scalars("accuracy/val")] == list(range(1, 9))
            assert [e.step for e in acc.Scalars("loss/train")] == list(range(1, 9))
        report = (tmp_path / "r" / source / "report.html").read_text()
        assert all(f'id="curves-{r["trial_id"]}"' in report for r in rows)
