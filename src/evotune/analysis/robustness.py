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
from dataclasses import replace
from typing import Any

import torch

from evotune.analysis.common import as_task
from evotune.analysis.kl import kl_on_prompts, source_prompts
from evotune.analysis.settings import RobustnessSettings
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
    settings: RobustnessSettings | None = None,
    ref_model: Any = None,
    log: Log | None = None,
    baseline: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Robustness of an already loaded model; KL to `ref_model` (the unperturbed copy) if given.

    `baseline` is the unperturbed {reward, accuracy} when the caller already evaluated this model
    the same way (same task, limit, length, batch size); otherwise it is measured here.
    """
    s = settings or RobustnessSettings()
    if s.trials < 1:
        raise AnalysisError("trials must be >= 1")
    if any(sigma < 0 for sigma in s.sigmas):
        raise AnalysisError(f"σ must be >= 0, got {list(s.sigmas)}")
    t = as_task(task)
    mnt = t.max_new_tokens(s.max_new_tokens)
    params = s.globs()
    targets, aliases = select_targets(model, params)
    weights = EvolvingParams(targets)  # the one perturb/restore path ES uses (fp32 master, exact restore)
    kl_texts = source_prompts(t, tokenizer, s.kl_prompts) if ref_model is not None else []

    def measure(perturbed: bool) -> dict[str, float]:
        r = evaluate(model, tokenizer, t, "eval", mnt, s.batch_size, s.limit).summary
        row = {"reward": r["reward_mean"], "accuracy": r["accuracy"]}
        if perturbed and ref_model is not None:
            row["kl"] = kl_on_prompts(model, ref_model, tokenizer, kl_texts, mnt, s.seed).per_token["exact"][0]
        return row

    base = dict(baseline) if baseline is not None else measure(False)
    curves = [_curve(sigma, _trials(weights, measure, sigma, s, log), base) for sigma in s.sigmas]
    return {
        "task": t.name,
        "params": params,
        "perturbed": [n for n, _ in targets],
        "tied_aliases": aliases,
        "numel": sum(p.numel() for _, p in targets),
        "limit": s.limit,
        "max_new_tokens": mnt,
        "seed": s.seed,
        "trials": s.trials,
        "baseline": base,
        "curves": curves,
        "restored": weights.model_matches_master(),
    }


def _trials(
    weights: EvolvingParams, measure: Callable[[bool], dict[str, float]], sigma: float, s: RobustnessSettings,
    log: Log | None,
) -> list[dict[str, float]]:
    """`s.trials` seeded perturbations at σ, each measured and then restored exactly."""
    rows = []
    for k in range(s.trials):
        weights.perturb(stable_int("robustness", s.seed, k), 1, sigma)
        try:
            row = measure(True)
        finally:
            weights.restore()
        rows.append(row)
        if log:
            log(f"robustness σ={sigma:g} trial {k}: reward={row['reward']:.4f}")
    return rows


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
    # one trial has no spread to report: null in JSON (shown as "–"), never a NaN or a made-up 0
    return {k: None if k.endswith("_std") and v != v else v for k, v in out.items()}


def robustness(
    model: str | Entry,
    task: Any = None,
    settings: RobustnessSettings | None = None,
    log: Log | None = None,
    baseline: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Load a model (or run: its latest checkpoint and, by default, its task) and measure robustness.

    `settings.params` is a glob or comma-separated globs over parameter names (e.g. `lm_head*`).
    """
    s = settings or RobustnessSettings()
    e = model if isinstance(model, Entry) else resolve_entry(model)
    if task is None:
        if e.task_config is None:
            raise AnalysisError(f"{e.spec}: pass a task (only a run directory brings its own)")
        task = e.task_config
        s = replace(s, max_new_tokens=s.max_new_tokens or e.max_new_tokens)  # the run's generation length
    m, tok = load_model(e.path, s.dtype, s.device)
    ref = load_model(e.path, s.dtype, s.device)[0] if s.kl else None
    return {"model": e.label, **robustness_on(m, tok, task, s, ref, log, baseline)}
