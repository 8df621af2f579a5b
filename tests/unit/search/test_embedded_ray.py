"""The embedded Ray is the run's own, whatever cluster the environment names."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import REPO

pytestmark = [pytest.mark.slow, pytest.mark.ray]

START = """
import ray, autotune
from autotune.search.driver import start_ray
start_ray(None, autotune.load_profile({profile!r}))
print(ray.get_runtime_context().gcs_address)
ray.shutdown()
"""


def test_the_embedded_ray_never_joins_the_cluster_ray_address_names(tmp_path):
    # Ray's default (address=None) joins RAY_ADDRESS, or the last cluster 'ray start' started here:
    # a run that joined another cluster would be lost when that one stops
    profile = REPO / "tests" / "fixtures" / "host_fast.yaml"
    env = {**os.environ, "RAY_ADDRESS": "127.0.0.1:9"}  # a cluster nobody runs
    done = subprocess.run(
        [sys.executable, "-c", START.format(profile=str(profile))],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    address = done.stdout.strip().splitlines()[-1]
    assert address.rsplit(":", 1)[1] != "9" and int(address.rsplit(":", 1)[1]) > 0
