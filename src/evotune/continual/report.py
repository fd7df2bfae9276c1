"""Show a continual run: rich tables for the terminal and a heat map of the accuracy matrix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evotune.report import plots


def _f(v: float | None, signed: bool = False) -> str:
    if v is None:
        return "-"
    return f"{v:+.3f}" if signed else f"{v:.3f}"


def _g(v: float | None) -> str:
    """KL values are often 1e-4 or smaller: three significant digits, not three decimals."""
    return "-" if v is None else f"{v:.3g}"


def tables(result: dict[str, Any]) -> list[Any]:
    """The accuracy matrix (with per-stage KL) and the per-task metrics, as rich Tables."""
    from rich.table import Table

    names = result["tasks"]
    m = result["metrics"]
    kl = result["kl"]
    t = Table(title=f"accuracy matrix R[stage][task] — {result['method']}, eval n={result['n_eval']}")
    t.add_column("model")
    for n in names:
        t.add_column(n, justify="right")
    t.add_column("avg seen", justify="right")
    t.add_column("KL on-task", justify="right")
    t.add_column("KL off-task", justify="right")
    for i, (label, row) in enumerate(zip(result["row_labels"], result["accuracy"], strict=True)):
        cells = [f"[bold]{_f(v)}[/]" if i == j + 1 else _f(v) for j, v in enumerate(row)]
        seen = "-" if i == 0 else _f(m["average_accuracy_per_stage"][i - 1])
        on = "-" if i == 0 else _g(kl["on_task"][i - 1])
        off = "-" if i == 0 else _g(kl["off_task_mean"][i - 1])
        t.add_row(label, *cells, seen, on, off)
    s = Table(title="per task")
    for col in ("task", "base", "gain when trained", "final", "forgetting"):
        s.add_column(col, justify="right" if col != "task" else "left")
    for j, n in enumerate(names):
        s.add_row(n, _f(result["accuracy"][0][j]), _f(m["gain_per_task"][j], True),
                  _f(m["final_accuracy_per_task"][j]), _f(m["forgetting_per_task"][j], True))
    g = Table(title="summary", show_header=False)
    g.add_row("average accuracy (final)", _f(m["average_accuracy"]))
    g.add_row("backward transfer (BWT)", _f(m["backward_transfer"], True))
    g.add_row("forward transfer (FWT, vs base)", _f(m["forward_transfer"], True))
    g.add_row("mean forgetting", _f(m["mean_forgetting"], True))
    return [t, s, g]


def heatmap(result: dict[str, Any], out: str | Path) -> Path:
    """PNG: the accuracy matrix as a heat map (diagonal outlined) beside the per-stage KL to the base."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = result["tasks"]
    acc = np.array(result["accuracy"], dtype=float)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(5 + 1.4 * len(names), 1.8 + 0.6 * len(acc)),
                                  gridspec_kw={"width_ratios": [max(2, len(names)), 2]})
    m = result["metrics"]
    bwt = m["backward_transfer"]
    title = f"{result['method']}: held-out accuracy (ACC {m['average_accuracy']:.2f}" + (
        f", BWT {bwt:+.2f})" if bwt is not None else ")"
    )
    im = plots.draw_heatmap(
        ax, acc.tolist(), result["row_labels"], names, title, vmin=0.0, vmax=1.0,
        cell_text=[[f"{v:.2f}" for v in r] for r in acc.tolist()],
        outline=[(j + 1, j) for j in range(min(len(names), len(acc) - 1))],
    )
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    kl = result["kl"]
    x = np.arange(1, len(names) + 1)
    on = [np.nan if v is None else v for v in kl["on_task"]]
    off = [np.nan if v is None else v for v in kl["off_task_mean"]]
    ax2.bar(x - 0.2, on, 0.4, label="on-task")
    ax2.bar(x + 0.2, off, 0.4, label="off-task mean")
    ax2.set_xticks(x, [f"{i}: {n}" for i, n in zip(x, names, strict=True)], rotation=30, ha="right")
    ax2.set_ylim(bottom=0.0)
    ax2.set_ylabel("KL to base (nats/token)")
    ax2.set_title("drift from the base model", fontsize=10)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
