"""Linear mode connectivity: reward along θ(λ) = (1−λ)θ_A + λθ_B and the barrier on the path.

    barrier = max_λ [(1−λ)R_A + λR_B − R(θ(λ))]

is how far the reward on the straight line dips below the chord between the endpoints (0 when
the path never dips; the endpoints themselves contribute 0). Rewards come from evotune's own
`evaluate` (greedy, held-out split) so they match training-time evaluation.

Memory: the endpoints are kept as fp32 tensors (at most two sets at a time) and written into one
working model in place with `torch.lerp`, which is exact at λ = 0 and λ = 1 — so ≈ 3 models, plus
one more when KL to a reference is asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from evotune.analysis.common import as_task, free_memory
from evotune.analysis.kl import kl_on_prompts, source_prompts
from evotune.backends.models import load_model
from evotune.backends.resolve import Entry, resolve_entries
from evotune.errors import AnalysisError
from evotune.evaluation import evaluate

Log = Callable[[str], None]


def barrier(lambdas: Sequence[float], values: Sequence[float]) -> tuple[float, float]:
    """(height, λ at the maximum) of the chord-minus-curve gap; the curve must run λ=0 → λ=1."""
    if len(lambdas) != len(values) or len(lambdas) < 2:
        raise ValueError("barrier needs matching λ and value lists with at least the two endpoints")
    r0, r1 = values[0], values[-1]
    gaps = [((1 - lam) * r0 + lam * r1 - v, lam) for lam, v in zip(lambdas, values, strict=True)]
    height, lam = max(gaps, key=lambda g: g[0])  # the first maximum: λ=0 for a flat path
    return max(height, 0.0), lam


def grid(points: int) -> list[float]:
    """`points` evenly spaced λ in [0, 1], endpoints exact."""
    if points < 2:
        raise AnalysisError("an interpolation grid needs at least 2 points")
    return [i / (points - 1) for i in range(points)]


def endpoint_tensors(model: Any) -> dict[str, torch.Tensor]:
    """fp32 copies of a model's parameters (tied weights once), keyed by parameter name."""
    return {n: p.detach().to(torch.float32, copy=True) for n, p in model.named_parameters()}


@torch.no_grad()
def interpolate_(
    model: Any, a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], lam: float
) -> None:
    """Write (1−λ)a + λb into the model's parameters in place (exactly a at λ=0, b at λ=1)."""
    for n, p in model.named_parameters():
        p.copy_(torch.lerp(a[n], b[n], lam))


def _check_compatible(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], la: str, lb: str) -> None:
    if a.keys() != b.keys():
        diff = sorted(set(a) ^ set(b))
        raise AnalysisError(f"{la} and {lb} have different parameters (e.g. {diff[0]}); cannot interpolate")
    for n in a:
        if a[n].shape != b[n].shape:
            raise AnalysisError(f"{n}: shape {tuple(a[n].shape)} in {la} vs {tuple(b[n].shape)} in {lb}")


def lmc_curves(
    endpoints: Sequence[str | Entry],
    pairs: Sequence[tuple[int, int]],
    task: Any,
    points: int = 11,
    limit: int | None = None,
    max_new_tokens: int | None = None,
    batch_size: int = 64,
    kl: bool = False,
    kl_ref: int | None = None,
    kl_prompts: int = 8,
    seed: int = 0,
    dtype: str = "auto",
    device: str = "auto",
    names: Sequence[str] | None = None,
    log: Log | None = None,
    known: Mapping[str, Mapping[str, float]] | None = None,
) -> dict[str, Any]:
    """Reward/accuracy (and KL to endpoint `kl_ref`) along each pair (i, j) of `endpoints`.

    Endpoint evaluations are shared between pairs: λ=0 and λ=1 reproduce the endpoints
    exactly, so each endpoint is evaluated once. `known` maps endpoint labels to results the
    caller already has from the same evaluation (same task, limit, length, batch size), which
    are then not recomputed (with `reward_items` when the caller kept them); it is ignored when KL
    is asked for. Each point keeps its per-item rewards (`reward_items`), the same items at every
    λ, so a barrier can be judged on paired per-item differences (`evotune.stats`).
    """

    entries = resolve_entries(endpoints)
    t = as_task(task)
    lams = grid(points)
    work, tok = load_model(entries[pairs[0][0]].path if pairs else entries[0].path, dtype, device)
    ref = None
    kl_texts: list[str] = []
    if kl:
        ref, _ = load_model(entries[0 if kl_ref is None else kl_ref].path, dtype, device)
        kl_texts = source_prompts(t, tok, kl_prompts)
    mnt = max_new_tokens or t.default_max_new_tokens
    cache: dict[str, dict[str, torch.Tensor]] = {}
    at_end: dict[str, dict[str, Any]] = {} if kl else {k: dict(v) for k, v in (known or {}).items()}

    def tensors(i: int, keep: set[str]) -> dict[str, torch.Tensor]:
        """Endpoint i's tensors, evicting every cached endpoint not in `keep` before a load."""
        label = entries[i].label
        if label not in cache:
            for k in [k for k in cache if k not in keep]:
                del cache[k]
            free_memory()
            m, _ = load_model(entries[i].path, dtype, device)
            cache[label] = endpoint_tensors(m)
            del m
        return cache[label]

    def measure() -> dict[str, Any]:
        res = evaluate(work, tok, t, "eval", mnt, batch_size, limit)
        out = {"reward": res.summary["reward_mean"], "accuracy": res.summary["accuracy"],
               "reward_items": [r["reward"] for r in res.rows]}  # same items at every λ: paired barriers
        if ref is not None:
            k = kl_on_prompts(work, ref, tok, kl_texts, mnt, seed)
            out["kl"], out["kl_se"] = k.per_token["exact"]
            out["kl_k3"] = k.per_token["k3"][0]
        return out

    results = []
    for pi, (i, j) in enumerate(pairs):
        keep = {entries[i].label, entries[j].label}
        a, b = tensors(i, keep), tensors(j, keep)
        _check_compatible(a, b, entries[i].label, entries[j].label)
        curve: dict[str, list[Any]] = {
            "reward": [], "accuracy": [], "reward_items": [], "kl": [], "kl_se": [], "kl_k3": []
        }
        for lam in lams:
            end = entries[i].label if lam == 0 else entries[j].label if lam == 1 else None
            if end is not None and end in at_end:
                row = at_end[end]
            else:
                interpolate_(work, a, b, lam)
                row = measure()
                if end is not None:
                    at_end[end] = row
            for k in curve:
                curve[k].append(row.get(k))
            if log:
                log(f"lmc {entries[i].label}→{entries[j].label} λ={lam:.2f} reward={row['reward']:.4f}")
        rec: dict[str, Any] = {
            "name": names[pi] if names else f"{entries[i].label}→{entries[j].label}",
            "a": entries[i].label,
            "b": entries[j].label,
            "lambdas": lams,
            "reward": curve["reward"],
            "accuracy": curve["accuracy"],
            "reward_items": curve["reward_items"],  # per λ, per held-out item (None where not kept)
        }
        if ref is not None:
            rec.update(kl=curve["kl"], kl_se=curve["kl_se"], kl_k3=curve["kl_k3"])
        for metric in ("reward", "accuracy"):
            h, lam = barrier(lams, curve[metric])
            rec[f"barrier_{metric}"] = {"height": h, "lambda": lam}
        results.append(rec)
    cache.clear()
    free_memory()
    return {
        "task": t.name,
        "points": points,
        "limit": limit,
        "max_new_tokens": mnt,
        "kl_ref": entries[0 if kl_ref is None else kl_ref].label if kl else None,
        "pairs": results,
    }


def lmc(
    a: str | Entry,
    b: str | Entry,
    task: Any,
    base: str | Entry | None = None,
    points: int = 11,
    **kwargs: Any,
) -> dict[str, Any]:
    """base→A, base→B and A→B in one call (just A→B without a base); KL is measured to the base."""
    if base is None:
        return lmc_curves([a, b], [(0, 1)], task, points, names=["A→B"], **kwargs)
    return lmc_curves(
        [base, a, b], [(0, 1), (0, 2), (1, 2)], task, points, names=["base→A", "base→B", "A→B"], **kwargs
    )
