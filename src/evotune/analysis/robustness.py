"""Perturbation robustness: held-out reward after adding σ·ε to the weights, over seeded trials.

ε comes from `evotune.noise.noise(trial_seed, name, shape)` — the same N(0, I) noise ES
uses, keyed by (trial seed, parameter name), so any trial can be regenerated. A trial uses the
same ε at every σ (common random numbers): the curve over σ follows one direction per trial,
which makes the degradation curve smoother than independent draws would.

The weights are restored after every trial by copying back a saved copy in the model's own
dtype (bit-exact; subtracting the noise again would not be).

Tied weights: with tied embeddings there is no separate `lm_head.weight` tensor — the
unembedding *is* the input embedding. A glob such as `lm_head*` is matched against tied aliases
too, so it selects the shared matrix, and perturbing it perturbs the input embeddings as well;
the result lists such aliases under `tied_aliases`.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence
from typing import Any

import torch

from evotune.analysis.common import as_task
from evotune.analysis.kl import kl_on_prompts, source_prompts
from evotune.backends.models import load_model
from evotune.backends.resolve import Entry, resolve_entry
from evotune.errors import AnalysisError
from evotune.es.params import EvolvingParams
from evotune.evaluation import evaluate
from evotune.hashing import stable_int
from evotune.stats import mean_std

Log = Callable[[str], None]


def select_targets(
    model: Any, patterns: Sequence[str]
) -> tuple[list[tuple[str, torch.nn.Parameter]], dict[str, str]]:
    """Parameters matching any glob (tied aliases included), each tensor once under its own name.

    Returns the targets and the aliases through which a tensor was selected although its own
    name was not (e.g. `lm_head.weight` → `model.embed_tokens.weight` on a tied model).
    """
    canonical: dict[int, str] = {}
    for n, p in model.named_parameters():
        canonical.setdefault(id(p), n)
    chosen: dict[str, torch.nn.Parameter] = {}
    aliases: dict[str, str] = {}

    def hit(name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, g) for g in patterns)

    for n, p in model.named_parameters(remove_duplicate=False):
        if hit(n):
            c = canonical[id(p)]
            if c != n and not hit(c):  # selected only through its tied alias
                aliases[n] = c
            chosen.setdefault(c, p)
    if not chosen:
        raise AnalysisError(f"no parameters match {list(patterns)}")
    return list(chosen.items()), aliases


def robustness_on(
    model: Any,
    tokenizer: Any,
    task: Any,
    sigmas: Sequence[float] = (0.001, 0.003, 0.01),
    trials: int = 8,
    params: Sequence[str] = ("*",),
    limit: int | None = None,
    max_new_tokens: int | None = None,
    batch_size: int = 64,
    seed: int = 0,
    ref_model: Any = None,
    kl_prompts: int = 8,
    log: Log | None = None,
    baseline: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Robustness of an already loaded model; KL to `ref_model` (the unperturbed copy) if given.

    `baseline` is the unperturbed {reward, accuracy} when the caller already evaluated this model
    the same way (same task, limit, length, batch size); otherwise it is measured here.
    """

    if trials < 1:
        raise AnalysisError("trials must be >= 1")
    if any(s < 0 for s in sigmas):
        raise AnalysisError(f"σ must be >= 0, got {list(sigmas)}")
    t = as_task(task)
    mnt = t.max_new_tokens(max_new_tokens)
    targets, aliases = select_targets(model, params)
    weights = EvolvingParams(targets)  # the one perturb/restore path ES uses (fp32 master, exact restore)
    kl_texts = source_prompts(t, tokenizer, kl_prompts) if ref_model is not None else []

    def measure() -> dict[str, float]:
        s = evaluate(model, tokenizer, t, "eval", mnt, batch_size, limit).summary
        return {"reward": s["reward_mean"], "accuracy": s["accuracy"]}

    base = dict(baseline) if baseline is not None else measure()
    curves = []
    for sigma in sigmas:
        rows = []
        for k in range(trials):
            weights.perturb(stable_int("robustness", seed, k), 1, sigma)
            try:
                row = measure()
                if ref_model is not None:
                    row["kl"] = kl_on_prompts(model, ref_model, tokenizer, kl_texts, mnt, seed).per_token[
                        "exact"
                    ][0]
            finally:
                weights.restore()
            rows.append(row)
            if log:
                log(f"robustness σ={sigma:g} trial {k}: reward={row['reward']:.4f}")
        curves.append(_curve(sigma, rows, base))
    restored = weights.model_matches_master()
    return {
        "task": t.name,
        "params": list(params),
        "perturbed": [n for n, _ in targets],
        "tied_aliases": aliases,
        "numel": sum(p.numel() for _, p in targets),
        "limit": limit,
        "max_new_tokens": mnt,
        "seed": seed,
        "trials": trials,
        "baseline": base,
        "curves": curves,
        "restored": restored,
    }


def _curve(sigma: float, rows: Sequence[dict[str, float]], base: dict[str, float]) -> dict[str, Any]:
    """Per-σ mean ± std over trials; degradation = unperturbed − perturbed (positive = worse)."""
    rewards = [r["reward"] for r in rows]
    accs = [r["accuracy"] for r in rows]
    out: dict[str, Any] = {"sigma": sigma, "reward": rewards, "accuracy": accs}
    out["reward_mean"], out["reward_std"] = mean_std(rewards)
    out["accuracy_mean"], out["accuracy_std"] = mean_std(accs)
    out["degradation_mean"], out["degradation_std"] = mean_std([base["reward"] - r for r in rewards])
    out["accuracy_drop_mean"], out["accuracy_drop_std"] = mean_std([base["accuracy"] - a for a in accs])
    if rows and "kl" in rows[0]:
        out["kl"] = [r["kl"] for r in rows]
        out["kl_mean"], out["kl_std"] = mean_std(out["kl"])
    return out


def robustness(
    model: str | Entry,
    task: Any = None,
    sigmas: Sequence[float] = (0.001, 0.003, 0.01),
    trials: int = 8,
    params: str | Sequence[str] = "*",
    limit: int | None = None,
    max_new_tokens: int | None = None,
    batch_size: int = 64,
    seed: int = 0,
    kl: bool = False,
    kl_prompts: int = 8,
    dtype: str = "auto",
    device: str = "auto",
    log: Log | None = None,
    baseline: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Load a model (or run: its latest checkpoint and, by default, its task) and measure robustness.

    `params` is a glob or comma-separated globs over parameter names (e.g. `lm_head*`).
    """

    e = model if isinstance(model, Entry) else resolve_entry(model)
    if task is None:
        if e.task_config is None:
            raise AnalysisError(f"{e.spec}: pass a task (only a run directory brings its own)")
        task = e.task_config
        max_new_tokens = max_new_tokens or e.max_new_tokens  # the run's generation length
    globs = [g.strip() for g in params.split(",") if g.strip()] if isinstance(params, str) else list(params)
    m, tok = load_model(e.path, dtype, device)
    ref = load_model(e.path, dtype, device)[0] if kl else None
    res = robustness_on(
        m,
        tok,
        task,
        sigmas,
        trials,
        globs,
        limit,
        max_new_tokens,
        batch_size,
        seed,
        ref,
        kl_prompts,
        log,
        baseline,
    )
    return {"model": e.label, **res}
