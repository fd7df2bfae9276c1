"""ES as ask/tell: which members to evaluate, and how their fitness becomes an update direction.

Pure functions over seeds and fitness numbers: no model, no files (evosax-style).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from evotune.hashing import stable_int
from evotune.noise import member_seed

Shaping = Literal["zscore", "centered_rank"]
Baseline = Literal["none", "prompt_mean", "prompt_zscore", "center"]
FitnessKind = Literal["mean", "pass_at_k"]


@dataclass(frozen=True)
class Member:
    """One population member: its perturbation is `sign · σ · ε(seed)`.

    `sigma` is this iteration's σ_k, the only way σ reaches an evaluator's perturbation (a σ schedule
    travels with the member, also to Ray replicas); None only for uses that perturb with a σ of their
    own (`sigma_of` refuses it). `sample_seed` seeds sampled completions
    (es.temperature > 0); `ask` gives every member of an iteration the same one (common random
    numbers: members differ by their weights, not by their luck). Sign 0 is the unperturbed centre.
    """

    index: int
    seed: int
    sign: int = 1
    sigma: float | None = None
    sample_seed: int | None = None


def sigma_of(m: Member) -> float:
    """The σ a member is evaluated with: its own, never a default an evaluator might hold apart from the schedule."""
    if m.sigma is None:
        raise ValueError(f"member {m.index} carries no σ: build the population with ask(..., sigma=σ_k)")
    return m.sigma


def noise_iteration(iteration: int, reuse: int = 1) -> int:
    """The iteration whose seeds iteration `iteration` perturbs with: the first of its block of `reuse`."""
    if reuse < 1:
        raise ValueError(f"noise reuse must be >= 1, got {reuse}")
    return (iteration - 1) // reuse * reuse + 1


def sample_seed(run_seed: int, iteration: int) -> int:
    """The sampling seed of every member of one iteration (fresh each iteration, also under noise reuse)."""
    return stable_int("es-sample", run_seed, iteration)


def ask(
    run_seed: int, iteration: int, population: int, antithetic: bool = False, sigma: float | None = None,
    reuse: int = 1,
) -> list[Member]:
    """The population of one iteration. Antithetic pairs share a seed with opposite signs.

    Seeds are unique within a population (a collision, however unlikely, is re-drawn), so no
    member is silently counted twice. With `reuse` K > 1 the seeds of iteration k are those of the
    first iteration of its block of K (noise-reuse ES), a pure function of (k, K).
    """
    if population < 1 or (antithetic and population % 2):
        raise ValueError(f"population must be >= 1 (and even with antithetic pairs), got {population}")
    n_seeds = population // 2 if antithetic else population
    at = noise_iteration(iteration, reuse)
    seeds: list[int] = []
    k = 0
    while len(seeds) < n_seeds:
        s = member_seed(run_seed, at, k)
        k += 1
        if s not in seeds:
            seeds.append(s)
    ss = sample_seed(run_seed, iteration)
    if not antithetic:
        return [Member(i, s, 1, sigma, ss) for i, s in enumerate(seeds)]
    return [Member(i, seeds[i // 2], 1 if i % 2 == 0 else -1, sigma, ss) for i in range(population)]


def center(run_seed: int, iteration: int) -> Member:
    """The unperturbed centre member of an iteration (sign 0), sampled with the members' seed."""
    return Member(-1, 0, 0, 0.0, sample_seed(run_seed, iteration))


def prompt_scores(
    rewards: Sequence[float], correct: Sequence[bool], k: int = 1, fitness: FitnessKind = "mean"
) -> list[float]:
    """Per prompt, the score of its `k` sampled completions (rows prompt-major: prompt i owns rows i·k … i·k+k−1).

    `mean`: their mean reward; `pass_at_k`: 1.0 if any of them is correct, else 0.0 (eggroll-vllm's objective).
    """
    if k < 1 or len(rewards) % k or len(correct) != len(rewards):
        raise ValueError(f"{len(rewards)} rewards / {len(correct)} flags are not whole groups of {k} samples")
    if fitness == "pass_at_k":
        return [1.0 if any(correct[i : i + k]) else 0.0 for i in range(0, len(correct), k)]
    if fitness != "mean":
        raise ValueError(f"unknown fitness {fitness!r}: use mean or pass_at_k")
    if k == 1:
        return [float(r) for r in rewards]
    return [math.fsum(rewards[i : i + k]) / k for i in range(0, len(rewards), k)]


def zscore(fitness: Sequence[float]) -> np.ndarray:
    """(f − mean) / (std + 1e-8) with the population std (ddof 0): the paper's shaping. All-equal fitness gives zeros.

    evosax (`jax.nn.standardize`) divides by √(var + 1e-8) and EGGROLL by √(var + 1e-5): both floor the
    std (at 1e-4 and 3e-3), so a population whose fitness differs by less than that gets z-scores shrunk
    toward 0 and a smaller step. Here 1e-8 only guards 0/0 (`tell` skips all-equal fitness anyway), so
    the z-scores, and the step, do not depend on the fitness scale. Kept: every recorded run replays
    through this formula.
    """
    f = np.asarray(fitness, dtype=np.float64)
    return (f - f.mean()) / (f.std() + 1e-8)


def centered_rank(fitness: Sequence[float]) -> np.ndarray:
    """Ranks mapped to [−0.5, 0.5]; ties share their mean rank so equal fitness gets equal weight.

    evosax's definition (rankdata − 1)/(N − 1) − 0.5, except that one member gets 0 where evosax's 0/0
    gives NaN: a lone member carries no ranking information, and NaN must never reach the weights.
    Σ cᵢ² = N(N+1)/(12(N−1)) against N for z-scores, so at the same α the step is √(12(N−1)/(N+1))
    times smaller (3.35× at N = 30; docs/algorithms.md).
    """
    f = np.asarray(fitness, dtype=np.float64)
    n = len(f)
    if n == 1:
        return np.zeros(1)
    order = np.argsort(f, kind="stable")
    ranks = np.empty(n)
    ranks[order] = np.arange(n, dtype=np.float64)
    for v in np.unique(f):  # average ranks of ties
        m = f == v
        ranks[m] = ranks[m].mean()
    return ranks / (n - 1) - 0.5


SHAPERS = {"zscore": zscore, "centered_rank": centered_rank}


def null_permutation(run_seed: int, iteration: int, n: int) -> list[int]:
    """The null-ES control's permutation of `n` fitness values at `iteration`: a pure function of its inputs.

    Fisher–Yates with each swap drawn from `stable_int` (not a library RNG whose stream may change between
    versions), so replay and resume re-derive it exactly. Permuting (rather than drawing fresh random
    fitness) keeps the fitness values, their shaping and so the step norm exactly; it only breaks the link
    between a member's noise and its fitness.
    """
    perm = list(range(n))
    for i in range(n - 1, 0, -1):
        j = stable_int("null-es", run_seed, iteration, i) % (i + 1)
        perm[i], perm[j] = perm[j], perm[i]
    return perm


def baseline_fitness(rewards: Sequence[Sequence[float]], baseline: Baseline) -> np.ndarray:
    """Fitness per member from the reward matrix (members × prompts) after a per-prompt baseline.

    `prompt_mean` subtracts each prompt's mean over the population (GRPO's group advantage);
    `prompt_zscore` also divides by its std, so a prompt every member solves (or fails) adds
    nothing and easy and hard prompts carry equal weight. Then the mean over prompts.
    """
    r = np.asarray(rewards, dtype=np.float64)
    if r.ndim != 2:
        raise ValueError(f"per-prompt rewards must be a members × prompts matrix, got shape {r.shape}")
    if baseline in ("none", "center"):  # the centre is subtracted in `tell`, after averaging
        return r.mean(axis=1)
    r = r - r.mean(axis=0, keepdims=True)
    if baseline == "prompt_zscore":
        r = r / (r.std(axis=0, keepdims=True) + 1e-8)
    elif baseline != "prompt_mean":
        raise ValueError(f"unknown baseline {baseline!r}: use none, prompt_mean or prompt_zscore")
    return r.mean(axis=1)


def tell(
    members: Sequence[Member], fitness: Sequence[float], shaping: Shaping = "zscore",
    baseline: Baseline = "none", rewards: Sequence[Sequence[float]] | None = None,
    center_fitness: float | None = None,
) -> dict[int, float] | None:
    """Per-seed coefficients c_s with update direction Σ_s c_s ε(s) (before the α/N scale).

    With a per-prompt `baseline`, fitness is recomputed from `rewards` (members × prompts). With
    `center`, z = (f − f_center)/(std(f) + 1e-8): the unperturbed weights' fitness replaces the
    population mean, a baseline independent of every member's noise (so Σ z need not be 0).
    Returns None when the population has no fitness variance (nothing to learn, and z-scores
    would be 0/0), and raises on non-finite fitness rather than letting NaN reach the weights.
    """
    if baseline == "center" and (center_fitness is None or not math.isfinite(center_fitness)):
        raise ValueError(f"baseline center needs the centre member's finite fitness, got {center_fitness}")
    if baseline not in ("none", "center"):
        if rewards is None:
            raise ValueError(f"baseline {baseline!r} needs the per-prompt rewards of every member")
        if not np.isfinite(np.asarray(rewards, dtype=np.float64)).all():
            raise FloatingPointError("non-finite per-prompt rewards")
        fitness = baseline_fitness(rewards, baseline).tolist()
    f = np.asarray(fitness, dtype=np.float64)
    if len(f) != len(members):
        raise ValueError(f"{len(f)} fitness values for {len(members)} members")
    bad = [m.index for m, v in zip(members, f, strict=True) if not math.isfinite(v)]
    if bad:
        raise FloatingPointError(f"non-finite fitness for members {bad}: {f[[m for m in bad]].tolist()}")
    if np.ptp(f) == 0:
        return None
    if baseline == "center":
        if shaping != "zscore":
            raise ValueError("baseline center needs zscore shaping")
        z = (f - float(center_fitness)) / (f.std() + 1e-8)  # type: ignore[arg-type]
    else:
        z = SHAPERS[shaping](f)
    coeffs: dict[int, float] = {}
    for m, zi in zip(members, z, strict=True):
        coeffs[m.seed] = coeffs.get(m.seed, 0.0) + float(m.sign * zi)
    return coeffs
