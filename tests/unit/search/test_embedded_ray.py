"""The embedded Ray is the run's own, whatever cluster the environment names."""

from __future__ import annotations

import ast
import os
import subprocess
import sys

import pytest
from conftest import REPO

START = """
import ray, autotune
from autotune.search.driver import start_ray
start_ray(None, autotune.load_profile({profile!r}))
print(ray.get_runtime_context().gcs_address)
ray.shutdown()
"""


def test_every_ray_init_names_its_address():
    """Ray's default address joins whatever cluster runs on the machine: under pytest-xdist, another
    test's two-node cluster (CI saw a test fail so)."""
    calls = []
    for path in [*REPO.glob("autotune/**/*.py"), *REPO.glob("tests/**/*.py"), *REPO.glob("bench/*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            func = getattr(node, "func", None)
            if isinstance(func, ast.Attribute) and func.attr == "init" and getattr(func.value, "id", "") == "ray":
                calls.append((path.relative_to(REPO), node))
    assert any(str(p) == "autotune/search/driver.py" for p, _ in calls)  # the search's own start is seen
    assert [f"{p}:{n.lineno}" for p, n in calls if not any(k.arg == "address" for k in n.keywords)] == []


@pytest.mark.slow
@pytest.mark.ray
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
