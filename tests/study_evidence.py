"""Constructed study evidence whose right verdicts are known: the claims' rules are tested on it.

Update geometry comes from real random vectors (one per model and layer, d_layer numbers), so cosines
and norms behave as measured ones do: an ES that learned nothing is a sum of random directions,
orthogonal to everything, with the norm its hyper-parameters fix.
"""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np

from evotune.study.evidence import FORMAT

LAYERS = [str(i) for i in range(6)]
D_LAYER = 4000


def _vectors(kind: dict[str, Any], rng: np.random.Generator, shared: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per layer (and lm_head): signal·shared direction of the method + diffusion·random direction."""
    out = {}
    for layer in [*LAYERS, "lm_head"]:
        sig = kind["head_signal"] if layer == "lm_head" else kind["signal"]
        noise = rng.standard_normal(D_LAYER)
        out[layer] = sig * shared[layer] + kind["diffusion"] * noise / math.sqrt(D_LAYER)
    return out


def make_evidence(
    es_gain: float = 20.0, gr_gain: float = 20.0, null_gain: float = 0.0, es_acc: float = 0.6, gr_acc: float = 0.6,
    n_items: int = 200, item_sd: float = 3.0, seeds: int = 3,
    es_signal: float = 1.0, es_diffusion: float = 0.3, es_head: float = 0.1,
    gr_signal: float = 1.0, gr_diffusion: float = 1.0, gr_head: float = 1.0, null_diffusion: float = 0.3,
    es_kl: float = 0.05, gr_kl: float = 0.01, null_kl: float = 0.01,
    dip: float = 0.0, same_dip: float = 0.0, es_shape: str = "linear", gr_shape: str = "linear",
    es_deg: float = 6.0, gr_deg: float = 1.0, es_big_gain: float = 3.0, null_deg: float = 1.0,
    es_hack: float = 0.0, gr_hack: float = 0.3, hybrid_like: str | None = None,
    passk: tuple[list[int], list[int]] | None = None, seed: int = 0, es_behaviour: float = 1.0, path_sd: float = 1.0,
    seed_sd: float = 0.0,
) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    prng = random.Random(seed)
    labels = {"es": [f"es_seed{s}" for s in range(seeds)], "grpo": [f"grpo_seed{s}" for s in range(seeds)],
              "es_null": [f"es_null_seed{s}" for s in range(seeds)]}
    if hybrid_like:
        labels["grpo_es"] = [f"grpo_es_seed{s}" for s in range(seeds)]
    models: dict[str, Any] = {"base": {"method": "base", "seed": None, "run": None}}
    for meth, ls in labels.items():
        for i, m in enumerate(ls):
            models[m] = {"method": meth, "seed": i, "run": m, "wall_s": 100.0}
            if meth in ("es", "es_null"):
                models[m]["es"] = {"alpha": 0.003, "sigma": 0.003, "population": 8, "shaping": "zscore",
                                   "optimizer": "sgd", "noise": "full", "null_control": meth == "es_null",
                                   "iterations": 6, "updates": 6, "noise_version": [2]}
    # per-item rewards: base item difficulty + a method gain; behaviour shared across seeds of ES
    base = [prng.gauss(-50, 15) for _ in range(n_items)]
    es_profile = [prng.gauss(0, 6) for _ in range(n_items)]  # which items ES improves: shared by its seeds
    gr_profile = [prng.gauss(0, 6) for _ in range(n_items)]

    def rewards(gain: float, profile: list[float] | None, weight: float = 1.0) -> list[float]:
        gain += prng.gauss(0, seed_sd) if seed_sd else 0.0  # seed-to-seed spread of a method's gain
        return [b + gain + (weight * p if profile else 0.0) + prng.gauss(0, item_sd)
                for b, p in zip(base, profile or [0.0] * n_items, strict=True)]

    def correct(acc: float) -> list[bool]:
        return [prng.random() < acc for _ in range(n_items)]

    per: dict[str, Any] = {"base": {"t": {"reward": base, "correct": correct(0.45)}}}
    hy_gain = {"es": es_gain, "grpo": gr_gain}.get(hybrid_like or "", (es_gain + gr_gain) / 2)
    for meth, ls in labels.items():
        for m in ls:
            if meth == "es":
                r, c = rewards(es_gain, es_profile, es_behaviour), correct(es_acc)
            elif meth == "grpo":
                r, c = rewards(gr_gain, gr_profile), correct(gr_acc)
            elif meth == "es_null":
                r, c = rewards(null_gain, None), correct(0.45)
            else:
                r, c = rewards(hy_gain, gr_profile), correct((es_acc + gr_acc) / 2)
            per[m] = {"t": {"reward": r, "correct": c}}
    for cell in per.values():
        for t in cell.values():
            t["reward_mean"] = sum(t["reward"]) / n_items
            t["accuracy"] = sum(t["correct"]) / n_items
    # geometry from real vectors
    shared = {meth: {layer: rng.standard_normal(D_LAYER) / math.sqrt(D_LAYER) for layer in [*LAYERS, "lm_head"]}
              for meth in labels}
    kinds = {"es": {"signal": es_signal, "head_signal": es_head, "diffusion": es_diffusion},
             "grpo": {"signal": gr_signal, "head_signal": gr_head, "diffusion": gr_diffusion},
             "es_null": {"signal": 0.0, "head_signal": 0.0, "diffusion": null_diffusion},
             "grpo_es": {"signal": gr_signal, "head_signal": gr_head, "diffusion": gr_diffusion}}
    vecs = {m: _vectors(kinds[meth], rng, shared["grpo" if meth == "grpo_es" else meth])
            for meth, ls in labels.items() for m in ls}
    order = list(vecs)

    def block(layers: list[str]) -> dict[str, Any]:
        full = {m: np.concatenate([vecs[m][x] for x in layers]) for m in order}
        norms = [float(np.linalg.norm(full[m])) for m in order]
        cos = [[float(full[a] @ full[b] / (np.linalg.norm(full[a]) * np.linalg.norm(full[b]))) for b in order]
               for a in order]
        return {"numel": D_LAYER * len(layers) * 1000, "base_norm": 100.0, "norm": norms, "cos": cos}

    geometry = {"models": order, "total": block([*LAYERS, "lm_head"]),
                "layers": {x: block([x]) for x in LAYERS}, "modules": {"lm_head": block(["lm_head"])}}
    like = {"es": 1.0, "grpo": 0.0}.get(hybrid_like or "", 0.5)  # where grpo_es sits between GRPO (0) and ES (1)
    kl_level = {"es": es_kl, "grpo": gr_kl, "es_null": null_kl, "grpo_es": like * es_kl + (1 - like) * gr_kl}
    kl = {"sources": ["t", "o", "general"],
          "summary": {m: {"off_task": kl_level[meth] * (1 + 0.1 * prng.gauss(0, 1)), "on_task": None}
                      for meth, ls in labels.items() for m in ls}}

    def path(a: str, b: str, shape: str, d: float) -> dict[str, Any]:
        lams = [0.0, 0.25, 0.5, 0.75, 1.0]
        ra, rb = per[a]["t"]["reward"], per[b]["t"]["reward"]
        rows = []
        for lam in lams:
            w = lam if shape == "linear" else lam**8
            bump = d * 4 * lam * (1 - lam)
            rows.append([(1 - w) * x + w * y - bump + (prng.gauss(0, path_sd) if 0 < lam < 1 else 0.0)
                         for x, y in zip(ra, rb, strict=True)])
        return {"a": a, "b": b, "lambdas": lams, "reward": [sum(r) / len(r) for r in rows], "reward_items": rows}

    lmc = [path("base", m, es_shape, 0.0) for m in labels["es"]] + \
          [path("base", m, gr_shape, 0.0) for m in labels["grpo"]]
    lmc += [path(a, b, "linear", dip) for a in labels["es"] for b in labels["grpo"]]
    for meth in ("es", "grpo"):
        ls = labels[meth]
        lmc += [path(a, b, "linear", same_dip) for i, a in enumerate(ls) for b in ls[i + 1:]]

    def robust(m: str, deg: float, big: float) -> dict[str, Any]:
        b = per[m]["t"]["reward_mean"]
        return {"baseline": b, "curves": [
            {"sigma": 0.001, "trials": [b - deg + prng.gauss(0, 0.5) for _ in range(8)]},
            {"sigma": 0.003, "trials": [b + big + prng.gauss(0, 0.5) for _ in range(8)]}]}

    robustness = {m: robust(m, es_deg, es_big_gain) for m in labels["es"]}
    robustness |= {m: robust(m, gr_deg, -5.0) for m in labels["grpo"]}
    robustness |= {m: robust(m, null_deg, -5.0) for m in labels["es_null"]}
    hack = {"base": {"t": {"hack_empty": 0.0, "hack_truncated": 0.1}}}
    rate = {"es": es_hack, "grpo": gr_hack, "es_null": 0.0, "grpo_es": like * es_hack + (1 - like) * gr_hack}
    for meth, ls in labels.items():
        for m in ls:
            hack[m] = {"t": {"hack_empty": max(0.0, rate[meth] + prng.gauss(0, 0.02)), "hack_truncated": 0.1}}
    pk = None
    if passk:
        pk = {"n": 8, "task": "t", "perturbation_draws": "per prompt", "temperature": {"value": 1.0, "counts": passk[0]},
              "perturbation": {"value": 0.001, "counts": passk[1]}}
    return {"format": FORMAT, "study": {"name": "constructed", "margins": {}, "budget": {"completions": 768}},
            "primary_task": "t", "tasks": ["t"], "models": models, "rewards": per, "hacking": hack,
            "geometry": geometry, "kl": kl, "lmc": lmc, "robustness": robustness, "passk": pk}
