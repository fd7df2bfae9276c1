"""Figures of the analyses as PNG bytes (matplotlib, Agg, no pyplot state).

Figures are built on `matplotlib.figure.Figure` directly, so nothing depends on a display or on
pyplot's global figure registry, and the bytes can be written to files or embedded in HTML.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from itertools import combinations
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def _finite(v: Any) -> float:
    return float(v) if isinstance(v, int | float) and math.isfinite(v) else math.nan


def draw_heatmap(
    ax: Any,
    matrix: Sequence[Sequence[float | None]],
    rows: Sequence[str],
    cols: Sequence[str],
    title: str,
    vmin: float | None = None,
    vmax: float | None = None,
    cmap: str = "viridis",
    cell_text: Sequence[Sequence[str]] | None = None,
    outline: Sequence[tuple[int, int]] = (),
    xlabel: str = "",
    ylabel: str = "",
) -> Any:
    """The one heat map: annotated cells (None/NaN left blank), optional outlined cells; returns the image."""
    data = [[_finite(v) for v in r] for r in matrix]
    im = ax.imshow(data, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(len(cols)), [str(c) for c in cols], rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), [str(r) for r in rows])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    annotate = len(cols) <= 16 and len(rows) <= 16  # numbers in cells only while they stay legible
    for i, r in enumerate(data):
        for j, v in enumerate(r):
            if annotate and math.isfinite(v):
                text = cell_text[i][j] if cell_text is not None else f"{v:.2g}"
                ax.text(j, i, text, ha="center", va="center", fontsize=7, color="w")
    for i, j in outline:
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
    ax.set_title(title, fontsize=10)
    return im


def heatmap(
    matrix: Sequence[Sequence[float | None]], rows: Sequence[str], cols: Sequence[str], title: str, **kw: Any
) -> bytes:
    """A heat map alone as PNG bytes (see `draw_heatmap` for the options)."""
    fig = Figure(
        figsize=(min(12.0, max(4.0, 0.7 * len(cols) + 2.5)), min(8.0, max(3.0, 0.5 * len(rows) + 1.5)))
    )
    ax = fig.add_subplot()
    im = draw_heatmap(ax, matrix, rows, cols, title, **kw)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    return _png(fig)


def write_delta_plots(result: Mapping[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """`delta_figures` written as `delta_<name>.png` files."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for name, png in delta_figures(result).items():
        paths[name] = out / f"delta_{name}.png"
        paths[name].write_bytes(png)
    return paths


def delta_figures(result: Mapping[str, Any]) -> dict[str, bytes]:
    """Per-layer ‖Δ‖/‖θ₀‖ lines, module heat map, total cosine and per-layer cosine heat maps."""
    models = list(result["models"])
    layers = list(result["layers"])
    out: dict[str, bytes] = {}
    if layers:
        fig = Figure(figsize=(7, 4))
        ax = fig.add_subplot()
        xs = [int(k) for k in layers]
        for i, m in enumerate(models):
            ys = [_finite(result["layers"][k]["rel_norm"][i]) for k in layers]
            ax.plot(xs, ys, marker="o", label=m)
        ax.set_xlabel("layer")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("‖Δ‖ / ‖θ₀‖")
        vals = [_finite(result["layers"][k]["rel_norm"][i]) for k in layers for i in range(len(models))]
        if all(v > 0 for v in vals):  # NaN compares False: a linear axis for zero or missing updates
            ax.set_yscale("log")
        ax.set_title("relative update size per layer")
        ax.legend(fontsize=7)
        out["layers"] = _png(fig)
    mods = list(result["modules"])
    out["modules"] = heatmap(
        [[result["modules"][k]["rel_norm"][i] for k in mods] for i in range(len(models))],
        models,
        mods,
        "‖Δ‖ / ‖θ₀‖ per module type",
    )
    if len(models) > 1:
        out["cosine"] = heatmap(
            result["total"]["cosine"],
            models,
            models,
            "cosine(Δ_i, Δ_j), all weights",
            vmin=-1,
            vmax=1,
            cmap="coolwarm",
        )
        pairs = list(combinations(range(len(models)), 2))
        if layers:
            out["layer_cosine"] = heatmap(
                [[result["layers"][k]["cosine"][i][j] for k in layers] for i, j in pairs],
                [f"{models[i]} · {models[j]}" for i, j in pairs],
                layers,
                "cosine of Δ per layer",
                vmin=-1,
                vmax=1,
                cmap="coolwarm",
            )
    return out


def kl_figure(kl: Mapping[str, Any], estimator: str = "exact") -> bytes:
    """Grouped bars: per-token KL to the base per prompt source and model, ± standard error."""
    sources, models = list(kl["sources"]), list(kl["models"])
    fig = Figure(figsize=(max(5.0, 1.2 * len(sources) * max(1, len(models)) ** 0.5 + 2), 4))
    ax = fig.add_subplot()
    w = 0.8 / max(1, len(models))
    for i, m in enumerate(models):
        ys = [_finite(kl["cells"][s][m][estimator]["mean"]) for s in sources]
        es = [_finite(kl["cells"][s][m][estimator]["se"]) for s in sources]
        es = [0.0 if not math.isfinite(e) else e for e in es]
        ax.bar([x + i * w for x in range(len(sources))], ys, w, yerr=es, capsize=2, label=m)
    ax.set_xticks([x + w * (len(models) - 1) / 2 for x in range(len(sources))], sources)
    ax.set_ylabel(f"KL(π ‖ π_base) per token ({estimator})")
    ax.set_title("KL drift by prompt source")
    ax.legend(fontsize=7)
    return _png(fig)


def reward_kl_figure(points: Sequence[Mapping[str, Any]]) -> bytes:
    """The reward–KL plane: on-task reward against on-task KL to the base, one point per model."""
    fig = Figure(figsize=(5.5, 4))
    ax = fig.add_subplot()
    for p in points:
        x, y = _finite(p.get("kl")), _finite(p.get("reward"))
        xe = _finite(p.get("kl_se"))
        ax.errorbar([x], [y], xerr=[xe if math.isfinite(xe) else 0.0], fmt="o", capsize=3, label=p["model"])
        ax.annotate(p["model"], (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("on-task KL(π ‖ π_base) per token (exact)")
    ax.set_ylabel("held-out reward")
    ax.set_title("reward–KL plane")
    return _png(fig)


def lmc_figure(lmc: Mapping[str, Any]) -> bytes:
    """Reward and accuracy along θ(λ) for every interpolated pair."""
    fig = Figure(figsize=(10, 4))
    axes = [fig.add_subplot(1, 2, k) for k in (1, 2)]
    for p in lmc["pairs"]:
        for ax, metric in zip(axes, ("reward", "accuracy"), strict=True):
            ax.plot(
                p["lambdas"],
                [_finite(v) for v in p[metric]],
                marker="o",
                label=f"{p['name']} (barrier {p[f'barrier_{metric}']['height']:.3g})",
            )
    for ax, metric in zip(axes, ("reward", "accuracy"), strict=True):
        ax.set_xlabel("λ")
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} along (1−λ)θ_A + λθ_B")
        ax.legend(fontsize=7)
    return _png(fig)


def robustness_figure(curves: Mapping[str, Mapping[str, Any]]) -> bytes:
    """Reward degradation vs σ (mean ± std over trials), one line per model."""
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    for label, r in curves.items():
        xs = [c["sigma"] for c in r["curves"]]
        ys = [_finite(c["degradation_mean"]) for c in r["curves"]]
        es = [_finite(c["degradation_std"]) for c in r["curves"]]
        ax.errorbar(
            xs, ys, yerr=[0.0 if not math.isfinite(e) else e for e in es], marker="o", capsize=3, label=label
        )
    if all(c["sigma"] > 0 for r in curves.values() for c in r["curves"]):
        ax.set_xscale("log")
    ax.set_xlabel("σ")
    ax.set_ylabel("reward drop vs unperturbed")
    ax.set_title("perturbation robustness")
    ax.legend(fontsize=7)
    return _png(fig)
