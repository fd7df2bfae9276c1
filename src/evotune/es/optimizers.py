"""What turns Σ cₛ ε(s) into a weight change: a torch.optim rule on the fp32 master, plus decay.

The ES gradient estimate is ĝ = −(1/N)·Σ cₛ ε(s) (cₛ the shaped fitness, so −ĝ points uphill).
Each master tensor has its own optimizer (tensors update independently, in parallel, and the
update of one never waits for the sum over all), whose `.grad` receives −Σ cₛ ε(s) = N·ĝ:

- `sgd`      lr = α/N: θ += (α/N)·Σ cₛ ε(s), the paper's update (bit for bit, `foreach=False`);
- `momentum` lr = α/N with torch's heavy-ball buffer, i.e. the same scale as `sgd`;
- `adam`, `adamw` lr = α: Adam divides by √v, so the 1/N scale of ĝ only shifts its ε (documented).

Decoupled decay comes first, as AdamW does it: θ ← θ − α·wd·θ (weight_decay, toward 0; for `adamw`
torch's own) and θ ← θ − α·ad·(θ − θ₀) (anchor_decay, toward the base weights θ₀, es-awd).
Everything is a function of (coefficients, α of the iteration) and the optimizer state, which
replay rebuilds by running the same steps and checkpoints save (`state_tensors`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from evotune.config import ESConfig

_SEP = "::"  # state key in a checkpoint: "<parameter>::<state name>"


def clip_scale(norm: float, max_norm: float | None) -> float:
    """The factor that brings a global norm down to `max_norm` (1.0 when it is within it): clip_by_global_norm.

    Rounded to fp32, the precision it multiplies at, so that a last-bit difference in how the norm was
    summed cannot change the step.
    """
    if max_norm is None or not norm > max_norm:
        return 1.0
    return float(np.float32(max_norm / norm))


class ESOptimizer:
    """Per-tensor torch.optim optimizers over the master, with decoupled weight and anchor decay."""

    def __init__(self, es: ESConfig | None, master: Mapping[str, torch.Tensor]) -> None:
        """`es` None: plain sgd at the full step, master += α·Σ cₛ ε(s) (no 1/N, no decay)."""
        self.kind, self.population = (es.optimizer, es.population) if es is not None else ("sgd", 1)
        es = es or ESConfig()
        self.weight_decay, self.anchor_decay = es.weight_decay, es.anchor_decay
        # θ₀ is read once per update, tensor by tensor: on the host, so a GPU holds no second master (30 GB at 7B)
        self.base = {n: t.detach().to("cpu", copy=True) for n, t in master.items()} if self.anchor_decay else {}
        self.optims: dict[str, torch.optim.Optimizer] = {}
        for n, t in master.items():
            t.requires_grad_(False)
            if self.kind in ("sgd", "momentum"):
                opt: torch.optim.Optimizer = torch.optim.SGD(
                    [t], lr=es.alpha, momentum=es.momentum if self.kind == "momentum" else 0.0, foreach=False
                )
            elif self.kind == "adam":
                opt = torch.optim.Adam([t], lr=es.alpha, betas=es.betas, eps=es.eps, foreach=False)
            else:
                opt = torch.optim.AdamW(
                    [t], lr=es.alpha, betas=es.betas, eps=es.eps, weight_decay=es.weight_decay, foreach=False
                )
            self.optims[n] = opt

    @property
    def stateful(self) -> bool:
        """Whether the update depends on earlier iterations (momentum, Adam moments)."""
        return self.kind != "sgd"

    def lr(self, alpha: float) -> float:
        return alpha / self.population if self.kind in ("sgd", "momentum") else alpha

    @torch.no_grad()
    def step(self, name: str, master: torch.Tensor, direction: torch.Tensor, alpha: float) -> None:
        """One iteration for one tensor: decay, then the optimizer on grad = −direction (consumed)."""
        if self.weight_decay and self.kind != "adamw":
            master.mul_(1.0 - alpha * self.weight_decay)
        if self.anchor_decay:
            master.lerp_(self.base[name].to(master.device), alpha * self.anchor_decay)  # same lerp, same kernel
        opt = self.optims[name]
        opt.param_groups[0]["lr"] = self.lr(alpha)
        master.grad = direction.neg_()
        opt.step()
        master.grad = None

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The optimizer state as flat tensors (for a safetensors file beside a checkpoint)."""
        out: dict[str, torch.Tensor] = {}
        for n, opt in self.optims.items():
            for key, v in opt.state_dict()["state"].get(0, {}).items():
                out[f"{n}{_SEP}{key}"] = v if isinstance(v, torch.Tensor) else torch.tensor(v)
        return out

    def load_state_tensors(self, tensors: Mapping[str, torch.Tensor]) -> None:
        """Restore what `state_tensors` saved; parameters it lacks start with empty state."""
        per: dict[str, dict[str, torch.Tensor]] = {}
        for k, v in tensors.items():
            n, _, key = k.rpartition(_SEP)
            per.setdefault(n, {})[key] = v.clone()
        unknown = set(per) - set(self.optims)
        if unknown:
            raise KeyError(f"optimizer state for parameters this run does not evolve: {sorted(unknown)[:5]}")
        for n, opt in self.optims.items():
            sd = opt.state_dict()
            sd["state"] = {0: per[n]} if n in per else {}
            opt.load_state_dict(sd)
