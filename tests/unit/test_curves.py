"""Training curves: one TensorBoard point per epoch and tag (read back with TensorBoard's own reader),
curves.json beside them, and the report's charts."""

from __future__ import annotations

import pytest
import torch

from autotune.config.search_space import TRAIN_KEYS
from autotune.curves import TAGS, Curves, read_curves
from autotune.data import load_data
from autotune.models import MODEL_FAMILIES, build_model
from autotune.reporting import write_report


def _events(directory):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(directory))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_training_writes_one_point_per_epoch_for_each_tag(tmp_path):
    from autotune.train import train

    data = load_data("digits", val=0.2, test=0.2, seed=0)
    torch.manual_seed(0)
    model = build_model(MODEL_FAMILIES.get("mlp"), {"layers": 1, "width": 16}, data.input_shape, 10)
    curves = Curves(tmp_path / "tb" / "t1")
    settings = {**TRAIN_KEYS, "optimizer": "adam", "lr": 0.01, "epochs": 3, "batch_size": 64, "schedule": "cosine"}
    train(model, data, settings, seed=0, on_curve=curves.add)
    curves.close()
    events = _events(tmp_path / "tb" / "t1")
    assert set(events) == set(TAGS.values())
    for tag, points in events.items():
        assert [s for s, _ in points] == [1, 2, 3], tag
    lrs = [v for _, v in events["lr"]]
    assert lrs[0] == pytest.approx(0.01) and lrs[2] < lrs[0]  # the cosine schedule, as trained
    stored = read_curves(tmp_path / "tb" / "t1")
    assert [p["epoch"] for p in stored] == [1, 2, 3]
    assert [pytest.approx(p["val_accuracy"]) for p in stored] == [v for _, v in events["accuracy/val"]]
    assert stored[-1]["train_loss"] < stored[0]["train_loss"]


def test_the_report_draws_the_curves_of_the_top_trials(tmp_path):
    curves = Curves(tmp_path / "tensorboard" / "a")
    for e in (1, 2):
        curves.add({"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.2 / e, "val_accuracy": 0.5 + e / 10, "lr": 0.01})
    curves.close()
    rows = [
        {"trial_id": "a", "status": "ok", "pareto_rank": 1, "val_accuracy": 0.7, "latency_ms": 1.0},
        {"trial_id": "b", "status": "ok", "pareto_rank": 2, "val_accuracy": 0.6, "latency_ms": 2.0},
    ]
    html = write_report(tmp_path, rows, objectives={"accuracy": "max", "latency_ms": "min"}, title="t",
                        facts={}).read_text()  # fmt: skip
    assert 'id="curves-a"' in html and 'id="curves-b"' not in html  # b has no curves
    page_a = html[html.index('id="trial-a"') : html.index('id="trial-b"')]
    assert page_a.count("<polyline") == 3 and html.count("<polyline") == 6  # a's page and the top section
    assert "tensorboard --logdir" in html
    assert read_curves(tmp_path / "nowhere") == []
