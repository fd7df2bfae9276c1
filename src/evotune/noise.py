"""Noise as pure functions of (seed, parameter name): nothing is stored, a seed regenerates it.

Keying by the parameter *name* makes noise i.i.d. across tensors (two same-shape tensors never
share noise, unlike seeding one generator per member for every tensor) and independent of the
order in which parameters are visited.

Noise is drawn where it is used, by a generator on that device (no host round trip on a GPU).
Torch's CPU and CUDA generators give different streams for the same seed, so ε is a pure function
of (seed, name, device type): a run records its device type, and resume/replay check it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from evotune.hashing import stable_int


def member_seed(run_seed: int, iteration: int, member: int) -> int:
    """The seed of population member `member` at `iteration`, a pure function of its inputs."""
    return stable_int("member", run_seed, iteration, member)


def tensor_seed(seed: int, name: str) -> int:
    return stable_int("tensor", seed, name)


DeviceLike = torch.device | str


def _generator(seed: int, device: DeviceLike) -> torch.Generator:
    return torch.Generator(device=torch.device(device)).manual_seed(seed)


def noise(
    seed: int, name: str, shape: torch.Size | tuple[int, ...], out: torch.Tensor | None = None,
    device: DeviceLike = "cpu",
) -> torch.Tensor:
    """Full-rank N(0, I) noise in fp32 for parameter `name` of member `seed`, drawn on `device`.

    `out` (fp32, of `shape`) receives the same values without allocating (and sets the device): a
    fresh 100 MB tensor costs page faults that are a sizeable share of drawing it.
    """
    if out is not None:
        if out.dtype != torch.float32 or tuple(out.shape) != tuple(shape):
            raise ValueError(
                f"noise out= must be fp32 of shape {tuple(shape)}, got {out.dtype} {tuple(out.shape)}"
            )
        return torch.randn(tuple(shape), generator=_generator(tensor_seed(seed, name), out.device), out=out)
    g = _generator(tensor_seed(seed, name), device)
    return torch.randn(tuple(shape), generator=g, dtype=torch.float32, device=g.device)


def factors(
    seed: int, name: str, shape: tuple[int, int], rank: int, device: DeviceLike = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Low-rank factors (A: out×r, B: in×r) so that E = A Bᵀ/√r has unit-variance entries."""
    out_f, in_f = shape
    g = _generator(tensor_seed(seed, name + "#lowrank"), device)
    a = torch.randn((out_f, rank), generator=g, dtype=torch.float32, device=g.device)
    b = torch.randn((in_f, rank), generator=g, dtype=torch.float32, device=g.device)
    return a, b


class LowRankNoise:
    """The noise fn of low-rank ES: materialised E = A Bᵀ/√r for matrices, full noise otherwise.

    A callable `(seed, name, shape) -> fp32 tensor` as `EvolvingParams` expects, plus
    `weighted_sum`, which `EvolvingParams.apply_update` uses to build Σ cₛEₛ with one GEMM per
    matrix instead of materialising N outer products.
    """

    def __init__(self, rank: int, vectors: str = "freeze") -> None:
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        self.rank, self.vectors = rank, vectors

    def __call__(self, seed: int, name: str, shape: tuple[int, ...], device: DeviceLike = "cpu") -> torch.Tensor:
        shape = tuple(shape)
        if len(shape) == 2:
            a, b = factors(seed, name, shape, self.rank, device)  # type: ignore[arg-type]
            return (a @ b.T).div_(math.sqrt(self.rank))
        if self.vectors != "full":
            raise ValueError(f"{name} (shape {shape}) is not a matrix and lowrank_vectors={self.vectors!r}")
        return noise(seed, name, shape, device=device)

    def weighted_sum(
        self, coeffs: Sequence[tuple[int, float]], name: str, shape: tuple[int, ...], device: DeviceLike = "cpu"
    ) -> torch.Tensor | None:
        """Σ cₛ AₛBₛᵀ/√r as [c₁A₁ … cₙAₙ][B₁ … Bₙ]ᵀ/√r (None for non-matrices: the caller loops)."""
        if len(tuple(shape)) != 2:
            return None
        a_parts, b_parts = [], []
        for s, c in coeffs:
            a, b = factors(s, name, tuple(shape), self.rank, device)  # type: ignore[arg-type]
            a_parts.append(a.mul_(c))
            b_parts.append(b)
        return (torch.cat(a_parts, 1) @ torch.cat(b_parts, 1).T).div_(math.sqrt(self.rank))

    def __repr__(self) -> str:
        return f"LowRankNoise(rank={self.rank}, vectors={self.vectors!r})"
