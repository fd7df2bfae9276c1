"""Sampling coverage: pass@k from temperature sampling vs from weight-perturbation sampling.

Temperature sampling draws n completions per prompt from π_θ at temperature T. Perturbation
sampling draws n models θ + σε_j per prompt and takes one greedy completion from each — the kind
of diversity ES explores. Each prompt gets its own n perturbations, as it gets its own n
temperature samples: with n draws shared by every prompt, the prompts' counts would all depend on
the same few draws, and an interval over prompts would leave the draw-to-draw variance out
(the replicate would be the draw, n of them). Settings (T, σ) are chosen on a selection split and
reported on a disjoint split, so the reported numbers are not tuned on themselves.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from evotune.backends.hf import generate
from evotune.es.params import EvolvingParams, select_params
from evotune.evaluation import score_rows
from evotune.stats import pass_at_k  # noqa: F401  (re-exported: passk's estimator)
from evotune.tasks.base import Example, Task, stable_int


def pass_curve(correct_counts: Sequence[int], n: int) -> list[float]:
    """Mean pass@k over prompts for k = 1..n."""
    return [float(np.mean([pass_at_k(n, c, k) for c in correct_counts])) for k in range(1, n + 1)]


@dataclass
class SamplingResult:
    """Per-prompt correct counts out of n samples for one sampling setting."""

    mode: str  # "temperature" or "perturbation"
    value: float  # T or σ
    n: int
    counts: list[int]
    ids: list[str]

    @property
    def curve(self) -> list[float]:
        return pass_curve(self.counts, self.n)

    @property
    def solved(self) -> set[str]:
        return {i for i, c in zip(self.ids, self.counts, strict=True) if c > 0}

    @property
    def coverage(self) -> float:
        return len(self.solved) / len(self.ids) if self.ids else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "value": self.value, "n": self.n, "coverage": self.coverage,
                "pass@1": self.curve[0], f"pass@{self.n}": self.curve[-1], "curve": self.curve, "counts": self.counts}


def temperature_sampling(
    model: Any, tok: Any, task: Task, examples: Sequence[Example], n: int, temperature: float,
    max_new_tokens: int, batch_size: int = 64, seed: int = 0,
) -> SamplingResult:
    prompts = [task.render(e, tok) for e in examples]
    counts = [0] * len(examples)
    for j in range(n):  # one pass over the prompts per sample index keeps batches prompt-diverse
        comps = generate(model, tok, prompts, max_new_tokens, batch_size, temperature, seed=stable_int(seed, j))
        for i, r in enumerate(score_rows(task, examples, comps)):
            counts[i] += int(r["correct"])
    return SamplingResult("temperature", temperature, n, counts, [e.id for e in examples])


def perturbation_sampling(
    model: Any, tok: Any, task: Task, examples: Sequence[Example], n: int, sigma: float,
    max_new_tokens: int, batch_size: int = 64, seed: int = 0, params: EvolvingParams | None = None,
    log: Callable[[str], None] | None = None,
) -> SamplingResult:
    """Per prompt, n perturbed models θ + σε (ε keyed by (seed, prompt id, j)), one greedy completion each.

    Draws are nested in prompts (see the module docstring), so prompts are independent replicates;
    the weights are restored exactly after every draw.
    """
    params = params or EvolvingParams(select_params(model))
    counts = [0] * len(examples)
    for i, e in enumerate(examples):
        prompt = [task.render(e, tok)]
        for j in range(n):
            params.perturb(stable_int("passk", seed, e.id, j), 1, sigma)
            try:
                comps = generate(model, tok, prompt, max_new_tokens, batch_size)
            finally:
                params.restore()
            counts[i] += int(score_rows(task, [e], comps)[0]["correct"])
        if log and (i + 1) % 8 == 0:  # one perturbation per (prompt, draw): the slow half of pass@k
            log(f"[passk] σ={sigma:g}: {i + 1}/{len(examples)} prompts × {n} perturbed models")
    return SamplingResult("perturbation", sigma, n, counts, [e.id for e in examples])


def overlap(a: set[str], b: set[str]) -> dict[str, float]:
    union = a | b
    return {"both": len(a & b), "only_a": len(a - b), "only_b": len(b - a),
            "jaccard": len(a & b) / len(union) if union else 1.0}


def passk_study(
    model: Any, tok: Any, task: Task, n: int, temperatures: Sequence[float], sigmas: Sequence[float],
    max_new_tokens: int, n_select: int, n_report: int, batch_size: int = 64, seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Pick the best T and σ by pass@n on train-split prompts, report both on held-out prompts."""
    select = task.split("train")[:n_select]
    report = task.split("eval")[:n_report]
    params = EvolvingParams(select_params(model))
    sel: dict[str, list[dict[str, Any]]] = {"temperature": [], "perturbation": []}
    for t in temperatures:
        sel["temperature"].append(temperature_sampling(model, tok, task, select, n, t, max_new_tokens, batch_size, seed).as_dict())
    for s in sigmas:
        r = perturbation_sampling(model, tok, task, select, n, s, max_new_tokens, batch_size, seed, params, log)
        sel["perturbation"].append(r.as_dict())
    best_t = max(sel["temperature"], key=lambda d: (d[f"pass@{n}"], d["pass@1"]))["value"]
    best_s = max(sel["perturbation"], key=lambda d: (d[f"pass@{n}"], d["pass@1"]))["value"]
    rep_t = temperature_sampling(model, tok, task, report, n, best_t, max_new_tokens, batch_size, seed + 1)
    rep_s = perturbation_sampling(model, tok, task, report, n, best_s, max_new_tokens, batch_size, seed + 1, params, log)
    return {
        "n": n,
        "perturbation_draws": "per prompt",  # prompts are independent replicates (see the module docstring)
        "selection_split": {"split": "train", "prompts": len(select), **sel},
        "report_split": {"split": "eval", "prompts": len(report)},
        "best": {"temperature": best_t, "sigma": best_s},
        "temperature": rep_t.as_dict(),
        "perturbation": rep_s.as_dict(),
        "overlap": overlap(rep_t.solved, rep_s.solved),
        "ks": list(range(1, n + 1)),
    }


def plot_passk(result: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = result["ks"]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for key, label in (("temperature", f"T={result['best']['temperature']}"), ("perturbation", f"σ={result['best']['sigma']}")):
        ax.plot(ks, result[key]["curve"], marker="o", ms=3, label=f"{key} ({label})")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("k")
    ax.set_ylabel("pass@k (held-out)")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def log_comb(n: int, k: int) -> float:
    """log C(n, k), for checks of the product form against the closed form."""
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
