"""The report: a page per trial with its sections, every trial in a sortable table, the live banner."""

from __future__ import annotations

import re

from autotune.reporting import write_report

OBJ = {"accuracy": "max", "latency_ms": "min"}


def _rows():
    return [
        {"trial_id": "a1", "status": "ok", "pareto_rank": 1, "val_accuracy": 0.9, "accuracy": 0.88,
         "latency_ms": 2.0, "max_abs_diff": 1e-6, "deploy_precision": "int8", "speedup_vs_uncompressed": 1.7,
         "tuned_share": 0.5, "latency_ms@rpi5": 9.5, "arch.stages": 2},
        {"trial_id": "b2", "status": "failed", "error": "compile: boom", "arch.stages": 1},
        {"trial_id": "c3", "status": "ok", "pareto_rank": 1, "val_accuracy": 0.8, "latency_ms": 1.0, "arch.stages": 1},
    ]  # fmt: skip


def test_every_trial_has_a_page_and_a_row(tmp_path):
    html = write_report(tmp_path, _rows(), objectives=OBJ, title="t", facts={"run": "x"}).read_text()
    pages = re.findall(r'<section class="trial" id="trial-([^"]+)">', html)
    assert pages == ["a1", "b2", "c3"]
    a1 = html[html.index('id="trial-a1"') : html.index('id="trial-b2"')]
    for heading in ("Parameters", "Result", "Numerical check against PyTorch", "Compression",
                    "Compilation and tuning", "Other devices"):  # fmt: skip
        assert f"<h3>{heading}</h3>" in a1
    assert "latency_ms@rpi5" in a1 and "int8" in a1 and "arch.stages" in a1
    b2 = html[html.index('id="trial-b2"') : html.index('id="trial-c3"')]
    assert "compile: boom" in b2 and "Compression" not in b2  # empty sections are left out
    table = html[html.index('<table id="all">') : html.index("</table>", html.index('<table id="all">'))]
    assert table.count("<tr>") == 4 and 'href="#trial-c3"' in table and 'data-col="latency_ms"' in table
    assert 'id="live"' not in html and 'http-equiv="refresh"' not in html and "<script>" in html
    assert not list(tmp_path.glob(".*tmp*"))  # written through temporary files, renamed


def test_a_live_report_says_so_and_reloads(tmp_path):
    html = write_report(tmp_path, _rows(), objectives=OBJ, title="t", facts={}, live=True).read_text()
    assert '<meta http-equiv="refresh" content="15">' in html and 'id="live"' in html


def test_a_trial_page_compares_the_runtimes(tmp_path):
    rows = _rows()
    rows[2] |= {"backend": "tvm", "best_backend": "openvino", "best_latency_ms": 0.5, "deploy_precision": "fp32",
                "latency_ms@openvino": 0.5, "status@openvino": "ok", "deploy_precision@openvino": "fp32",
                "status@onnxruntime": "failed", "error@onnxruntime": "convert: ONNX export failed"}  # fmt: skip
    html = write_report(tmp_path, rows, objectives=OBJ, title="t", facts={}).read_text()
    c3 = html[html.index('id="trial-c3"') :]
    assert "<h3>Runtimes on this device</h3>" in c3 and "Fastest verified: openvino" in c3
    runtimes = c3[c3.index("Runtimes on this device") : c3.index("</table>", c3.index("Runtimes on this device"))]
    assert [m for m in re.findall(r"<tr><td>(\w+)</td>", runtimes)] == ["tvm", "onnxruntime", "openvino"]
    assert "convert: ONNX export failed" in runtimes and "Other devices" not in c3
    assert 'data-col="best_backend"' in html  # the run compares backends: the tables show the best one
