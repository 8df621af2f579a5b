"""What the CLI draws: the console, tables, the columns that fit a terminal, the search's progress."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from autotune.reporting import format_value

__all__ = ["fit_columns", "make_console", "progress_renderable", "table"]


def make_console(stderr: bool = True) -> Any:
    from rich.console import Console

    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal:
        console.width = max(console.width, 160)  # pipes and CI logs: do not squeeze tables
    return console


def table(rows: list[dict[str, Any]], columns: Sequence[str], title: str) -> Any:
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    for i, c in enumerate(columns):
        t.add_column(c, overflow="fold", no_wrap=i == 0)  # the first column names the row: whole
    for r in rows:
        t.add_row(*[format_value(r.get(c)) for c in columns])
    return t


def fit_columns(rows: list[dict[str, Any]], cols: list[str], width: int) -> tuple[list[str], list[str]]:
    """The leading ``cols`` whose cells fit ``width`` characters unwrapped (at least two), and the rest."""
    used, kept = 1, []
    for i, c in enumerate(cols):
        cell = max([len(c), *(len(format_value(r.get(c))) for r in rows)])
        if used + cell + 3 > width and len(kept) >= 2:
            return kept, cols[i:]
        used += cell + 3
        kept.append(c)
    return kept, []


def progress_renderable(p: Any) -> Any:
    from rich.console import Group
    from rich.text import Text

    left = "" if p.remaining_s is None else f" · remaining {p.remaining_s:,.0f}s"
    lines = [
        Text.from_markup(
            f"[bold]trials {p.done}/{p.total}[/] done · running {len(p.running)} · failed {p.failed} · "
            f"pruned {p.pruned} · infeasible {p.infeasible} · elapsed {p.elapsed_s:,.0f}s{left}"
        )
    ]
    if p.best:
        keys = ("trial_id", "accuracy", "val_accuracy", "latency_ms", "energy_mj", "macs")
        best = "  ".join(f"{k}={format_value(p.best.get(k))}" for k in keys if p.best.get(k) is not None)
        lines.append(Text.from_markup(f"[bold]best[/] {best}"))
    if p.predictor_checked:
        lines.append(
            Text(f"latency predictor: {p.predictor_hit_rate:.0%} of {p.predictor_checked} predictions within ±10 %")
        )
    if p.drift_warning:
        lines.append(Text.from_markup(f"[bold yellow]warning[/] {p.drift_warning}"))
    lines += [Text(f"  {tid}: {what}") for tid, what in list(p.running.items())[:8]]
    return Group(*lines)
