"""The fp32 compute peak of this machine's CPU, measured with an FMA-bound kernel: a true upper bound
for any fp32 kernel (a BLAS matrix multiply reaches only part of it; a tuned TVM kernel can beat the
BLAS), so ``roofline_fraction`` and ``autotune profile``'s fraction of peak stay at or below 1.

The kernel keeps ``ACCUMULATORS`` independent vector accumulators of the target's width in registers
(enough to cover the FMA latency on two pipes) and runs ``ITERATIONS`` fused multiply-adds on each,
one copy per thread (``T.parallel``); FLOPs = 2 x lanes x accumulators x iterations x threads."""

from __future__ import annotations

from typing import Any

__all__ = ["ACCUMULATORS", "ITERATIONS", "fma_peak_gflops", "host_target"]

ACCUMULATORS = 12
ITERATIONS = 4096


def host_target(threads: int) -> Any:
    """This machine's LLVM target (its CPU name) with ``threads`` cores."""
    import tvm
    from tvm.target import codegen

    return tvm.target.Target({"kind": "llvm", "mcpu": codegen.llvm_get_system_cpu(), "num-cores": threads})


def _lanes(target: Any) -> int:
    from tvm.target import codegen

    for feature, lanes in (("avx512f", 16), ("avx2", 8), ("avx", 8)):
        if codegen.target_has_features(feature, target):
            return lanes
    return 4  # NEON, SSE


def fma_peak_gflops(threads: int, *, number: int = 50, repeat: int = 5, target: Any = None) -> float:
    """Best fp32 GFLOP/s of the FMA-bound kernel on ``threads`` threads of this machine's runtime pool
    (``TVM_NUM_THREADS`` must allow them)."""
    import numpy as np
    import tvm
    from tvm.script import tirx as T

    target = target or host_target(threads)
    lanes, acc_n, iters, p = _lanes(target), ACCUMULATORS, ITERATIONS, threads
    n = lanes * acc_n

    @T.prim_func
    def fma(a: T.Buffer((p * n,), "float32"), out: T.Buffer((p * n,), "float32")) -> None:
        T.func_attr({"global_symbol": "main", "tir.noalias": True})
        for t in T.parallel(p):
            acc = T.decl_buffer((n,), "float32", scope="local")
            for i in T.serial(n):
                acc[i] = a[t * n + i]
            for _k in T.serial(iters):
                for j in T.unroll(acc_n):
                    for v in T.vectorized(lanes):
                        acc[j * lanes + v] = acc[j * lanes + v] * T.float32(0.9999) + T.float32(0.0001)
            for i in T.serial(n):
                out[t * n + i] = acc[i]

    lib = tvm.compile(tvm.IRModule({"main": fma}), target=target).jit()
    dev = tvm.cpu()
    a = tvm.runtime.tensor(np.ones(p * n, "float32"), dev)
    out = tvm.runtime.tensor(np.zeros(p * n, "float32"), dev)
    results = lib.time_evaluator("main", dev, number=number, repeat=repeat)(a, out).results
    return 2.0 * p * n * iters / min(results) / 1e9
