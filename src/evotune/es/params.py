"""The weights ES evolves: an fp32 master copy, in-place perturbation and exact restore.

The model's own tensors are working buffers. Perturbing writes `master + sign·σ·ε` into them;
restoring copies the master back, so the weights after a member are bit-for-bit those before
(w + σε − σε ≠ w in floating point, so subtracting the noise again is never used). The update
accumulates in fp32 into the master whatever the model dtype, so bf16 cannot swallow it.
"""

from __future__ import annotations

import fnmatch
import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch

from evotune.es.noise import noise

NoiseFn = Callable[[int, str, tuple[int, ...]], torch.Tensor]


def select_params(
    model: Any, include: Sequence[str] = ("*",), exclude: Sequence[str] = ()
) -> list[tuple[str, torch.nn.Parameter]]:
    """Named parameters matching any include glob and no exclude glob (tied weights once)."""
    chosen = [
        (n, p)
        for n, p in model.named_parameters()
        if any(fnmatch.fnmatchcase(n, g) for g in include)
        and not any(fnmatch.fnmatchcase(n, g) for g in exclude)
    ]
    if not chosen:
        raise ValueError(f"no parameters match include={list(include)} exclude={list(exclude)}")
    return chosen


class EvolvingParams:
    """Holds the evolving parameters of a model and applies ES operations to them."""

    def __init__(self, named: Iterable[tuple[str, torch.nn.Parameter]], noise_fn: NoiseFn = noise) -> None:
        self.params: dict[str, torch.nn.Parameter] = dict(named)
        self.master: dict[str, torch.Tensor] = {
            n: p.detach().to(torch.float32, copy=True) for n, p in self.params.items()
        }
        self.noise_fn = noise_fn

    @property
    def names(self) -> list[str]:
        return list(self.params)

    def numel(self) -> int:
        return sum(p.numel() for p in self.params.values())

    @torch.no_grad()
    def perturb(self, seed: int, sign: int, sigma: float) -> None:
        """Write master + sign·σ·ε(seed) into the model, tensor by tensor."""
        for name, p in self.params.items():
            eps = self.noise_fn(seed, name, tuple(p.shape))
            eps.mul_(sign * sigma).add_(self.master[name])
            p.copy_(eps)

    @torch.no_grad()
    def restore(self) -> None:
        """Exact restore: copy the master back into the model."""
        for name, p in self.params.items():
            p.copy_(self.master[name])

    @torch.no_grad()
    def apply_update(self, coeffs: Mapping[int, float], scale: float) -> None:
        """master += scale · Σ_s c_s ε(s), accumulated in fp32, then written to the model.

        Seeds are visited in sorted order so the floating-point sum is a pure function of the
        coefficients (replay and resume reproduce it bit for bit).
        """
        order = sorted(coeffs)
        for name, p in self.params.items():
            acc = torch.zeros(p.shape, dtype=torch.float32)
            for s in order:
                acc.add_(self.noise_fn(s, name, tuple(p.shape)), alpha=coeffs[s])
            self.master[name].add_(acc, alpha=scale)
            p.copy_(self.master[name])

    @torch.no_grad()
    def load_master(self, tensors: Mapping[str, torch.Tensor]) -> None:
        """Replace the master (and model) weights, e.g. from a checkpoint; names must match."""
        missing = set(self.params) - set(tensors)
        if missing:
            raise KeyError(f"checkpoint lacks evolving parameters: {sorted(missing)[:5]}")
        for name, p in self.params.items():
            self.master[name].copy_(tensors[name].to(torch.float32))
            p.copy_(self.master[name])

    def checksum(self) -> str:
        """A hash of the master weights: equal checksums mean bit-identical weights."""
        h = hashlib.blake2b(digest_size=16)
        for name in sorted(self.master):
            h.update(name.encode())
            h.update(self.master[name].numpy().tobytes())
        return h.hexdigest()

    def model_matches_master(self) -> bool:
        return all(torch.equal(p.detach().to(torch.float32), self.master[n]) for n, p in self.params.items())
