"""Paired timing: a candidate timed in rounds interleaved with a fixed reference network.

On a shared cloud VM the CPU's speed changes from one second to the next (what else runs on the
host), so a median over one short window is precise but not repeatable. Timing the candidate and a
reference alternately, round by round, and taking the median of the per-round ratios cancels what
both see: the randomized multiple interleaved trials of Abedi & Brecht (ICPE 2017). Measured on an
AVX2 Zen 3 VM (``bench/repeatability.py``): a candidate's latency as the runner times it moved
1.5x (max / min, median candidate; up to 2x) over timings tens of seconds apart, its ratio to a
small convolutional reference 1.07x; an MLP reference did not follow the convolutions' slow-downs,
so the reference should compute like the candidates (``autotune.reference.reference_model``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from autotune.measure.base import summarize_latency

__all__ = [
    "Pairing",
    "PairedTiming",
    "calls_for",
    "pairing_for",
    "time_against",
    "time_paired",
    "use_pairing",
    "vm_repeat",
]

#: One repeat: ``number`` calls, returning seconds per call.
Repeat = Callable[[int], float]


@dataclass(frozen=True)
class PairedTiming:
    """Candidate / reference over interleaved rounds (ratio: median of the per-round ratios)."""

    ratio: float
    ratio_ci_low: float  # the median's ~95 % interval (``summarize_latency``'s order statistics)
    ratio_ci_high: float
    candidate_ms: float  # median of the candidate's rounds
    reference_ms: float
    rounds: int
    ratios: tuple[float, ...]  # per round, in order


@dataclass(frozen=True)
class Pairing:
    """What the local runner pairs a profile's candidates of one input shape with: the reference
    network's library, the input it runs on, and its calibrated latency (``latency_ms`` of a paired
    candidate = ratio × ``baseline_ms``)."""

    path: str
    inputs: np.ndarray
    baseline_ms: float


_PAIRINGS: dict[tuple[str, tuple[int, ...]], Pairing] = {}


def use_pairing(profile: str, input_shape: tuple[int, ...], pairing: Pairing | None) -> None:
    """Pair this process's timings of ``profile``'s candidates of ``input_shape`` with ``pairing``
    (None: stop pairing them). Set by ``autotune.reference.install_pairing``."""
    if pairing is None:
        _PAIRINGS.pop((profile, tuple(input_shape)), None)
    else:
        _PAIRINGS[(profile, tuple(input_shape))] = pairing


def pairing_for(profile: str, input_shape: tuple[int, ...] | None = None) -> Pairing | None:
    """The pairing ``use_pairing`` set for ``profile`` and ``input_shape``, if any; with no shape,
    any of the profile's (a kernel's time is on the same calibrated scale whichever reference it is
    paired with)."""
    if input_shape is not None:
        return _PAIRINGS.get((profile, tuple(input_shape)))
    return next((p for (name, _), p in _PAIRINGS.items() if name == profile), None)


def calls_for(seconds_per_call: float, min_repeat_ms: float, number: int) -> int:
    """Calls per repeat: at least ``number``, and enough that a repeat lasts ``min_repeat_ms``."""
    if seconds_per_call <= 0:
        return number
    return max(number, math.ceil(min_repeat_ms / 1e3 / seconds_per_call))


def time_paired(
    candidate: Repeat,
    reference: Repeat,
    *,
    number: tuple[int, int],
    min_rounds: int = 10,
    max_rounds: int = 40,
    ci_target: float = 0.01,
) -> PairedTiming:
    """Alternate one repeat of ``candidate`` and one of ``reference`` (``number`` calls each), the
    order swapped every round (ABBA) so neither always runs first, in batches of ``min_rounds`` until
    the ratio's interval is within ± ``ci_target`` of it or ``max_rounds`` have run."""
    if not 1 <= min_rounds <= max_rounds:
        raise ValueError(f"need 1 <= min_rounds ({min_rounds}) <= max_rounds ({max_rounds})")
    cand: list[float] = []
    ref: list[float] = []
    while len(cand) < max_rounds:
        for _ in range(min(min_rounds, max_rounds - len(cand))):
            if len(cand) % 2 == 0:
                c, r = candidate(number[0]), reference(number[1])
            else:
                r, c = reference(number[1]), candidate(number[0])
            cand.append(c)
            ref.append(r)
        ratios = np.asarray(cand) / np.asarray(ref)
        s = summarize_latency(ratios / 1e3)  # summarize_latency reads seconds and reports ms
        half_width = max(s["latency_ms"] - s["latency_ci_low_ms"], s["latency_ci_high_ms"] - s["latency_ms"])
        if ci_target > 0 and half_width <= ci_target * s["latency_ms"]:
            break
    return PairedTiming(
        ratio=s["latency_ms"],
        ratio_ci_low=s["latency_ci_low_ms"],
        ratio_ci_high=s["latency_ci_high_ms"],
        candidate_ms=float(np.median(cand)) * 1e3,
        reference_ms=float(np.median(ref)) * 1e3,
        rounds=len(cand),
        ratios=tuple(float(r) for r in ratios),
    )


#: Reference networks loaded in this process: library path → (VM, its repeat, calls per repeat).
_LOADED: dict[str, tuple[Any, Repeat, int]] = {}


def time_against(candidate: Repeat, pairing: Pairing, dev: Any, cfg: Any) -> PairedTiming:
    """``time_paired`` of ``candidate`` against ``pairing``'s reference network (loaded and warmed
    up once per process), by the profile's measure settings ``cfg``: calls per repeat to
    ``min_repeat_ms``, ``paired_rounds`` to twice that until the ratio is within ``ci_target``."""
    if pairing.path not in _LOADED:
        import tvm
        from tvm import relax

        ref = relax.VirtualMachine(tvm.runtime.load_module(pairing.path), dev)
        ref.set_input("main", tvm.runtime.tensor(np.ascontiguousarray(pairing.inputs, dtype=np.float32), dev))
        for _ in range(cfg.warmup):
            ref.invoke_stateful("main")
        rep = vm_repeat(ref, dev)
        _LOADED[pairing.path] = (ref, rep, calls_for(rep(cfg.number), cfg.min_repeat_ms, cfg.number))
    _, ref_repeat, ref_number = _LOADED[pairing.path]
    number = calls_for(candidate(cfg.number), cfg.min_repeat_ms, cfg.number)
    return time_paired(
        candidate,
        ref_repeat,
        number=(number, ref_number),
        min_rounds=cfg.paired_rounds,
        max_rounds=2 * cfg.paired_rounds,
        ci_target=cfg.ci_target,
    )


def vm_repeat(vm: Any, dev: Any) -> Repeat:
    """One repeat of a Relax VM's ``main`` (input already set) with TVM's time evaluator."""
    evaluators: dict[int, Any] = {}

    def run(number: int) -> float:
        if number not in evaluators:
            evaluators[number] = vm.time_evaluator("invoke_stateful", dev, number=number, repeat=1, min_repeat_ms=0)
        return float(evaluators[number]("main").results[0])

    return run
