"""Where chunks of tuning run: this machine, one chunk at a time under the database's tuning lock
(``LocalNodes``), or every node of a Ray cluster, one chunk per node holding all its CPUs
(``RayNodes``). Both give back results in the order they finish."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Sequence
from typing import Any

from autotune.config.device_profile import DeviceProfile
from autotune.tuning.chunk import Chunk, ChunkResult, run_chunk
from autotune.tuning.database import TuningDatabase

__all__ = ["LocalNodes", "RayNodes"]

log = logging.getLogger(__name__)


class LocalNodes:
    """This machine as the one node: a chunk runs when it is submitted, holding the database's
    tuning lock (so no candidate of a search on this machine tunes meanwhile)."""

    def __init__(self, db: TuningDatabase, profile: DeviceProfile) -> None:
        from autotune.task import worker_env

        self.db = db
        self.names: Sequence[str] = (socket.gethostname(),)
        self._done: list[tuple[int, ChunkResult | BaseException]] = []
        # MetaSchedule's runner workers measure with the profile's threads, as a search's workers do
        env = worker_env(profile)
        self._saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)

    def submit(self, node: int, chunk: Chunk) -> None:
        try:
            with self.db.tuning():
                self._done.append((node, run_chunk(chunk)))
        except Exception as err:  # TVMError in a chunk: reported with the chunk, the tuning goes on
            self._done.append((node, err))

    def wait(self) -> tuple[int, ChunkResult | BaseException]:
        return self._done.pop(0)

    def close(self) -> None:
        for k, v in self._saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class RayNodes:
    """The alive nodes of the Ray cluster at ``address`` (``auto``, ``ray://…``, host:port). Each
    chunk is pinned to its node and takes all the node's CPUs, so measurements there are quiet."""

    def __init__(self, address: str, profile: DeviceProfile) -> None:
        import ray

        from autotune.search.driver import start_ray

        start_ray(address, profile)
        nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) >= 1]
        self._nodes = [(n["NodeID"], int(n["Resources"]["CPU"])) for n in nodes]
        self.names = [f"{n['NodeManagerAddress']}:{n['NodeID'][:8]}" for n in nodes]
        self._remote = ray.remote(run_chunk)
        self._running: dict[Any, int] = {}

    def submit(self, node: int, chunk: Chunk) -> None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        node_id, cpus = self._nodes[node]
        strategy = NodeAffinitySchedulingStrategy(node_id=node_id, soft=False)
        ref = self._remote.options(num_cpus=cpus, scheduling_strategy=strategy, max_retries=0).remote(chunk)
        self._running[ref] = node

    def wait(self) -> tuple[int, ChunkResult | BaseException]:
        import ray

        (ref,), _ = ray.wait(list(self._running), num_returns=1)
        node = self._running.pop(ref)
        try:
            return node, ray.get(ref)
        except Exception as err:  # a node lost or a TVMError on the node: reported, the tuning goes on
            return node, err

    def close(self) -> None:
        import ray

        ray.shutdown()
