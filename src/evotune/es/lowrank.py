"""Low-rank (EGGROLL-style) ES: the whole population in one batched generation.

Member i's perturbation of a weight matrix W (out×in) is σ·sᵢ·Eᵢ with Eᵢ = AᵢBᵢᵀ/√r, Aᵢ: out×r and
Bᵢ: in×r regenerated from (member seed, parameter name) by `noise.factors`. Because a torch Linear
computes x Wᵀ, the perturbed output is

    x (W + σ sᵢ Eᵢ)ᵀ = x Wᵀ + (σ sᵢ/√r) · (x Bᵢ) Aᵢᵀ,

so the shared x Wᵀ runs once for every row of a (member × prompt) batch and only the thin rank-r
path is per member. Embeddings are matrices too: row t of Eᵢ is Aᵢ[t] Bᵢᵀ/√r, which the lookup adds;
an `lm_head` tied to the embedding shares the parameter and therefore the same Eᵢ, exactly what
materialising W + σEᵢ into the tied tensor does. The update is full rank,
θ += (α/N)·Σ cₛ AₛBₛᵀ/√r, computed as one GEMM per matrix in fp32 (`LowRankNoise.weighted_sum`).

Non-matrix parameters (norm scales, biases) are frozen (`lowrank_vectors="freeze"`, default: they are
<0.1% of a transformer and would need per-row weights) or get full-rank noise (`"full"`), applied per
row: Linear biases as a per-member offset, elementwise scales (RMSNorm) by broadcasting a per-row
weight. Anything the batched path cannot express is refused at construction, never approximated.

`materialise` (the noise fn given to `EvolvingParams`) returns exactly the Eᵢ the batched path adds,
so `SequentialEvaluator` with the same `EvolvingParams` is the reference implementation.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from evotune.backends.hf import COMPILE_PAD, Completion, generate
from evotune.config import TrainConfig
from evotune.es.evaluator import PopulationEvaluator, PopulationResult
from evotune.es.params import EvolvingParams
from evotune.es.strategy import Member, sigma_of
from evotune.evaluation import score_rows
from evotune.noise import LowRankNoise, factors
from evotune.tasks.base import Example, Task

Named = list[tuple[str, torch.nn.Parameter]]

# A generate call has at least this many rows (padded with null members). Linear layers here
# (MKL/oneDNN fp32) give a row bit-identical results whatever the batch only from ~12 rows on
# (1–11 rows take other kernels), so padding is what makes every grouping of members compute each
# row identically.
MIN_ROWS = 16


# -- the batched forward ---------------------------------------------------------------------------


@dataclass
class _Group:
    """What the hooks need for one generate call: per-member factors, rows per member."""

    members: int
    rows_per_member: int
    a: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> (m, out, r), scaled by sσ/√r
    at: dict[str, torch.Tensor] = field(default_factory=dict)  # the same, contiguous (m, r, out)
    bt: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> Bᵀ, contiguous (m, r, in)
    offset: dict[str, torch.Tensor] = field(default_factory=dict)  # bias name -> (m, 1, out): sσε
    weight: dict[str, torch.Tensor] = field(default_factory=dict)  # scale name -> (m, *shape): master + sσε
    bt_cat: dict[str, torch.Tensor] = field(default_factory=dict)  # leader -> its siblings' Bᵀ stacked (m, k·r, in)

    @property
    def rows(self) -> int:
        return self.members * self.rows_per_member


class BatchedForward:
    """Forward hooks that make one model call evaluate many low-rank members side by side.

    Rows of the batch are member-major: rows [j·P, (j+1)·P) belong to the j-th member of the group.
    HF greedy generation with a KV cache never reorders or drops rows, so the mapping holds from
    prefill to the last decode step; every hook checks the batch size to fail loudly if not.
    """

    def __init__(
        self, model: nn.Module, params: EvolvingParams, *, rank: int, persistent: bool = False,
        fuse: bool | None = None,
    ) -> None:
        """`persistent`: hooks stay installed (no-ops outside `active`), as a compiled forward needs.

        A compiled graph is traced with the hooks present and reads the group's tensors as inputs,
        so new members need no recompile; hooks added and removed per call would recompile every
        time (hook guards on) or be silently ignored (hook guards off).
        """
        self.model, self.params, self.rank = model, params, rank  # σ: each member's own (`sigma_of`)
        self.persistent = persistent
        self._handles: list[Any] = []
        # Linear layers fed the same input (q/k/v, gate/up) share one B-projection: fewer kernel
        # launches, which is what a GPU is bound by. Learned from the first call (consecutive hooks
        # seeing the same tensor); eager only, and by default only on CUDA, so the CPU path is as before.
        self.fuse = (params.device.type == "cuda" and not persistent) if fuse is None else fuse and not persistent
        self.siblings: dict[str, list[str]] | None = None  # leader -> [leader, sibling, ...]
        self._seen: list[tuple[torch.Tensor, str]] = []
        self._fused: tuple[torch.Tensor | None, dict[str, torch.Tensor]] = (None, {})
        by_id = {id(p): n for n, p in params.params.items()}
        self.linears: list[tuple[nn.Linear, str | None, str | None]] = []
        self.embeddings: list[tuple[nn.Embedding, str]] = []
        self.scales: list[tuple[nn.Module, str, str]] = []
        covered: set[str] = set()
        for mod in model.modules():
            own = {pn: by_id[id(p)] for pn, p in mod.named_parameters(recurse=False) if id(p) in by_id}
            if not own:
                continue
            if isinstance(mod, nn.Linear):
                self.linears.append((mod, own.get("weight"), own.get("bias")))
            elif isinstance(mod, nn.Embedding) and set(own) == {"weight"}:
                self.embeddings.append((mod, own["weight"]))
            elif all(params.params[n].dim() == 1 for n in own.values()) and len(own) == 1:
                pname, name = next(iter(own.items()))
                _check_elementwise(mod, pname)
                self.scales.append((mod, pname, name))
            else:
                raise ValueError(
                    f"batched low-rank ES cannot perturb {sorted(own.values())} of {type(mod).__name__} per row; "
                    "exclude them (es.exclude) or use es.lowrank_vectors=freeze"
                )
            covered.update(own.values())
        missing = set(params.params) - covered
        if missing:
            raise ValueError(f"evolving parameters not owned by any module: {sorted(missing)[:5]}")
        self.matrices = sorted({n for n, p in params.params.items() if p.dim() == 2})
        self.vectors = sorted(set(params.params) - set(self.matrices))
        self.group: _Group | None = None
        if persistent and self.scales:
            raise ValueError(
                "compiled generation cannot swap per-row norm weights: use es.lowrank_vectors=freeze "
                "or generation.compile=false"
            )

    # -- per-group state ------------------------------------------------------------------------
    @torch.no_grad()
    def make_group(self, members: Sequence[Member], rows_per_member: int = 0, pad: int = 0) -> _Group:
        """Regenerate the members' factors (and vector noise) for one generate call.

        `pad` null members (zero perturbation, outputs discarded) follow the real ones; see MIN_ROWS.
        """
        g = _Group(len(members) + pad, rows_per_member)
        dtype, dev = next(iter(self.params.params.values())).dtype, self.params.device
        for name in self.matrices:
            shape = tuple(self.params.params[name].shape)
            pairs = [factors(m.seed, name, shape, self.rank, dev, self.params.noise_fn.version)  # type: ignore[arg-type,union-attr]
                     for m in members]
            pairs += [(torch.zeros(shape[0], self.rank, device=dev), torch.zeros(shape[1], self.rank, device=dev))] * pad
            coef = torch.tensor(
                [m.sign * sigma_of(m) / math.sqrt(self.rank) for m in members] + [0.0] * pad,
                dtype=torch.float32, device=dev,
            )
            g.a[name] = torch.stack([a for a, _ in pairs]).mul_(coef.view(-1, 1, 1)).to(dtype)
            g.at[name] = g.a[name].transpose(1, 2).contiguous()
            g.bt[name] = torch.stack([b.T for _, b in pairs]).to(dtype)
        for leader, names in (self.siblings or {}).items():
            g.bt_cat[leader] = torch.cat([g.bt[n] for n in names], 1)
        for name in self.vectors:
            p, master = self.params.params[name], self.params.master[name].to(dev)
            fn = self.params.noise_fn
            rows = []
            for m in members:
                eps = fn(m.seed, name, tuple(p.shape), device=dev)
                # exactly the value `EvolvingParams.perturb` writes
                rows.append(eps.mul_(m.sign * sigma_of(m)).add_(master).to(p.dtype))
            rows += [master.to(p.dtype)] * pad
            g.weight[name] = torch.stack(rows)
            g.offset[name] = (g.weight[name].to(torch.float32) - master).to(p.dtype)
        return g

    @staticmethod
    def head(g: _Group, members: int, rows_per_member: int) -> _Group:
        """The first `members` members of a group (views, no copies), for a call of another shape."""

        def cut(d: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            return {k: v[:members] for k, v in d.items()}

        return _Group(
            members, rows_per_member, cut(g.a), cut(g.at), cut(g.bt), cut(g.offset), cut(g.weight), cut(g.bt_cat)
        )

    @contextmanager
    def active(self, group: _Group) -> Iterator[None]:
        """Install the hooks for the duration of one generate call; always removes them."""
        self.group = group
        if self.persistent:
            if not self._handles:
                self._handles = self._install([])
            try:
                yield
            finally:
                self.group = None
            return
        swapped: list[tuple[nn.Module, str, Any]] = []
        handles = self._install(swapped)
        try:
            yield
        finally:
            for h in handles:
                h.remove()
            for mod, pname, original in reversed(swapped):
                mod._parameters[pname] = original
            self.group = None
            self._fused = (None, {})
            if self.fuse and self.siblings is None and self._seen:
                self.siblings = _sibling_groups(self._seen)
            self._seen = []

    def _install(self, swapped: list[tuple[nn.Module, str, Any]]) -> list[Any]:
        handles = []
        try:
            for mod, wname, bname in self.linears:
                handles.append(mod.register_forward_hook(self._linear_hook(wname, bname)))
            for mod, name in self.embeddings:
                handles.append(mod.register_forward_hook(self._embedding_hook(name)))
            for mod, pname, name in self.scales:
                handles.append(mod.register_forward_pre_hook(self._scale_pre_hook(pname, name, swapped)))
                handles.append(mod.register_forward_hook(self._scale_post_hook(swapped)))
        except BaseException:
            for h in handles:
                h.remove()
            raise
        return handles

    def close(self) -> None:
        """Remove persistent hooks (the model is plain again)."""
        for h in self._handles:
            h.remove()
        self._handles = []

    def _rows(self, x: torch.Tensor) -> _Group:
        g = self.group
        if g is None or x.shape[0] != g.rows:
            raise RuntimeError(
                f"batched low-rank forward expected {g.rows if g else '?'} rows, got input of shape {tuple(x.shape)}"
            )
        return g

    def _linear_hook(self, wname: str | None, bname: str | None) -> Any:
        def hook(mod: nn.Module, args: tuple[Any, ...], out: torch.Tensor) -> torch.Tensor:
            if self.group is None:  # a persistent hook outside `active`: the plain model
                return out
            g = self._rows(args[0])
            y = out.view(g.members, -1, out.shape[-1])
            if wname is not None:
                _add_lowrank(y, self._projection(g, wname, args[0]), g.at[wname])
            if bname is not None:
                y.add_(g.offset[bname].view(g.members, 1, -1))
            return out

        return hook

    def _projection(self, g: _Group, wname: str, x_in: torch.Tensor) -> torch.Tensor:
        """x Bᵢ per member, (m, n, r): from the siblings' shared projection when one was made for this x."""
        cached_x, cached = self._fused
        if cached_x is x_in and wname in cached:
            return cached[wname]
        x = x_in.reshape(g.members, -1, x_in.shape[-1]).transpose(1, 2)
        if self.fuse and self.siblings is None and len(self._seen) < len(self.linears):  # the first forward
            self._seen.append((x_in, wname))
        if wname in g.bt_cat:
            names = self.siblings[wname]  # type: ignore[index]
            proj = torch.bmm(g.bt_cat[wname], x).transpose(1, 2)  # one GEMM for every sibling
            parts = dict(zip(names, proj.split(self.rank, dim=2), strict=True))
            self._fused = (x_in, parts)
            return parts[wname]
        # (Bᵀ xᵀ)ᵀ: as a GEMM with M=r this is several times faster than the GEMV x B
        return torch.bmm(g.bt[wname], x).transpose(1, 2)

    def _embedding_hook(self, name: str) -> Any:
        def hook(mod: nn.Module, args: tuple[Any, ...], out: torch.Tensor) -> torch.Tensor:
            if self.group is None:
                return out
            ids = args[0]
            g = self._rows(ids)
            member = (
                torch.arange(g.members, device=ids.device)
                .repeat_interleave(g.rows_per_member)
                .view(-1, *([1] * (ids.dim() - 1)))
            )
            a_rows = g.a[name][member, ids]  # (rows, ..., r): row t of this member's A, scaled
            out3 = out.view(g.members, -1, out.shape[-1])
            _add_lowrank(out3, a_rows.reshape(g.members, -1, a_rows.shape[-1]), g.bt[name])
            return out

        return hook

    def _scale_pre_hook(self, pname: str, name: str, swapped: list[tuple[nn.Module, str, Any]]) -> Any:
        def hook(mod: nn.Module, args: tuple[Any, ...]) -> None:
            g = self._rows(args[0])
            w = g.weight[name]  # (m, *shape)
            lead = args[0].dim() - (w.dim() - 1) - 1
            rows = w.repeat_interleave(g.rows_per_member, 0)
            per_row = rows.view(g.rows, *([1] * lead), *w.shape[1:])
            swapped.append((mod, pname, mod._parameters[pname]))
            mod._parameters[pname] = per_row  # type: ignore[assignment]  # read by forward, restored after

        return hook

    def _scale_post_hook(self, swapped: list[tuple[nn.Module, str, Any]]) -> Any:
        def hook(mod: nn.Module, args: tuple[Any, ...], out: Any) -> Any:
            m, pname, original = swapped.pop()
            m._parameters[pname] = original
            return out

        return hook


def _sibling_groups(seen: Sequence[tuple[torch.Tensor, str]]) -> dict[str, list[str]]:
    """Runs of consecutive Linear hooks that saw the very same input tensor, keyed by their first."""
    groups: dict[str, list[str]] = {}
    run: list[str] = []
    prev: torch.Tensor | None = None
    for x, name in [*seen, (None, "")]:
        if x is not None and x is prev and name not in run:
            run.append(name)
            continue
        if len(run) > 1 and run[0] not in groups:
            groups[run[0]] = run
        run, prev = [name], x
    return groups


def _add_lowrank(y: torch.Tensor, u: torch.Tensor, vt: torch.Tensor) -> None:
    """y += u @ vt per member, in place: y (m, n, out), u (m, n, r), vt (m, r, out).

    Rank 1 is a broadcast multiply-add (one pass over y); a batched GEMM with K=1 is slower.
    """
    if u.shape[-1] == 1:
        y.addcmul_(u, vt)
    else:
        y.baddbmm_(u, vt)


@torch.no_grad()
def _check_elementwise(mod: nn.Module, pname: str) -> None:
    """Refuse a vector parameter unless a per-row weight broadcasts to per-row outputs (e.g. RMSNorm)."""
    p = getattr(mod, pname)
    d = p.shape[0]
    x = torch.randn(2, 3, d, generator=torch.Generator().manual_seed(0)).to(device=p.device, dtype=p.dtype)
    ws = [p.detach() + 0.25, p.detach() - 0.5]
    original = mod._parameters[pname]
    try:
        sep = []
        for k in range(2):
            mod._parameters[pname] = ws[k]  # type: ignore[assignment]
            sep.append(type(mod).forward(mod, x[k : k + 1]))
        mod._parameters[pname] = torch.stack(ws).view(2, 1, d)  # type: ignore[assignment]
        both = type(mod).forward(mod, x)
        ok = isinstance(both, torch.Tensor) and torch.allclose(both, torch.cat(sep), rtol=1e-5, atol=1e-6)
    except (RuntimeError, TypeError, ValueError):
        ok = False
    finally:
        mod._parameters[pname] = original
    if not ok:
        raise ValueError(
            f"{type(mod).__name__}.{pname} cannot take a per-row weight, so low-rank ES cannot give it "
            "full-rank noise in a batch; use es.lowrank_vectors=freeze or exclude it"
        )


# -- the evaluator ------------------------------------------------------------------------------


def members_per_call(batch_size: int, n_prompts: int) -> int:
    """Members that share one generate call: as many as fit `batch_size` rows of the longest prompt chunk."""
    longest_chunk = min(batch_size, n_prompts)
    return max(1, batch_size // longest_chunk) if longest_chunk else 1


class BatchedLowRankEvaluator(PopulationEvaluator):
    """Evaluate a whole low-rank population with batched greedy generation.

    Rows are (member × prompt). Prompts are chunked exactly as `generate` chunks them for one member
    (`batch_size` prompts per call), and as many members as fit share a call; so each member sees
    the same padded prompt batches as under `SequentialEvaluator`, and any grouping of members
    gives the same per-row computation (on the CPU from MIN_ROWS rows on; on CUDA and when compiled
    every call has one row count, `fixed_rows`, since cuBLAS may pick kernels by row count). Factors
    are regenerated per group, so memory grows with the rows of one call, not with the population.
    """

    def __init__(self, model: Any, tokenizer: Any, task: Task, params: EvolvingParams, cfg: TrainConfig) -> None:
        if not isinstance(params.noise_fn, LowRankNoise):
            raise TypeError("BatchedLowRankEvaluator needs EvolvingParams built with lowrank_noise_fn")
        super().__init__(model, tokenizer, task, params, cfg)
        self.forward = BatchedForward(
            model, params, rank=params.noise_fn.rank, persistent=self.compile_backend is not None
        )
        # One row count for every call (null members, repeated prompts): a compiled forward then sees one
        # static shape per run (each new one costs a 30–110 s compile on a GPU and counts toward dynamo's
        # recompile limit, past which it runs eager), and on CUDA, where cuBLAS picks GEMM kernels by row
        # count, a member's logits cannot depend on how many members share its call (batch size, Ray
        # workers). `benchmarks/gpu_quick.py` (exact) measures whether CUDA needs it. The CPU keeps
        # MIN_ROWS, which suffices for its kernels.
        self.fixed_rows = self.compile_backend is not None or params.device.type == "cuda"
        self.prompt_len = 0  # compiled: every call is left-padded to the longest prompt bucket seen so far

    def generate_members(
        self, members: Sequence[Member], prompts: Sequence[str]
    ) -> tuple[list[list[Completion]], float]:
        """Completions per member (in prompt order) and the seconds spent regenerating factors."""
        comps: list[list[Completion]] = [[] for _ in members]
        t_noise = 0.0
        chunks = [list(prompts[i : i + self.batch_size]) for i in range(0, len(prompts), self.batch_size)]
        if not chunks:
            return comps, t_noise
        per_call = members_per_call(self.batch_size, len(prompts))
        width = len(chunks[0])
        fixed = max(min(per_call, len(members)), -(-MIN_ROWS // width))  # members per call under fixed_rows
        if self.compile_backend is not None:
            longest = max(len(self.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts)
            self.prompt_len = max(self.prompt_len, -(-longest // COMPILE_PAD) * COMPILE_PAD)
        for start in range(0, len(members), per_call):
            group = list(members[start : start + per_call])
            if self.fixed_rows:
                need = [fixed - len(group)] * len(chunks)
            else:
                need = [max(0, -(-MIN_ROWS // len(c)) - len(group)) for c in chunks]
            t0 = time.perf_counter()
            full = self.forward.make_group(group, pad=max(need))
            t_noise += time.perf_counter() - t0
            for chunk, pad in zip(chunks, need, strict=True):
                fill = chunk + [chunk[-1]] * (width - len(chunk)) if self.fixed_rows else chunk
                state = self.forward.head(full, len(group) + pad, len(fill))
                rows = [p for _ in range(state.members) for p in fill]
                with self.forward.active(state):
                    out = generate(
                        self.model, self.tokenizer, rows, self.max_new_tokens, batch_size=len(rows),
                        compile_backend=self.compile_backend, min_new_tokens=self.min_new_tokens,
                        min_prompt_tokens=self.prompt_len or None,
                    )
                for j in range(len(group)):
                    comps[start + j].extend(out[j * len(fill) : j * len(fill) + len(chunk)])
        return comps, t_noise

    def __call__(
        self, members: Sequence[Member], examples: Sequence[Example], prompts: Sequence[str]
    ) -> PopulationResult:
        res = PopulationResult(rewards=[])
        t0 = time.perf_counter()
        comps, t_noise = self.generate_members(members, prompts)
        t1 = time.perf_counter()
        n_prompt_tokens = self.prompt_tokens(prompts)
        for mc in comps:
            res.add_member(score_rows(self.task, examples, mc), n_prompt_tokens, 1, self.fitness)
        t2 = time.perf_counter()
        res.times = {"noise": t_noise, "generate": t1 - t0 - t_noise, "score": t2 - t1}
        return res

    def close(self) -> None:
        self.forward.close()
