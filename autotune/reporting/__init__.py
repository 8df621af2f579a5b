"""What a person reads during and after a run: ``pareto.png`` and a self-contained ``report.html``
(its HTML pieces, a page per trial and the table script, in ``pages``)."""

from __future__ import annotations

import base64
import html
import os
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from autotune.errors import UserError
from autotune.leaderboard import DETAIL_COLUMNS, summary_columns
from autotune.reporting.pages import PAGE_CSS, SCRIPT, curves_charts, trial_link, trial_pages, trials_table
from autotune.space import PARAM_PREFIXES

__all__ = ["check_columns", "format_value", "plot_pareto", "sort_rows", "write_report"]

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


def check_columns(rows: Sequence[Mapping[str, Any]], names: Sequence[str], *, key: str) -> None:
    """Refuse a name that is not a column of ``rows`` (the closest column as the hint).

    Raises:
        UserError: (``key``) the first unknown name.
    """
    from autotune.leaderboard import COLUMNS
    from autotune.registry import closest

    known = list(dict.fromkeys(k for r in rows for k in r)) or list(COLUMNS)
    for name in names:
        if name not in known:
            near = closest(name, known)
            raise UserError(f"no column {name!r} in the leaderboard", key=key,
                            hint=f"did you mean {near!r}?" if near else None)  # fmt: skip


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


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;font-size:13px;margin:1em 0}td,th{border:1px solid #ddd;padding:3px 7px;text-align:right}
th{background:#f3f5f8}td:first-child,th:first-child{text-align:left}.err td{text-align:left}
img{max-width:100%;border:1px solid #eee}code{background:#f3f5f8;padding:1px 4px}"""


def _curves_section(run_dir: Path, rows: Sequence[Mapping[str, Any]]) -> str:
    """The training curves of ``rows`` that have them (``autotune.curves``), two charts per trial."""
    blocks = []
    for r in rows:
        charts = curves_charts(run_dir, r.get("trial_id"))
        if charts:
            tid = html.escape(str(r.get("trial_id")))
            blocks.append(f'<div class="trial-curves" id="curves-{tid}"><h3>{trial_link(tid)}</h3>{charts}</div>')
    if not blocks:
        return ""
    return (
        "<h2>Training curves (top configurations)</h2><p>Also in TensorBoard: "
        f"<code>tensorboard --logdir {html.escape(str(run_dir / 'tensorboard'))}</code>.</p>"
        f'<div id="curves">{"".join(blocks)}</div>'
    )


def _replace(path: Path, write: Any) -> Path:
    """Write ``path`` through a temporary file and a rename: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
    write(tmp)
    os.replace(tmp, path)
    return path


#: Seconds between reloads of a live report.
LIVE_REFRESH_S = 15


def write_report(
    run_dir: str | Path,
    rows: Sequence[Mapping[str, Any]],
    *,
    objectives: Mapping[str, str],
    title: str,
    facts: Mapping[str, Any],
    live: bool = False,
) -> Path:
    """Write ``pareto.png`` and ``report.html`` (the plot embedded: the file opens offline), each
    replaced atomically. ``live``: the run is going on; the page says so and reloads itself every
    ``LIVE_REFRESH_S`` seconds.

    The page has the summary, the Pareto plot, the top configurations with their curves, every trial
    in a table that sorts (click a header) and filters in the page, a page per trial
    (``report.html#trial-<id>``, linked from the tables) and the failures."""
    run_dir = Path(run_dir)
    png = _replace(run_dir / "pareto.png", lambda tmp: plot_pareto(rows, objectives, tmp))
    img = base64.b64encode(png.read_bytes()).decode()
    counts = Counter(str(r.get("status")) for r in rows)
    ranked = sorted(
        (r for r in rows if r.get("pareto_rank")), key=lambda r: (r["pareto_rank"], r.get("latency_ms") or 0)
    )
    top = ranked[:15]
    params = sorted({k for r in top for k in r if k.startswith(PARAM_PREFIXES)})
    all_params = sorted({k for r in rows for k in r if k.startswith(PARAM_PREFIXES)})
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
    failure_table = (
        trials_table(failures, ["trial_id", "error", *params[:6]], table_id="failed") if failures else "<p>none</p>"
    )
    status = ", ".join(f"{counts[s]} {s}" for s in _STATUS_ORDER if counts[s])
    objective_text = ", ".join(f"{k}: {v}" for k, v in objectives.items())
    refresh = f'<meta http-equiv="refresh" content="{LIVE_REFRESH_S}">' if live else ""
    banner = (
        f'<p id="live">The run is going on: this page reloads every {LIVE_REFRESH_S} s '
        f"(written {time.strftime('%Y-%m-%d %H:%M:%S')}).</p>"
        if live
        else ""
    )
    shown = summary_columns(rows, filled=False)
    all_columns = ["trial_id", *[c for c in shown if c != "trial_id"], "error", *all_params]
    doc = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">{refresh}
<title>{html.escape(title)}</title><style>{_CSS}{PAGE_CSS}</style></head><body><main id="run">
<h1>{html.escape(title)}</h1>
{banner}
<p id="counts">{len(rows)} trials: {html.escape(status)}. Objectives: {html.escape(objective_text)}
(accuracy is optimised on validation data and reported on the held-out test split).</p>
<table id="summary">{summary}</table>
{drift_note}
<h2>Accuracy against latency</h2>
<p>The front is ranked on validation accuracy; the tables give the held-out test accuracy as
<code>accuracy</code>, which no part of the search selected on.</p>
<img id="pareto" alt="Pareto plot" src="data:image/png;base64,{img}">
<h2>Top configurations (Pareto rank, then latency)</h2>
<div id="top">{trials_table(top, [*shown, *DETAIL_COLUMNS, *params], table_id="best")}</div>
{_curves_section(run_dir, top)}
<h2>All trials ({len(rows)})</h2>
<div id="trials"><input id="filter" type="search" placeholder="filter: any text in a row (e.g. ok, int8)">
<p>Click a column to sort; a trial id opens its page.</p>
{trials_table(rows, all_columns, table_id="all")}</div>
<h2>Failures ({len(failures)})</h2>
<div id="failures" class="err">{failure_table}</div></main>
{trial_pages(run_dir, rows, lambda k: k.startswith(PARAM_PREFIXES))}
{SCRIPT}
</body></html>"""
    return _replace(run_dir / "report.html", lambda tmp: tmp.write_text(doc))
