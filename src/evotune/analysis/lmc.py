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
from evotune.analysis.settings import LMCSettings
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


class _Endpoints:
    """fp32 tensors of the endpoints in use; every other cached endpoint is evicted before a load."""

    def __init__(self, entries: Sequence[Entry], s: LMCSettings) -> None:
        self.entries, self.s = entries, s
        self.cache: dict[str, dict[str, torch.Tensor]] = {}

    def get(self, i: int, keep: set[str]) -> dict[str, torch.Tensor]:
        """Endpoint i's tensors, loading it (after evicting all not in `keep`) on first use."""
        label = self.entries[i].label
        if label not in self.cache:
            for k in [k for k in self.cache if k not in keep]:
                del self.cache[k]
            free_memory()
            m, _ = load_model(self.entries[i].path, self.s.dtype, self.s.device)
            self.cache[label] = endpoint_tensors(m)
            del m
        return self.cache[label]

    def pair(self, i: int, j: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Endpoints i and j, checked to be interpolable (at most these two stay in memory)."""
        keep = {self.entries[i].label, self.entries[j].label}
        a, b = self.get(i, keep), self.get(j, keep)
        _check_compatible(a, b, self.entries[i].label, self.entries[j].label)
        return a, b


class _Probe:
    """The working model θ(λ) and how one point is measured: greedy reward, and KL to a reference."""

    def __init__(self, entries: Sequence[Entry], pairs: Sequence[tuple[int, int]], task: Any, s: LMCSettings) -> None:
        self.t, self.s = task, s
        self.lams = grid(s.points)  # before any load: a bad grid fails fast
        self.work, self.tok = load_model(entries[pairs[0][0]].path if pairs else entries[0].path, s.dtype, s.device)
        self.ref = None
        self.kl_texts: list[str] = []
        if s.kl:
            self.ref, _ = load_model(entries[0 if s.kl_ref is None else s.kl_ref].path, s.dtype, s.device)
            self.kl_texts = source_prompts(task, self.tok, s.kl_prompts)
        self.mnt = s.max_new_tokens or task.default_max_new_tokens

    def measure(self) -> dict[str, Any]:
        res = evaluate(self.work, self.tok, self.t, "eval", self.mnt, self.s.batch_size, self.s.limit)
        out = {"reward": res.summary["reward_mean"], "accuracy": res.summary["accuracy"],
               "reward_items": [r["reward"] for r in res.rows]}  # same items at every λ: paired barriers
        if self.ref is not None:
            k = kl_on_prompts(self.work, self.ref, self.tok, self.kl_texts, self.mnt, self.s.seed)
            out["kl"], out["kl_se"] = k.per_token["exact"]
            out["kl_k3"] = k.per_token["k3"][0]
        return out

    def walk(
        self, a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], ends: tuple[str, str],
        at_end: dict[str, dict[str, Any]], log: Log | None,
    ) -> dict[str, list[Any]]:
        """The curve from a to b; an endpoint already measured (`at_end`) is reused, a new one recorded."""
        curve: dict[str, list[Any]] = {k: [] for k in ("reward", "accuracy", "reward_items", "kl", "kl_se", "kl_k3")}
        for lam in self.lams:
            end = ends[0] if lam == 0 else ends[1] if lam == 1 else None
            if end is not None and end in at_end:
                row = at_end[end]
            else:
                interpolate_(self.work, a, b, lam)
                row = self.measure()
                if end is not None:
                    at_end[end] = row
            for k in curve:
                curve[k].append(row.get(k))
            if log:
                log(f"lmc {ends[0]}→{ends[1]} λ={lam:.2f} reward={row['reward']:.4f}")
        return curve


def _record(name: str, ends: tuple[str, str], lams: list[float], curve: dict[str, list[Any]], kl: bool) -> dict[str, Any]:
    """One path's result: the curves and the reward / accuracy barriers."""
    rec: dict[str, Any] = {
        "name": name,
        "a": ends[0],
        "b": ends[1],
        "lambdas": lams,
        "reward": curve["reward"],
        "accuracy": curve["accuracy"],
        "reward_items": curve["reward_items"],  # per λ, per held-out item (None where not kept)
    }
    if kl:
        rec.update(kl=curve["kl"], kl_se=curve["kl_se"], kl_k3=curve["kl_k3"])
    for metric in ("reward", "accuracy"):
        h, lam = barrier(lams, curve[metric])
        rec[f"barrier_{metric}"] = {"height": h, "lambda": lam}
    return rec


def lmc_curves(
    endpoints: Sequence[str | Entry],
    pairs: Sequence[tuple[int, int]],
    task: Any,
    settings: LMCSettings | None = None,
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
    s = settings or LMCSettings()
    entries = resolve_entries(endpoints)
    probe = _Probe(entries, pairs, as_task(task), s)
    at_end: dict[str, dict[str, Any]] = {} if s.kl else {k: dict(v) for k, v in (known or {}).items()}
    tensors = _Endpoints(entries, s)
    results = []
    for pi, (i, j) in enumerate(pairs):
        a, b = tensors.pair(i, j)
        ends = (entries[i].label, entries[j].label)
        curve = probe.walk(a, b, ends, at_end, log)
        results.append(_record(names[pi] if names else f"{ends[0]}→{ends[1]}", ends, probe.lams, curve, probe.ref is not None))
    tensors.cache.clear()
    free_memory()
    return {
        "task": probe.t.name,
        "points": s.points,
        "limit": s.limit,
        "max_new_tokens": probe.mnt,
        "kl_ref": entries[0 if s.kl_ref is None else s.kl_ref].label if s.kl else None,
        "pairs": results,
    }


def lmc(
    a: str | Entry,
    b: str | Entry,
    task: Any,
    base: str | Entry | None = None,
    log: Log | None = None,
    **settings: Any,
) -> dict[str, Any]:
    """base→A, base→B and A→B in one call (just A→B without a base); KL is measured to the base.

    `settings` are `LMCSettings` fields (points, limit, kl, ...), given by name for convenience.
    """
    s = LMCSettings(**settings)
    if base is None:
        return lmc_curves([a, b], [(0, 1)], task, s, names=["A→B"], log=log)
    return lmc_curves([base, a, b], [(0, 1), (0, 2), (1, 2)], task, s, names=["base→A", "base→B", "A→B"], log=log)
