"""The build's named pass pipeline and the deployment precisions (no compile)."""

from __future__ import annotations

import pytest

from autotune.compiler import FINALIZE, FUSE, PRECISIONS, PREPARE, set_precision
from autotune.errors import CandidateFailed


def test_the_pipeline_is_a_table_of_named_steps():
    names = [s.name for s in (*PREPARE, *FUSE, *FINALIZE)]
    assert [s.name for s in PREPARE] == [
        "FoldBatchnormToConv2D", "DecomposeOpsForInference", "Precision", "StridedConvs", "DotProduct",
        "Simplify", "Int8Inputs", "Rounding"
    ]  # fmt: skip
    assert [s.name for s in FUSE] == ["CPULegalizeAndFuse", "RewriteDataflowReshape", "DotSchedules"]
    assert len(set(names)) == len(names) and all(callable(s.apply) for s in (*PREPARE, *FUSE, *FINALIZE))


def test_every_deployment_precision_has_a_pass():
    assert sorted(PRECISIONS) == ["fp16", "fp32", "int8"]
    marker = object()
    assert set_precision(marker, "fp32", "tensor") is marker  # fp32: the module as it is


def test_unknown_precision_fails_the_candidate():
    with pytest.raises(CandidateFailed, match="unknown deployment precision 'bf16'") as err:
        set_precision(object(), "bf16", "tensor")
    assert err.value.stage == "compile"
