"""Paired timing on synthetic timers: the ratio cancels a machine speed that changes between rounds."""

from __future__ import annotations

import numpy as np
import pytest

from autotune.measure.paired import Pairing, calls_for, pairing_for, time_paired, use_pairing

#: The synthetic timers: what each side returns at full speed, and the slow phase's factor.
CANDIDATE_S, REFERENCE_S, SLOW = 2e-3, 1e-3, 1.4


class _Machine:
    """A machine whose speed steps between 1.0 and ``SLOW`` every third call; each call records who ran."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.returned: dict[str, list[float]] = {}

    def timer(self, name: str, seconds: float):
        def run(number: int) -> float:
            self.calls.append(name)
            slow = SLOW if (len(self.calls) // 3) % 2 else 1.0
            self.returned.setdefault(name, []).append(seconds * slow)
            return seconds * slow

        return run


def test_ratio_cancels_the_machines_speed():
    m = _Machine()
    t = time_paired(m.timer("c", CANDIDATE_S), m.timer("r", REFERENCE_S), number=(1, 1), min_rounds=6, max_rounds=12)
    # a round's two repeats can straddle a speed step, so a few ratios are off; the median is not
    assert t.ratio == pytest.approx(2.0)
    assert t.rounds == len(t.ratios) and 6 <= t.rounds <= 12
    assert t.ratio_ci_low <= t.ratio <= t.ratio_ci_high
    # each side's median of what its timer returned, converted from seconds to milliseconds
    assert t.candidate_ms == pytest.approx(float(np.median(m.returned["c"])) * 1e3)
    assert t.reference_ms == pytest.approx(float(np.median(m.returned["r"])) * 1e3)
    # ABBA: the candidate goes first in even rounds, the reference in odd ones
    assert m.calls[:4] == ["c", "r", "r", "c"]


def test_a_steady_ratio_stops_at_min_rounds_and_a_noisy_one_runs_to_max():
    steady = time_paired(lambda n: 2e-3, lambda n: 1e-3, number=(1, 1), min_rounds=5, max_rounds=20, ci_target=0.01)
    assert steady.rounds == 5 and steady.ratio == pytest.approx(2.0) and steady.ratio_ci_high == steady.ratio_ci_low
    rng = np.random.default_rng(0)
    noisy = time_paired(
        lambda n: float(rng.uniform(1e-3, 3e-3)), lambda n: 1e-3, number=(1, 1), min_rounds=5, max_rounds=20
    )
    assert noisy.rounds == 20 and 1.0 < noisy.ratio < 3.0


def test_each_side_runs_its_own_number_of_calls():
    asked: list[tuple[str, int]] = []
    time_paired(
        lambda n: asked.append(("c", n)) or 1e-3,
        lambda n: asked.append(("r", n)) or 1e-3,
        number=(7, 3),
        min_rounds=3,
        max_rounds=3,
    )
    assert sorted(set(asked)) == [("c", 7), ("r", 3)] and len(asked) == 6


def test_rounds_must_be_ordered():
    with pytest.raises(ValueError, match="min_rounds"):
        time_paired(lambda n: 1.0, lambda n: 1.0, number=(1, 1), min_rounds=5, max_rounds=4)


def test_calls_for_a_repeat():
    assert calls_for(1e-3, 20, 5) == 20  # 20 ms of 1 ms calls
    assert calls_for(1e-1, 20, 5) == 5  # never fewer than number
    assert calls_for(0.0, 20, 5) == 5


def test_a_pairing_is_per_profile_and_input_shape():
    p = Pairing("/x/ref.so", np.zeros((1, 3, 8, 8), np.float32), 0.5)
    use_pairing("dev", (3, 8, 8), p)
    try:
        assert pairing_for("dev", (3, 8, 8)) is p
        assert pairing_for("dev", (3, 16, 16)) is None and pairing_for("other", (3, 8, 8)) is None
        assert pairing_for("dev") is p and pairing_for("other") is None  # any shape: for kernel timings
    finally:
        use_pairing("dev", (3, 8, 8), None)
    assert pairing_for("dev", (3, 8, 8)) is None and pairing_for("dev") is None
