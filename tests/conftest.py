"""Shared fixtures: small spaces and profiles written to a temporary directory."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


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
