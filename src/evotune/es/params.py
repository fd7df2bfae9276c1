"""The weights ES evolves: an fp32 master copy, in-place perturbation and exact restore.

The model's own tensors are working buffers. Perturbing writes `master + sign·σ·ε` into them;
restoring copies the master back, so the weights after a member are bit-for-bit those before
(w + σε − σε ≠ w in floating point, so subtracting the noise again is never used). The update
accumulates in fp32 into the master whatever the model dtype, so bf16 cannot swallow it.

Speed (noise generation is the main CPU cost of full-rank ES): an fp32 model's own tensor is the
noise buffer (no fresh 0.5 GB allocation and page faults per member), tensors are processed by a
small thread pool (torch releases the GIL; every tensor's arithmetic is independent of the
schedule, so results are bit-identical to a serial pass), and the update is still regenerated from
seeds ("seed replay"): it needs no memory beyond the master, and live training, resume and replay
all run this one formula, so they agree bit for bit.

Devices: noise is drawn on the model's device (`noise_device`), so the noise stream depends on that
device type, which trajectories record. The master lives beside the model, or on the host
(`master_device="cpu"`) when it does not fit beside the working copy on the GPU.
"""

from __future__ import annotations

import fnmatch
import hashlib
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from evotune.config import ESConfig
from evotune.errors import ConfigError
from evotune.es.optimizers import ESOptimizer, clip_scale
from evotune.noise import NOISE_VERSION, FullNoise, LowRankNoise, noise

CHECKSUM_PREFIX = "p1:"  # `EvolvingParams.checksum`'s parallel form; unprefixed = the legacy serial one
CHECKSUM_BLOCK = 1 << 26  # bytes per hashed block (64 MiB): a 7B master is ~470 blocks

# (seed, name, shape, device) -> fp32 ε on that device
NoiseFn = Callable[..., torch.Tensor]


def gpu_identity(device: torch.device) -> dict[str, Any] | None:
    """What a CUDA noise stream depends on besides (seed, name): the GPU model, its SM count, torch.

    torch's CUDA `randn` (ATen `calc_execution_policy`, DistributionTemplates.h) launches
    min(ceil(numel/256), SMs · maxThreadsPerSM/256) blocks of 256 threads, and thread t draws element
    t, t + 256·grid·4, … from Philox subsequence t. Beyond that clamp (270,336 elements on a 132-SM
    H100/H200: most weight matrices) which random number lands in which element depends on the SM
    count and the GPU's threads per SM, and the kernel itself on torch's version. None on the CPU.
    """
    if device.type != "cuda":
        return None
    props = torch.cuda.get_device_properties(device)
    return {"name": props.name, "sms": int(props.multi_processor_count), "torch": torch.__version__}


def noise_threads() -> int:
    """Worker threads for per-tensor noise work: $EVOTUNE_NOISE_THREADS, else torch's thread count."""
    env = os.environ.get("EVOTUNE_NOISE_THREADS")
    if not env:
        return max(1, torch.get_num_threads())
    try:
        return max(1, int(env))
    except ValueError:
        raise ConfigError(f"EVOTUNE_NOISE_THREADS={env[:40]!r} is not a whole number; set it to e.g. 4, "
                          "or unset it to use torch's thread count") from None


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
        names = [n for n, _ in model.named_parameters()]
        raise ConfigError(
            f"es.include={list(include)} / es.exclude={list(exclude)} select none of the model's {len(names)} "
            f"parameters (named like {names[0] if names else '?'!r}); widen es.include or narrow es.exclude"
        )
    return chosen


def lowrank_param_filter(named: Iterable[tuple[str, torch.nn.Parameter]], vectors: str) -> list[tuple[str, torch.nn.Parameter]]:
    """The parameters low-rank ES evolves: every matrix, plus the rest when vectors get full noise."""
    if vectors not in ("freeze", "full"):
        raise ValueError(f"lowrank_vectors must be 'freeze' or 'full', got {vectors!r}")
    named = list(named)
    kept = named if vectors == "full" else [(n, p) for n, p in named if p.dim() == 2]
    if not kept:
        raise ConfigError("low-rank ES found no weight matrices among the parameters es.include/es.exclude select; "
                          "widen es.include, or set es.lowrank_vectors=full")
    return kept


def make_params(model: Any, es: ESConfig, seed: int | None = None) -> EvolvingParams:
    """The parameters `es.include`/`es.exclude` select, with full-rank or low-rank noise.

    The noise version is `es.noise_version` (resume and replay set it from the trajectory), else the newest.

    With `es.lora.enabled` (LoRA-ES) it first attaches LoRA adapters to `model` (in place, initialised
    from the run `seed`), and the evolving parameters are the adapters that `es.include`/`es.exclude`
    select: noise and updates never touch the base weights.
    """
    if es.lora.enabled:
        if seed is None:
            raise ValueError("LoRA-ES needs the run seed: its adapters are initialised from it")
        from evotune.backends.lora import attach_lora  # peft: imported only when used

        adapters = attach_lora(model, es.lora, seed)
        named = [(n, p) for n, p in adapters
                 if any(fnmatch.fnmatchcase(n, g) for g in es.include)
                 and not any(fnmatch.fnmatchcase(n, g) for g in es.exclude)]
        if not named:
            raise ConfigError(
                f"es.include={es.include} / es.exclude={es.exclude} select none of the LoRA adapter parameters "
                f"(named like {adapters[0][0]}); with es.lora, include/exclude filter the adapters: widen them"
            )
    else:
        named = select_params(model, es.include, es.exclude)
    master = "cpu" if es.master_device == "cpu" else None
    version = es.noise_version or NOISE_VERSION
    if es.noise == "lowrank":
        named = lowrank_param_filter(named, es.lowrank_vectors)
        widest = max((min(p.shape) for _, p in named if p.dim() == 2), default=0)
        if widest and es.rank > widest:  # a rank past every matrix's dimensions is full rank, at r× the memory
            raise ConfigError(f"es.rank={es.rank} exceeds every matrix's smaller dimension (at most {widest}); "
                              f"use es.rank <= {widest}, or es.noise=full for full-rank noise")
        return EvolvingParams(named, LowRankNoise(es.rank, es.lowrank_vectors, version), es, master_device=master)
    return EvolvingParams(named, FullNoise(version), es, master_device=master)


class EvolvingParams:
    """Holds the evolving parameters of a model and applies ES operations to them.

    `es` chooses the update rule (`es.optimizer`, decay; see `es/optimizers.py`); without it the
    update is plain `master += α · Σ c_s ε(s)` (sgd over a population of 1). `master_device` keeps the
    fp32 master elsewhere than the model (`es.master_device: cpu` for models whose master does not fit).
    """

    def __init__(
        self, named: Iterable[tuple[str, torch.nn.Parameter]], noise_fn: NoiseFn = noise, es: ESConfig | None = None,
        master_device: str | torch.device | None = None,
    ) -> None:
        self.params: dict[str, torch.nn.Parameter] = dict(named)
        devices = {p.device for p in self.params.values()}
        if len(devices) > 1:
            raise ValueError(f"evolving parameters must share one device, found {sorted(map(str, devices))}")
        self.device: torch.device = devices.pop() if devices else torch.device("cpu")  # noise is drawn here
        self.master: dict[str, torch.Tensor] = {
            n: p.detach().to(device=master_device or p.device, dtype=torch.float32, copy=True)
            for n, p in self.params.items()
        }
        self.noise_fn = FullNoise() if noise_fn is noise else noise_fn
        self.optimizer = ESOptimizer(es, self.master)
        # Largest tensors first, so the pool's last tasks are small ones and the workers finish together.
        self._order = sorted(self.params, key=lambda n: -self.params[n].numel())

    def _each(self, fn: Callable[[str], None]) -> None:
        """Run `fn` on every parameter name under `torch.no_grad`, on a thread pool when it helps.

        Grad mode is thread-local: a caller's `no_grad` does not reach the pool's threads, where in-place
        writes to parameters that require grad would fail. So every call enters `no_grad` itself.
        """

        def run(name: str) -> None:
            with torch.no_grad():
                fn(name)

        # a GPU queues kernels asynchronously: host threads only add contention there
        k = min(noise_threads(), len(self._order)) if self.device.type == "cpu" else 1
        if k <= 1:
            for n in self._order:
                run(n)
            return
        with ThreadPoolExecutor(k) as pool:
            for _ in pool.map(run, self._order):
                pass

    def _draw_into(self, seed: int, name: str, p: torch.Tensor) -> torch.Tensor:
        """ε(seed, name) — written into `p` itself when `p` is an fp32 tensor and the noise is full rank."""
        if isinstance(self.noise_fn, FullNoise) and p.dtype == torch.float32:
            return self.noise_fn(seed, name, tuple(p.shape), out=p)
        return self.noise_fn(seed, name, tuple(p.shape), device=p.device)

    @property
    def noise_version(self) -> int:
        """The noise version drawn (a noise fn without one is version 1's plain torch seeding)."""
        return int(getattr(self.noise_fn, "version", 1))

    @property
    def device_type(self) -> str:
        """The device type the noise is drawn on (its stream depends on it): what trajectories record."""
        return self.device.type

    def placement(self) -> dict[str, Any]:
        """What a trajectory row records beyond the device type so a resume or replay draws the same
        noise and rounds the update alike: on CUDA the GPU identity (`gpu_identity`) and where the
        fp32 master lives (CPU and CUDA elementwise kernels need not round alike). Nothing on the CPU."""
        gpu = gpu_identity(self.device)
        if gpu is None:
            return {}
        master = next(iter(self.master.values())).device.type if self.master else self.device.type
        return {"gpu": gpu, "master": master}

    def _master_on_device(self, name: str) -> torch.Tensor:
        m = self.master[name]
        return m if m.device == self.device else m.to(self.device, non_blocking=True)

    @torch.no_grad()
    def perturb(self, seed: int, sign: int, sigma: float) -> None:
        """Write master + sign·σ·ε(seed) into the model, tensor by tensor.

        The value depends only on the master, so consecutive members need no restore in between.
        Sign 0 (or σ = 0) is the centre member: the master itself, copied, no noise drawn.
        """
        if sign == 0 or sigma == 0:
            self.restore()
            return

        def one(name: str) -> None:
            p = self.params[name]
            eps = self._draw_into(seed, name, p.data)
            eps.mul_(sign * sigma).add_(self._master_on_device(name))
            if eps.data_ptr() != p.data_ptr():
                p.copy_(eps)

        self._each(one)

    @torch.no_grad()
    def restore(self) -> None:
        """Exact restore: copy the master back into the model."""
        self._each(lambda name: self.params[name].copy_(self.master[name], non_blocking=True))

    @torch.no_grad()
    def apply_update(
        self, coeffs: Mapping[int, float], alpha: float, max_norm: float | None = None, scale: float | None = None,
    ) -> dict[str, float]:
        """One optimizer step on Σ_s c_s ε(s) (accumulated in fp32) at rate α, then written to the model.

        With `sgd` this is master += (α/N) · Σ_s c_s ε(s), the paper's update.

        Seeds are visited in sorted order so the floating-point sum is a pure function of the
        coefficients (replay and resume reproduce it bit for bit). A noise fn with `weighted_sum`
        (low rank) builds Σ_s c_s ε(s) itself, e.g. as one GEMM instead of N outer products.

        `max_norm` clips the global norm of ĝ = Σ_s c_s ε(s) / N first; that needs the norm before any
        tensor steps, so the directions are built twice (a pass more of noise, no memory more).
        A recorded `scale` (replay) skips the first pass. Returns ĝ's norm, the scale applied and the
        step taken, ‖θ_after − θ_before‖₂ over the fp32 master (optimizer and decay included), with its RMS.
        """
        order = sorted(coeffs)
        pairs = [(s, float(coeffs[s])) for s in order]
        combine = getattr(self.noise_fn, "weighted_sum", None)
        sq: dict[str, float] = {}

        def direction(name: str) -> torch.Tensor:
            p = self.params[name]
            acc = combine(pairs, name, tuple(p.shape), device=p.device) if combine is not None else None
            if acc is None:
                acc = torch.zeros(p.shape, dtype=torch.float32, device=p.device)
                for s, c in pairs:
                    acc.add_(self._draw_into(s, name, p.data), alpha=c)  # p is scratch: rewritten below
            sq[name] = float(torch.linalg.vector_norm(acc, dtype=torch.float64)) ** 2
            return acc

        def norm() -> float:  # summed in name order: a pure function of the per-tensor norms
            return math.sqrt(math.fsum(sq[n] for n in sorted(sq))) / self.optimizer.population

        def measure(name: str) -> None:
            direction(name)  # the model tensor it used as scratch is rewritten by the second pass

        if max_norm is not None and scale is None:
            self._each(measure)
            scale = clip_scale(norm(), max_norm)
        factor = 1.0 if scale is None else scale

        moved: dict[str, float] = {}

        def one(name: str) -> None:
            p, master = self.params[name], self.master[name]
            acc = direction(name)
            if factor != 1.0:
                acc.mul_(factor)
            before = master.clone()  # one tensor at a time: what the step did, read off the weights
            self.optimizer.step(name, master, acc.to(master.device), alpha)
            moved[name] = float(torch.linalg.vector_norm(before.sub_(master), dtype=torch.float64)) ** 2
            p.copy_(master)

        self._each(one)
        step = math.sqrt(math.fsum(moved[n] for n in sorted(moved)))
        size = sum(t.numel() for t in self.master.values())
        return {"grad_norm": norm(), "clip_scale": factor, "step_norm": step, "step_rms": step / math.sqrt(max(size, 1))}

    @torch.no_grad()
    def load_master(self, tensors: Mapping[str, torch.Tensor]) -> None:
        """Replace the master (and model) weights, e.g. from a checkpoint; names must match."""
        missing = set(self.params) - set(tensors)
        if missing:
            raise KeyError(f"checkpoint lacks evolving parameters: {sorted(missing)[:5]}")
        for name, p in self.params.items():
            self.master[name].copy_(tensors[name].to(torch.float32))  # copy_ moves it to the master's device
            p.copy_(self.master[name])

    def checksum(self) -> str:
        """A hash of the master weights: equal checksums mean bit-identical weights.

        Blocks of at most `CHECKSUM_BLOCK` bytes are hashed on a thread pool (hashlib releases the GIL;
        one blake2b stream over a 7B master's 30 GB takes ~30–40 s on one thread at every checkpoint,
        resume and replay), then the block digests, in name order, are hashed once more. The result is
        prefixed `p1:`; checkpoints written before carry `legacy_checksum`'s serial form, which
        `checksum_matches` still accepts. The value does not depend on the number of threads.
        """
        blocks: list[tuple[str, int, torch.Tensor]] = []
        for name in sorted(self.master):
            flat = self.master[name].detach().reshape(-1)
            step = max(1, CHECKSUM_BLOCK // flat.element_size())
            blocks += [(name, i, flat[i:i + step]) for i in range(0, max(1, flat.numel()), step)]

        def digest(block: tuple[str, int, torch.Tensor]) -> bytes:
            return hashlib.blake2b(block[2].cpu().contiguous().numpy(), digest_size=16).digest()

        threads = max(1, min(len(blocks), os.cpu_count() or 1))
        with ThreadPoolExecutor(threads) as pool:
            digests = list(pool.map(digest, blocks))
        h = hashlib.blake2b(digest_size=16)
        for (name, start, _), d in zip(blocks, digests, strict=True):
            h.update(f"{name}@{start}".encode())
            h.update(d)
        return CHECKSUM_PREFIX + h.hexdigest()

    def legacy_checksum(self) -> str:
        """The serial checksum checkpoints recorded before `checksum` went parallel (one blake2b stream)."""
        h = hashlib.blake2b(digest_size=16)
        for name in sorted(self.master):
            h.update(name.encode())
            h.update(self.master[name].cpu().numpy().tobytes())
        return h.hexdigest()

    def checksum_matches(self, recorded: str) -> bool:
        """Whether `recorded` (either form) is the checksum of the master now."""
        return recorded == (self.checksum() if recorded.startswith(CHECKSUM_PREFIX) else self.legacy_checksum())

    def model_matches_master(self) -> bool:
        """Whether the model holds the master, compared in the model's dtype.

        A bf16 model holds the master rounded to bf16 (`copy_` rounds), so widening the model to fp32
        and comparing with the master would be false after any update that is not a bf16 value.
        """
        return all(
            torch.equal(p.detach(), self._master_on_device(n).to(p.dtype)) for n, p in self.params.items()
        )
