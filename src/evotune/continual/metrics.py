"""Continual-learning metrics on an accuracy matrix (formulas in docs/continual.md).

`R` has T+1 rows and T columns: row 0 is the base model, row i (1..T) the model after training
stage i, and column j the held-out accuracy on the task trained at stage j (1-based in the docs,
0-based in code). Definitions follow GEM (Lopez-Paz & Ranzato, 2017) for ACC/BWT/FWT and
Chaudhry et al. (2018, RWalk) for forgetting, so numbers compare with the literature.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from evotune.errors import MatrixError


def _check(R: Sequence[Sequence[float]]) -> int:
    if not R or not R[0]:
        raise MatrixError("accuracy matrix is empty")
    T = len(R[0])
    if len(R) != T + 1 or any(len(row) != T for row in R):
        raise MatrixError(f"accuracy matrix must be (T+1) x T (row 0 = base); got {len(R)} rows of {[len(r) for r in R]}")
    return T


def average_accuracy(R: Sequence[Sequence[float]], k: int | None = None) -> float:
    """A_k = (1/k) Σ_{j≤k} R[k][j]: mean accuracy on the tasks seen so far (k = T: all tasks)."""
    T = _check(R)
    k = T if k is None else k
    return sum(R[k][:k]) / k


def backward_transfer(R: Sequence[Sequence[float]]) -> float | None:
    """BWT = 1/(T−1) Σ_{j<T} (R[T][j] − R[j][j]); negative means later stages undid earlier ones."""
    T = _check(R)
    if T < 2:
        return None
    return sum(R[T][j] - R[j + 1][j] for j in range(T - 1)) / (T - 1)


def forward_transfer(R: Sequence[Sequence[float]]) -> float | None:
    """FWT = 1/(T−1) Σ_{j≥2} (R[j−1][j] − R[0][j]): effect of earlier stages on a task not yet trained."""
    T = _check(R)
    if T < 2:
        return None
    return sum(R[j][j] - R[0][j] for j in range(1, T)) / (T - 1)


def forgetting(R: Sequence[Sequence[float]]) -> list[float | None]:
    """f_j = max_{l∈1..T−1} R[l][j] − R[T][j] for j < T (Chaudhry et al.); None for the last task."""
    T = _check(R)
    out: list[float | None] = []
    for j in range(T):
        if j == T - 1:
            out.append(None)
        else:
            out.append(max(R[s][j] for s in range(1, T)) - R[T][j])
    return out


def continual_metrics(R: Sequence[Sequence[float]]) -> dict[str, Any]:
    """Every summary number of one accuracy matrix, as plain floats (JSON-ready)."""
    T = _check(R)
    f = forgetting(R)
    fs = [x for x in f if x is not None]
    return {
        "T": T,
        "average_accuracy": average_accuracy(R),
        "average_accuracy_per_stage": [average_accuracy(R, k) for k in range(1, T + 1)],
        "backward_transfer": backward_transfer(R),
        "forward_transfer": forward_transfer(R),
        "forgetting_per_task": f,
        "mean_forgetting": sum(fs) / len(fs) if fs else None,
        # Plasticity: what training on task j did for task j.
        "gain_per_task": [R[j + 1][j] - R[j][j] for j in range(T)],
        "final_accuracy_per_task": list(R[T]),
    }
