"""The report's HTML pieces: a page per trial (parameters, curves, numerics, compression effects,
tuning, other devices), small SVG line charts, and the script that sorts and filters the trials
table in the page, without a server.

A trial's page is a ``<section class="trial" id="trial-<trial_id>">`` that CSS shows, in place of the
run's page (``<main id="run">``), only when it is the address's target (``report.html#trial-<id>``);
the trial ids in the tables link to them. The
script reads ``#sort=<column>`` / ``#sort=-<column>`` and ``#filter=<text>`` from the address too,
so a view can be bookmarked.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from autotune.curves import read_curves

__all__ = ["PAGE_CSS", "SCRIPT", "curves_charts", "trial_link", "trial_pages", "trials_table"]

#: What a trial's page shows, section by section (columns that are empty for the trial are left out).
SECTIONS: dict[str, tuple[str, ...]] = {
    "Result": ("status", "error", "pareto_rank", "violations", "accuracy", "val_accuracy", "latency_ms",
               "latency_p90_ms", "latency_cov", "latency_repeats", "reference_ratio", "latency_window_ms",
               "energy_mj", "energy_source", "size_bytes", "peak_mem_bytes", "params", "macs", "roofline_fraction"),
    "Numerical check against PyTorch": ("max_abs_diff", "top1_agreement", "tuned_max_abs_diff"),
    "Compression": ("deploy_precision", "int8_ops", "compute_ops", "sparsity", "quant_bits", "lowrank_layers",
                    "weight_clusters", "teacher_accuracy", "accuracy_uncompressed", "params_uncompressed",
                    "macs_uncompressed", "latency_uncompressed_ms", "speedup_vs_uncompressed"),
    "Compilation and tuning": ("tuned_share", "tuned_trials", "tune_db_hits", "tune_db_misses", "tune_s",
                               "latency_tuned_ms", "compile_s", "artifact_bytes", "target"),
    "Time per stage (s)": ("build_s", "screen_s", "train_s", "compress_s", "export_s", "import_s", "verify_s",
                           "measure_s", "quiet_wait_s"),
    "Screening and drift": ("screened", "latency_pred_ms", "latency_pred_model", "reference_latency_ms", "drift",
                            "drift_flag"),  # fmt: skip
    "Where": ("node", "cpu_model", "threads", "load_avg", "seed", "started_at", "finished_at"),
}  # fmt: skip

PAGE_CSS = """.trial{display:none}.trial:target{display:block}body:has(.trial:target) #run{display:none}
.trial table td{text-align:left}#trials input{margin:.5em 0;padding:3px 6px;width:24em}
th.sortable{cursor:pointer}th.sortable:hover{background:#e3e8f0}a.tid{text-decoration:none}"""

#: Sorts (a click on a header, numbers as numbers, empty cells last) and filters (every cell's text)
#: the trials table; ``#sort=`` and ``#filter=`` in the address apply on load.
SCRIPT = """<script>
(function(){
  const table=document.getElementById('all'); if(!table) return;
  const body=table.tBodies[0], input=document.getElementById('filter');
  function key(td){const t=td.textContent.trim(); const n=parseFloat(t);
    return t===''?null:(isNaN(n)||!/^[-+]?[0-9.]/.test(t)?t:n);}
  function sort(col,desc){const heads=[...table.tHead.rows[0].cells];
    const i=heads.findIndex(h=>h.dataset.col===col); if(i<0) return;
    const rows=[...body.rows]; rows.sort((a,b)=>{const x=key(a.cells[i]),y=key(b.cells[i]);
      if(x===null) return y===null?0:1; if(y===null) return -1;
      const c=(typeof x==='number'&&typeof y==='number')?x-y:String(x).localeCompare(String(y));
      return desc?-c:c;}); rows.forEach(r=>body.appendChild(r));
    table.dataset.sort=(desc?'-':'')+col;}
  function filter(text){const t=text.toLowerCase(); let shown=0;
    [...body.rows].forEach(r=>{const on=r.textContent.toLowerCase().includes(t); r.hidden=!on; shown+=on;});
    table.dataset.shown=shown;}
  [...table.tHead.rows[0].cells].forEach(h=>{h.classList.add('sortable');
    h.addEventListener('click',()=>sort(h.dataset.col,table.dataset.sort===h.dataset.col));});
  input.addEventListener('input',()=>filter(input.value));
  const hash=new URLSearchParams(location.hash.slice(1));
  if(hash.get('sort')){const s=hash.get('sort'); sort(s.replace(/^-/,''),s.startsWith('-'));}
  if(hash.get('filter')!==null){input.value=hash.get('filter'); filter(input.value);}
})();
</script>"""


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def trial_link(trial_id: Any) -> str:
    """The trial id as a link to its page."""
    tid = html.escape(str(trial_id))
    return f'<a class="tid" href="#trial-{tid}">{tid}</a>'


def trials_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], *, table_id: str) -> str:
    """A table of ``rows``, its trial ids linked to their pages, each header named in ``data-col``."""
    head = "".join(f'<th data-col="{html.escape(c)}">{html.escape(c)}</th>' for c in columns)

    def cell(r: Mapping[str, Any], c: str) -> str:
        return trial_link(r.get(c)) if c == "trial_id" else html.escape(_fmt(r.get(c)))

    body = "".join("<tr>" + "".join(f"<td>{cell(r, c)}</td>" for c in columns) + "</tr>" for r in rows)
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _line_chart(title: str, series: Mapping[str, Sequence[float]], colours: Sequence[str]) -> str:
    """A small line chart (no axes library): each series over the epochs, scaled to the chart's range."""
    width, height, pad = 240, 110, 18
    values = [v for ys in series.values() for v in ys]
    if not values:
        return ""
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    n = max(len(ys) for ys in series.values())
    lines = []
    for (name, ys), colour in zip(series.items(), colours, strict=False):
        xs = [pad + (width - 2 * pad) * i / max(n - 1, 1) for i in range(len(ys))]
        ys_px = [height - pad - (height - 2 * pad) * (y - lo) / span for y in ys]
        pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys_px, strict=True))
        stroke = f'fill="none" stroke="{colour}" stroke-width="1.5"'
        lines.append(f'<polyline {stroke} points="{pts}"><title>{html.escape(name)}</title></polyline>')
    legend = " ".join(f'<tspan fill="{c}">{html.escape(k)}</tspan>' for k, c in zip(series, colours, strict=False))
    return (
        f'<svg class="curve" width="{width}" height="{height}" role="img" aria-label="{html.escape(title)}">'
        f'<rect width="{width}" height="{height}" fill="#fafbfc" stroke="#e3e6ea"/>'
        f'<text x="{pad}" y="12" font-size="10">{html.escape(title)}: {legend}</text>'
        f'<text x="2" y="{pad + 8}" font-size="9">{hi:.3g}</text>'
        f'<text x="2" y="{height - pad}" font-size="9">{lo:.3g}</text>'
        f'<text x="{width - pad - 30}" y="{height - 4}" font-size="9">{n} epochs</text>{"".join(lines)}</svg>'
    )


def curves_charts(run_dir: Path, trial_id: Any) -> str:
    """A trial's training curves (``autotune.curves``) as two charts; '' when it has none."""
    points = read_curves(run_dir / "tensorboard" / str(trial_id))
    if not points:
        return ""
    acc = _line_chart("validation accuracy", {"val": [p["val_accuracy"] for p in points]}, ["#1f77b4"])
    loss = _line_chart(
        "loss", {"train": [p["train_loss"] for p in points], "val": [p["val_loss"] for p in points]},
        ["#ff7f0e", "#2ca02c"],
    )  # fmt: skip
    return f"{acc} {loss}"


def _facts(row: Mapping[str, Any], columns: Sequence[str]) -> str:
    cells = [(c, row.get(c)) for c in columns if row.get(c) not in (None, "")]
    return "".join(f"<tr><th>{html.escape(c)}</th><td>{html.escape(_fmt(v))}</td></tr>" for c, v in cells)


def _runtimes(row: Mapping[str, Any], backends: Sequence[str]) -> str:
    """The profile's backends side by side: latency, the precision each ran, the check, the status."""
    cols = ("latency_ms", "latency_ci_low_ms", "latency_ci_high_ms", "deploy_precision", "max_abs_diff",
            "energy_mj", "status", "error")  # fmt: skip
    head = "".join(f"<th>{c}</th>" for c in ("backend", *cols))
    first = {c: row.get(c) for c in cols} | {"status": "ok", "error": None}
    rows = [(str(row.get("backend") or "tvm"), first)] + [(b, {c: row.get(f"{c}@{b}") for c in cols}) for b in backends]
    cells = ["".join(f"<td>{html.escape(_fmt(v[c]))}</td>" for c in cols) for _, v in rows]
    body = "".join(f"<tr><td>{html.escape(name)}</td>{c}</tr>" for (name, _), c in zip(rows, cells, strict=True))
    best = f"<p>Fastest verified: {html.escape(str(row.get('best_backend')))}.</p>" if row.get("best_backend") else ""
    return f"<h3>Runtimes on this device</h3>{best}<table><tr>{head}</tr>{body}</table>"


def _kernels(trial_dir: Path) -> str:
    """The trial's kernel profile (``autotune profile``), when one was made."""
    from autotune.profiling import read_profile

    prof = read_profile(trial_dir)
    if not prof:
        return ""
    cols = ("name", "calls", "us_per_call", "total_us", "share", "gflops", "peak_fraction", "tuned")
    head = "".join(f"<th>{c}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(k.get(c)))}</td>" for c in cols) + "</tr>"
                   for k in prof["kernels"])  # fmt: skip
    return (
        f"<h3>Kernels on {html.escape(str(prof['device']))} (autotune profile)</h3>"
        f'<table class="kernels"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
        f"<p>Whole model {prof['latency_ms'] * 1e3:.1f} µs: kernels {prof['kernels_ms'] * 1e3:.1f} µs, "
        f"the runtime's own work {prof['overhead_ms'] * 1e3:.1f} µs.</p>"
    )


def trial_pages(run_dir: Path, rows: Sequence[Mapping[str, Any]], param: Callable[[str], bool]) -> str:
    """One page (section) per trial: the sections of ``SECTIONS``, its sampled parameters (``param``
    says which columns are), its other devices' figures (``<column>@<device>``) and its curves."""
    pages = []
    for r in rows:
        tid = html.escape(str(r.get("trial_id")))
        parts = [f'<h2>Trial {tid}</h2><p><a href="#">back to the run</a></p>']
        params = sorted(k for k in r if param(k))
        if params:
            parts.append(f"<h3>Parameters</h3><table>{_facts(r, params)}</table>")
        curves = curves_charts(run_dir, r.get("trial_id"))
        if curves:
            parts.append(f"<h3>Training curves</h3>{curves}")
        for title, columns in SECTIONS.items():
            facts = _facts(r, columns)
            if facts:
                parts.append(f"<h3>{html.escape(title)}</h3><table>{facts}</table>")
        backends = sorted({k.partition("@")[2] for k in r if k.startswith("status@")})
        if backends:
            parts.append(_runtimes(r, backends))
        others = sorted(k for k in r if "@" in k and k.partition("@")[2] not in backends)
        if others:
            parts.append(f"<h3>Other devices</h3><table>{_facts(r, others)}</table>")
        kernels = _kernels(run_dir / "trials" / str(r.get("trial_id")))
        if kernels:
            parts.append(kernels)
        pages.append(f'<section class="trial" id="trial-{tid}">{"".join(parts)}</section>')
    return "".join(pages)
