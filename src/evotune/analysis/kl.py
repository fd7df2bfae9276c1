"""KL drift KL(π_A ‖ π_B) per token, on completions sampled from π_A at temperature 1.

Sampling from π_A (plain softmax, no top-k/top-p) makes every estimator below an unbiased
estimate of the per-token KL along A's own trajectories. With r = π_B(x)/π_A(x) at the sampled
token x (Schulman, "Approximating KL divergence"):

    k1 = −log r            unbiased, high variance, can be negative per token
    k2 = ½ (log r)²        biased, low variance, ≥ 0
    k3 = (r − 1) − log r   unbiased, low variance, ≥ 0

and `exact` = Σ_v π_A(v) (log π_A(v) − log π_B(v)), the full-vocabulary KL at each sampled
position (what the estimators estimate, at the cost of two full softmaxes). All four are computed
in float64 from the models' logits (error ~1e-14 nats per token), so the KL of nearly identical
models is measured, not fp32 rounding; k3 is TRL's per-token KL term (`tests/test_analysis.py`).

Prompt and completion are scored in one forward pass per model (right-padded, so positions are
the natural ones) and only completion positions count, including the stop token: it was
sampled from π_A too. Means are per token; standard errors are clustered by sequence.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from evotune.analysis.common import as_task, free_memory
from evotune.analysis.general_prompts import GENERAL_PROMPTS, render_general
from evotune.analysis.settings import KLSettings
from evotune.backends.hf import Completion, generate
from evotune.backends.models import load_model
from evotune.backends.resolve import Entry, resolve_entries, resolve_entry
from evotune.errors import AnalysisError
from evotune.hashing import stable_int
from evotune.stats import mean_se, ratio_mean_se

ESTIMATORS = ("k1", "k2", "k3", "exact")
GENERAL = "general"


def token_kl_terms(
    logits_a: torch.Tensor, logits_b: torch.Tensor, tokens: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Per-position KL terms for `tokens` sampled from A; logits are [n, V], tokens [n].

    Returns float64 tensors of shape [n] for k1, k2, k3 and the exact full-vocabulary KL.
    Everything from the softmax on is float64: in fp32 the log-probabilities (magnitude ~10) carry
    ~1e-6 absolute error, which is the whole KL of two nearly identical models (base vs itself, an
    LMC point next to an endpoint) and made single positions negative. k3 = O(log r²) hid it.
    """
    if logits_a.shape != logits_b.shape:
        raise AnalysisError(f"logits shapes differ: {tuple(logits_a.shape)} vs {tuple(logits_b.shape)}")
    la = torch.log_softmax(logits_a.double(), dim=-1)
    lb = torch.log_softmax(logits_b.double(), dim=-1)
    idx = tokens.long().view(-1, 1)
    log_r = lb.gather(-1, idx).squeeze(-1) - la.gather(-1, idx).squeeze(-1)
    exact = (la.exp() * (la - lb)).sum(-1)
    return {
        "k1": -log_r,
        "k2": 0.5 * log_r.square(),
        "k3": torch.expm1(log_r) - log_r,
        "exact": exact,
    }


@dataclass(frozen=True)
class Sample:
    """A sampled completion with its exact token ids (the stop token included, padding not)."""

    prompt_ids: list[int]
    completion_ids: list[int]
    completion: Completion


def sample_completions(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    max_new_tokens: int,
    seed: int = 0,
    batch_size: int = 16,
) -> list[Sample]:
    """Samples at T=1 (no top-k/top-p) from the shared `generate`, with their exact token ids
    (re-tokenising the text would not give back the ids that were sampled)."""
    comps = generate(model, tokenizer, prompts, max_new_tokens, batch_size, temperature=1.0, seed=seed)
    return [
        Sample(tokenizer(p, add_special_tokens=False)["input_ids"], list(c.token_ids), c)
        for p, c in zip(prompts, comps, strict=True)
    ]


@torch.no_grad()
def sequence_kl_terms(
    model_a: Any, model_b: Any, samples: Sequence[Sample], pad_id: int = 0, micro_batch: int = 4
) -> list[dict[str, torch.Tensor]]:
    """Per-sequence, per-completion-token KL terms (one forward pass per model per micro-batch)."""
    device = next(model_a.parameters()).device
    out: list[dict[str, torch.Tensor]] = []
    for start in range(0, len(samples), micro_batch):
        chunk = list(samples[start : start + micro_batch])
        seqs = [s.prompt_ids + s.completion_ids for s in chunk]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):  # right padding: real tokens keep positions 0..len-1
            ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
            mask[i, : len(s)] = 1
        ids, mask = ids.to(device), mask.to(device)
        logits_a = model_a(input_ids=ids, attention_mask=mask).logits
        logits_b = model_b(input_ids=ids, attention_mask=mask).logits
        if logits_a.shape[-1] != logits_b.shape[-1]:
            raise AnalysisError(f"vocabulary sizes differ: {logits_a.shape[-1]} vs {logits_b.shape[-1]}")
        for i, s in enumerate(chunk):
            p, n = len(s.prompt_ids), len(s.completion_ids)
            pos = slice(p - 1, p + n - 1)  # logits at t predict token t+1
            toks = torch.tensor(s.completion_ids, dtype=torch.long, device=device)
            out.append(
                {k: v.cpu() for k, v in token_kl_terms(logits_a[i, pos], logits_b[i, pos], toks).items()}
            )
        del logits_a, logits_b
    return out


@dataclass
class KLResult:
    """Per-token KL estimates (mean, clustered SE) and per-sequence sums, with a few samples."""

    per_token: dict[str, tuple[float, float]]
    per_sequence: dict[str, tuple[float, float]]
    n_tokens: int
    n_seqs: int
    samples: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {k: {"mean": m, "se": se} for k, (m, se) in self.per_token.items()}
        d["per_sequence"] = {k: {"mean": m, "se": se} for k, (m, se) in self.per_sequence.items()}
        d.update(n_tokens=self.n_tokens, n_seqs=self.n_seqs, samples=self.samples)
        return d


def summarize_terms(per_seq: Sequence[Mapping[str, torch.Tensor]], samples: Sequence[str] = ()) -> KLResult:
    counts = [int(t["k1"].numel()) for t in per_seq]
    per_token, per_sequence = {}, {}
    for k in ESTIMATORS:
        sums = [float(t[k].sum()) for t in per_seq]
        per_token[k] = ratio_mean_se(sums, counts)
        per_sequence[k] = mean_se(sums)
    return KLResult(per_token, per_sequence, sum(counts), len(per_seq), list(samples))


def kl_on_prompts(
    model_a: Any,
    model_b: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    max_new_tokens: int,
    seed: int = 0,
    batch_size: int = 16,
    micro_batch: int = 4,
    keep_samples: int = 3,
) -> KLResult:
    """KL(π_A ‖ π_B) per token on completions of `prompts` sampled from A."""
    if not prompts:
        raise AnalysisError("no prompts to measure KL on")
    samples = sample_completions(model_a, tokenizer, prompts, max_new_tokens, seed, batch_size)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    terms = sequence_kl_terms(model_a, model_b, samples, pad, micro_batch)
    return summarize_terms(terms, [s.completion.text for s in samples[:keep_samples]])


def check_same_vocab(tok_a: Any, tok_b: Any) -> None:
    """KL across tokenizers is meaningless: refuse unless both map tokens to the same ids."""
    if len(tok_a) != len(tok_b) or tok_a.get_vocab() != tok_b.get_vocab():
        raise AnalysisError("the two models use different tokenizers; KL needs a shared vocabulary")


def source_prompts(source: Any, tokenizer: Any, n_prompts: int) -> list[str]:
    """Rendered held-out prompts of a task, or the built-in general prompts for `general`."""

    if source == GENERAL:
        return [render_general(p, tokenizer) for p in GENERAL_PROMPTS[:n_prompts]]
    return [source.render(e, tokenizer) for e in source.split("eval")[:n_prompts]]


def build_sources(entries: Sequence[Entry], tasks: Sequence[Any] | None) -> dict[str, Any]:
    """Task name → Task. A run's own task settings win for its task name (its held-out split)."""
    run_cfgs = {e.task_config.name: e.task_config for e in entries if e.task_config is not None}
    out: dict[str, Any] = {}
    for t in tasks if tasks is not None else list(run_cfgs.values()):
        if isinstance(t, str) and t in run_cfgs:
            t = run_cfgs[t]
        task = as_task(t)
        out[task.name] = task
    return out


def kl_matrix(
    models: Sequence[str | Entry],
    base: str | Entry,
    tasks: Sequence[Any] | None = None,
    settings: KLSettings | None = None,
) -> dict[str, Any]:
    """Task × model matrix of KL(π_model ‖ π_base): held-out prompts of each task, plus general ones.

    A run's own task is its on-task source; every other source is off-task. Models are loaded
    one at a time next to the base, so memory stays at two models. Lengths: `KLSettings`.
    """
    s = settings or KLSettings()
    base_e = base if isinstance(base, Entry) else resolve_entry(base)
    entries_f = resolve_entries(models, base_e)
    sources: dict[str, Any] = build_sources(entries_f, tasks)
    if s.general:
        sources[GENERAL] = GENERAL
    if not sources:
        raise AnalysisError("no prompt sources: pass tasks (or runs, which bring their task)")
    base_model, base_tok = load_model(base_e.path, s.dtype, s.device)
    cells: dict[str, dict[str, Any]] = {src: {} for src in sources}
    on_task = {e.label: (e.task_config.name if e.task_config is not None else None) for e in entries_f}
    for e in entries_f:
        model, tok = load_model(e.path, s.dtype, s.device)
        check_same_vocab(tok, base_tok)
        for name, src in sources.items():
            mnt = _length(name, src, s.max_new_tokens, e if on_task[e.label] == name else None,
                          s.general_max_new_tokens)
            prompts = source_prompts(src, tok, s.n_prompts)
            res = kl_on_prompts(
                model, base_model, tok, prompts, mnt, stable_int(s.seed, name), s.batch_size, s.micro_batch
            )
            cells[name][e.label] = res.to_dict() | {"max_new_tokens": mnt}
        del model
        free_memory()
    summary = {e.label: _on_off(cells, e.label, on_task[e.label]) for e in entries_f}
    return {
        "base": base_e.label,
        "models": [e.label for e in entries_f],
        "sources": list(sources),
        "on_task": on_task,
        "n_prompts": s.n_prompts,
        "seed": s.seed,
        "cells": cells,
        "summary": summary,
    }


def _length(
    name: str, src: Any, given: int | Mapping[str, int] | None, own: Entry | None, general: int
) -> int:
    if isinstance(given, Mapping) and name in given:
        return int(given[name])
    if isinstance(given, int):
        return given
    if own is not None and own.max_new_tokens:
        return own.max_new_tokens
    return general if src == GENERAL else src.default_max_new_tokens


def _on_off(cells: Mapping[str, Mapping[str, Any]], label: str, own: str | None) -> dict[str, Any]:
    """On-task cell and the equal-weight mean over off-task sources (SEs combined in quadrature)."""
    out: dict[str, Any] = {"on_task": None, "off_task": None}
    if own is not None and own in cells:
        out["on_task"] = {k: dict(cells[own][label][k]) for k in ESTIMATORS}
    off = [s for s in cells if s != own]
    if off:
        agg = {}
        for k in ESTIMATORS:
            means = [cells[s][label][k]["mean"] for s in off]
            ses = [cells[s][label][k]["se"] for s in off]
            se = math.sqrt(sum(x * x for x in ses)) / len(ses) if all(x == x for x in ses) else math.nan
            agg[k] = {"mean": math.fsum(means) / len(means), "se": se}
        out["off_task"] = agg
        out["off_task_sources"] = off
    return out
