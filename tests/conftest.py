"""Shared fixtures: small spaces and profiles written to a temporary directory."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

#: A small MobileNet (2 stages, SE, hardswish) the compression tests compress.
SMALL_MOBILENET = {"stages": 2, "depth": 1, "width_mult": 1.0, "kernel": 3, "expand": 4, "se": True, "act": "hardswish"}
SMALL_MOBILENET |= {"stem_channels": 16, "dropout": 0.0}

#: The objectives the leaderboard tests rank on.
BOARD_OBJECTIVES = {"accuracy": "max", "latency_ms": "min"}


def board_row(i: int, acc: float, lat: float | None, status: str = "ok") -> dict:
    """A leaderboard row of trial ``t<i>`` (validation and test accuracy ``acc``, latency ``lat`` ms)."""
    return {
        "trial_id": f"t{i:03d}",
        "status": status,
        "val_accuracy": acc,
        "accuracy": acc,
        "latency_ms": lat,
        "started_at": f"2026-01-01T00:00:{i:02d}",
        "arch.width": i,
    }


@pytest.fixture
def write_yaml(tmp_path: Path):
    """Write a YAML text (dedented) to a file in tmp_path and return its path."""

    def _write(text: str, name: str = "f.yaml") -> Path:
        p = tmp_path / name
        p.write_text(textwrap.dedent(text))
        return p

    return _write


@pytest.fixture
def repo() -> Path:
    return REPO


def search_args(results: Path, name: str, *extra: str, trials: int = 3, device: str = "host_fast") -> list[str]:
    """``autotune search`` arguments for the tiny test space on a test profile (fixtures/)."""
    fixtures = REPO / "tests" / "fixtures"
    return [
        "search",
        "--space", str(fixtures / "tiny_cnn.yaml"),
        "--device", str(fixtures / f"{device}.yaml"),
        "--trials", str(trials),
        "--name", name,
        "--results-dir", str(results),
        *extra,
    ]  # fmt: skip
