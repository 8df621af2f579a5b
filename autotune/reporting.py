"""What a person reads after a run: ``pareto.png`` and a self-contained ``report.html``."""

from __future__ import annotations

import base64
import html
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from autotune.curves import read_curves
from autotune.errors import UserError
from autotune.leaderboard import DETAIL_COLUMNS, SUMMARY_COLUMNS
from autotune.space import PARAM_PREFIXES

__all__ = ["format_value", "plot_pareto", "sort_rows", "write_report"]

_STATUS_ORDER = ("ok", "infeasible", "pruned", "failed")


def _axes(objectives: Mapping[str, str]) -> tuple[str, str]:
    """The plot's (x, y) columns: latency against the accuracy the front is ranked on (validation),
    or against the other objective of a latency-only study."""
    if "accuracy" in objectives or "val_accuracy" in objectives:
        return "latency_ms", "val_accuracy"
    return "latency_ms", next((k for k in objectives if k != "latency_ms"), "macs")


def plot_pareto(rows: Sequence[Mapping[str, Any]], objectives: Mapping[str, str], path: str | Path) -> Path:
    """Scatter of the measured trials with the Pareto front highlighted; failures are counted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    x, y = _axes(objectives)
    counts = Counter(str(r.get("status")) for r in rows)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    measured = [r for r in rows if r.get(x) is not None and r.get(y) is not None]
    ok = [r for r in measured if r.get("status") == "ok"]
    front = sorted((r for r in ok if r.get("pareto_rank") == 1), key=lambda r: r[x])
    infeasible = [r for r in measured if r.get("status") == "infeasible"]
    ax.scatter([r[x] for r in ok], [r[y] for r in ok], s=22, color="#9db4d0", label=f"ok ({len(ok)})")
    if infeasible:
        ax.scatter(
            [r[x] for r in infeasible],
            [r[y] for r in infeasible],
            s=22,
            marker="x",
            color="#b0b0b0",
            label=f"infeasible ({len(infeasible)})",
        )
    if front:
        ax.step(
            [r[x] for r in front],
            [r[y] for r in front],
            "-o",
            where="post",
            color="#d62728",
            ms=6,
            label=f"Pareto front ({len(front)})",
        )
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(f"{x} (median, log scale)")
    ax.set_ylabel("validation accuracy (ranked on)" if y == "val_accuracy" else y)
    lost = ", ".join(f"{counts[s]} {s}" for s in ("pruned", "failed") if counts[s])
    ax.set_title(f"{len(rows)} trials" + (f" ({lost}, not plotted)" if lost else ""))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def format_value(v: Any) -> str:
    """A leaderboard cell as text: empty for None, floats to 4 significant digits."""
    if v is None:
        return ""
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def sort_rows(rows: list[dict[str, Any]], sort: str | None) -> list[dict[str, Any]]:
    """Rows by column ``sort`` (descending for accuracies and MACs; empty cells last), or by Pareto
    rank, then latency.

    Raises:
        UserError: ``sort`` is not a column (key ``--sort``).
    """
    big = float("inf")
    if sort:
        if rows and sort not in rows[0]:
            raise UserError(f"no column {sort!r} in the leaderboard", key="--sort")
        desc = sort in ("accuracy", "val_accuracy", "macs")
        have = [r for r in rows if r.get(sort) is not None]
        return sorted(have, key=lambda r: r[sort], reverse=desc) + [r for r in rows if r.get(sort) is None]
    return sorted(rows, key=lambda r: (r.get("pareto_rank") or big, r.get("latency_ms") or big))


def _table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    def cell(v: Any) -> str:
        return html.escape(format_value(v))

    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{cell(r.get(c))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;font-size:13px;margin:1em 0}td,th{border:1px solid #ddd;padding:3px 7px;text-align:right}
th{background:#f3f5f8}td:first-child,th:first-child{text-align:left}.err td{text-align:left}
img{max-width:100%;border:1px solid #eee}code{background:#f3f5f8;padding:1px 4px}"""


def _polyline_svg(title: str, series: Mapping[str, Sequence[float]], colours: Sequence[str]) -> str:
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


def _curves_section(run_dir: Path, rows: Sequence[Mapping[str, Any]]) -> str:
    """The training curves of ``rows`` that have them (``autotune.curves``), two charts per trial."""
    blocks = []
    for r in rows:
        points = read_curves(run_dir / "tensorboard" / str(r.get("trial_id")))
        if not points:
            continue
        acc = _polyline_svg("validation accuracy", {"val": [p["val_accuracy"] for p in points]}, ["#1f77b4"])
        loss = _polyline_svg(
            "loss", {"train": [p["train_loss"] for p in points], "val": [p["val_loss"] for p in points]},
            ["#ff7f0e", "#2ca02c"],
        )  # fmt: skip
        tid = html.escape(str(r.get("trial_id")))
        blocks.append(f'<div class="trial-curves" id="curves-{tid}"><h3>{tid}</h3>{acc} {loss}</div>')
    if not blocks:
        return ""
    return (
        "<h2>Training curves (top configurations)</h2><p>Also in TensorBoard: "
        f"<code>tensorboard --logdir {html.escape(str(run_dir / 'tensorboard'))}</code>.</p>"
        f'<div id="curves">{"".join(blocks)}</div>'
    )


def write_report(
    run_dir: str | Path,
    rows: Sequence[Mapping[str, Any]],
    *,
    objectives: Mapping[str, str],
    title: str,
    facts: Mapping[str, Any],
) -> Path:
    """Write ``pareto.png`` and ``report.html`` (the plot embedded: the file opens offline)."""
    run_dir = Path(run_dir)
    png = plot_pareto(rows, objectives, run_dir / "pareto.png")
    img = base64.b64encode(png.read_bytes()).decode()
    counts = Counter(str(r.get("status")) for r in rows)
    ranked = sorted(
        (r for r in rows if r.get("pareto_rank")), key=lambda r: (r["pareto_rank"], r.get("latency_ms") or 0)
    )
    top = ranked[:15]
    params = sorted({k for r in top for k in r if k.startswith(PARAM_PREFIXES)})
    failures = [r for r in rows if r.get("status") == "failed"]
    refs = [r for r in rows if isinstance(r.get("drift"), int | float)]
    drifted = [r for r in rows if r.get("drift_flag")]
    drift_note = ""
    if drifted:
        worst = max(refs, key=lambda r: abs(r["drift"]))
        drift_note = (
            f'<p id="drift" class="err">Warning: latency drift. The reference model, re-timed {len(refs)} times, '
            f"moved up to {worst['drift']:+.0%} from its first timing (trial {html.escape(str(worst['trial_id']))}); "
            f"{len(drifted)} rows measured around a drifted re-timing have <code>drift_flag</code> set: "
            "compare their latencies with care.</p>"
        )
    summary = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in facts.items()
    )
    failure_table = _table(failures, ["trial_id", "error", *params[:6]]) if failures else "<p>none</p>"
    status = ", ".join(f"{counts[s]} {s}" for s in _STATUS_ORDER if counts[s])
    objective_text = ", ".join(f"{k}: {v}" for k, v in objectives.items())
    doc = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>
<h1>{html.escape(title)}</h1>
<p id="counts">{len(rows)} trials: {html.escape(status)}. Objectives: {html.escape(objective_text)}
(accuracy is optimised on validation data and reported on the held-out test split).</p>
<table id="summary">{summary}</table>
{drift_note}
<h2>Accuracy against latency</h2>
<p>The front is ranked on validation accuracy; the tables give the held-out test accuracy as
<code>accuracy</code>, which no part of the search selected on.</p>
<img id="pareto" alt="Pareto plot" src="data:image/png;base64,{img}">
<h2>Top configurations (Pareto rank, then latency)</h2>
<div id="top">{_table(top, [*SUMMARY_COLUMNS, *DETAIL_COLUMNS, *params])}</div>
{_curves_section(run_dir, top)}
<h2>Failures ({len(failures)})</h2>
<div id="failures" class="err">{failure_table}</div>
</body></html>"""
    out = run_dir / "report.html"
    out.write_text(doc)
    return out
