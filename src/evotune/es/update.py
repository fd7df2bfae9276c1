"""The ES update step: a population's fitness (or per-prompt rewards) → one optimizer step on θ.

The same function serves the live iteration and every rebuild of it (resume, replay, Ray replicas),
which is why the weights of iteration k are a pure function of the base model and k trajectory rows.
"""

from __future__ import annotations

from typing import Any

from evotune.config import TrainConfig
from evotune.errors import RunStateError
from evotune.es.params import EvolvingParams
from evotune.es.schedules import alpha_at
from evotune.es.strategy import Member, ask, null_permutation, tell


def members_of(row: dict[str, Any], cfg: TrainConfig) -> list[Member]:
    """The members a trajectory row records, checked against what `ask` derives from the config."""
    expect = ask(cfg.seed, row["step"], cfg.es.population, cfg.es.antithetic, reuse=cfg.es.noise_reuse)
    got = [Member(i, s, g) for i, (s, g) in enumerate(zip(row["seeds"], row["signs"], strict=True))]
    if [(m.seed, m.sign) for m in got] != [(m.seed, m.sign) for m in expect]:
        raise RunStateError(f"trajectory row {row['step']} has seeds that this config does not produce")
    return got


def update(
    params: EvolvingParams, members: list[Member], row: dict[str, Any], cfg: TrainConfig
) -> dict[str, float] | None:
    """The update of iteration `row["step"]` from its fitness (or rewards): live training and replay.

    Returns the update's norms (None: no update). With `es.clip_update_norm` the clip factor is
    recorded in the row when live and read back from it in replay, so replay needs no second pass.
    """
    es = cfg.es
    rewards = row.get("rewards")
    if es.baseline not in ("none", "center") and rewards is None:
        raise RunStateError(
            f"trajectory row {row['step']} has no per-prompt rewards, which es.baseline={es.baseline} needs"
        )
    fitness = row["fitness"]
    if es.null_control:  # the null-ES control: fitness no longer belongs to the member that earned it
        perm = null_permutation(cfg.seed, row["step"], len(fitness))
        fitness = [fitness[i] for i in perm]
        rewards = [rewards[i] for i in perm] if rewards is not None else None
    if es.baseline == "center" and row.get("center") is None:
        raise RunStateError(f"trajectory row {row['step']} has no centre fitness, which es.baseline=center needs")
    coeffs = tell(members, fitness, es.shaping, es.baseline, rewards, row.get("center"))
    if coeffs is None:
        return None
    info = params.apply_update(coeffs, alpha_at(es, row["step"]), es.clip_update_norm, row.get("clip_scale"))
    if es.clip_update_norm is not None:
        row["clip_scale"] = info["clip_scale"]
    return info


def apply_row(params: EvolvingParams, row: dict[str, Any], cfg: TrainConfig) -> bool:
    """Re-apply one committed iteration from its recorded fitness: the live update, to the bit."""
    return update(params, members_of(row, cfg), row, cfg) is not None
