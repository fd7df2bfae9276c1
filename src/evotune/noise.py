"""Noise as pure functions of (seed, parameter name): nothing is stored, a seed regenerates it.

Keying by the parameter *name* makes noise i.i.d. across tensors (two same-shape tensors never
share noise, unlike seeding one generator per member for every tensor) and independent of the
order in which parameters are visited.

Noise is drawn where it is used, by a generator on that device (no host round trip on a GPU).
Torch's CPU and CUDA generators give different streams for the same seed, so ε is a pure function
of (seed, name, device type): a run records its device type, and resume/replay check it.

Noise versions (each trajectory row records the one it used; resume and replay use the recorded one):
- 1: `torch.Generator.manual_seed(key)`. On the CPU torch seeds mt19937 from the key's low 32 bits
  only, so two 63-bit keys that share those bits share a stream: with ~272 tensors × N members a
  population collides with probability ≈ (272·N)²/2³³, and routinely at low-rank populations.
- 2 (default): on the CPU the generator's whole mt19937 state is set from the full 63-bit key
  (`_keyed_state`, a bijection of the key in two state words: distinct keys, distinct streams); same
  `torch.randn`, same speed. CUDA's Philox generator is seeded by all 64 bits already, so on CUDA
  versions 1 and 2 draw the same noise.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence

import numpy as np
import torch

from evotune.hashing import stable_int


def member_seed(run_seed: int, iteration: int, member: int) -> int:
    """The seed of population member `member` at `iteration`, a pure function of its inputs."""
    return stable_int("member", run_seed, iteration, member)


def tensor_seed(seed: int, name: str) -> int:
    return stable_int("tensor", seed, name)


DeviceLike = torch.device | str
NOISE_VERSION = 2  # what new runs draw; see the module docstring
NOISE_VERSIONS = (1, 2)

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_STATE_OFFSET, _STATE_WORDS = 24, 624  # CPUGeneratorImplState: seed u64, left i32, seeded i32, next u64, state[624] u64
_template: list[np.ndarray] = []
_template_lock = threading.Lock()


def splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's output function (a bijection of uint64), applied elementwise; wraps modulo 2⁶⁴."""
    with np.errstate(over="ignore"):
        z = (x ^ (x >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def mt_words(key: int) -> np.ndarray:
    """The 624 mt19937 state words of noise version 2 for a 63-bit `key`.

    Word 0 (of which mt19937 uses only the top bit) is fixed at 0x80000000, so the state is never
    degenerate; words 1–2 are splitmix64(key), a bijection, so distinct keys give distinct states and
    therefore distinct streams; the rest are splitmix64 of a Weyl sequence from the key.
    """
    with np.errstate(over="ignore"):
        x = np.uint64(key) + np.arange(312, dtype=np.uint64) * _GAMMA
    words = np.empty(_STATE_WORDS, dtype=np.uint32)
    words[0] = 0x80000000
    words[1:] = splitmix64(x).view(np.uint32)[: _STATE_WORDS - 1]  # little-endian: lo, hi of each output
    return words


def _state_template() -> np.ndarray:
    """torch's CPU generator state bytes after `manual_seed`, its layout checked once (fail loudly, never guess)."""
    with _template_lock:
        if not _template:
            probe = 0x12345678
            b = torch.Generator().manual_seed(probe).get_state().numpy().copy()
            w = b[_STATE_OFFSET: _STATE_OFFSET + 8 * _STATE_WORDS].view(np.uint64)
            w1 = (1812433253 * (probe ^ (probe >> 30)) + 1) & 0xFFFFFFFF
            head = b[8:16].view(np.int32)
            if not (int(w[0]) == probe and int(w[1]) == w1 and head[0] == 1 and head[1] == 1):
                raise RuntimeError(
                    f"torch {torch.__version__}: unexpected CPU generator state layout; noise version 2 cannot be "
                    "drawn here (set es.noise_version=1, or use the pinned torch)"
                )
            _template.append(b)
    return _template[0]


def _generator(seed: int, device: DeviceLike, version: int = NOISE_VERSION) -> torch.Generator:
    dev = torch.device(device)
    if version not in NOISE_VERSIONS:
        raise ValueError(f"unknown noise version {version}: evotune draws versions {list(NOISE_VERSIONS)}")
    if version == 1 or dev.type != "cpu":
        return torch.Generator(device=dev).manual_seed(seed)
    b = _state_template().copy()
    b[:8].view(np.uint64)[0] = seed  # initial_seed() reports the key
    b[_STATE_OFFSET: _STATE_OFFSET + 8 * _STATE_WORDS].view(np.uint64)[:] = mt_words(seed)
    g = torch.Generator()
    g.set_state(torch.from_numpy(b))
    return g


def noise(
    seed: int, name: str, shape: torch.Size | tuple[int, ...], out: torch.Tensor | None = None,
    device: DeviceLike = "cpu", version: int = NOISE_VERSION,
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
        return torch.randn(tuple(shape), generator=_generator(tensor_seed(seed, name), out.device, version), out=out)
    g = _generator(tensor_seed(seed, name), device, version)
    return torch.randn(tuple(shape), generator=g, dtype=torch.float32, device=g.device)


def factors(
    seed: int, name: str, shape: tuple[int, int], rank: int, device: DeviceLike = "cpu", version: int = NOISE_VERSION
) -> tuple[torch.Tensor, torch.Tensor]:
    """Low-rank factors (A: out×r, B: in×r) so that E = A Bᵀ/√r has unit-variance entries."""
    out_f, in_f = shape
    g = _generator(tensor_seed(seed, name + "#lowrank"), device, version)
    a = torch.randn((out_f, rank), generator=g, dtype=torch.float32, device=g.device)
    b = torch.randn((in_f, rank), generator=g, dtype=torch.float32, device=g.device)
    return a, b


class FullNoise:
    """The noise fn of full-rank ES at one noise version: `(seed, name, shape, device) -> ε`."""

    def __init__(self, version: int = NOISE_VERSION) -> None:
        if version not in NOISE_VERSIONS:
            raise ValueError(f"unknown noise version {version}: evotune draws versions {list(NOISE_VERSIONS)}")
        self.version = version

    def __call__(
        self, seed: int, name: str, shape: tuple[int, ...], device: DeviceLike = "cpu", out: torch.Tensor | None = None
    ) -> torch.Tensor:
        return noise(seed, name, shape, out=out, device=device, version=self.version)

    def __repr__(self) -> str:
        return f"FullNoise(version={self.version})"


class LowRankNoise:
    """The noise fn of low-rank ES: materialised E = A Bᵀ/√r for matrices, full noise otherwise.

    A callable `(seed, name, shape) -> fp32 tensor` as `EvolvingParams` expects, plus
    `weighted_sum`, which `EvolvingParams.apply_update` uses to build Σ cₛEₛ with one GEMM per
    matrix instead of materialising N outer products.
    """

    def __init__(self, rank: int, vectors: str = "freeze", version: int = NOISE_VERSION) -> None:
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        if version not in NOISE_VERSIONS:
            raise ValueError(f"unknown noise version {version}: evotune draws versions {list(NOISE_VERSIONS)}")
        self.rank, self.vectors, self.version = rank, vectors, version

    def __call__(self, seed: int, name: str, shape: tuple[int, ...], device: DeviceLike = "cpu") -> torch.Tensor:
        shape = tuple(shape)
        if len(shape) == 2:
            a, b = factors(seed, name, shape, self.rank, device, self.version)  # type: ignore[arg-type]
            return (a @ b.T).div_(math.sqrt(self.rank))
        if self.vectors != "full":
            raise ValueError(f"{name} (shape {shape}) is not a matrix and lowrank_vectors={self.vectors!r}")
        return noise(seed, name, shape, device=device, version=self.version)

    def weighted_sum(
        self, coeffs: Sequence[tuple[int, float]], name: str, shape: tuple[int, ...], device: DeviceLike = "cpu"
    ) -> torch.Tensor | None:
        """Σ cₛ AₛBₛᵀ/√r as [c₁A₁ … cₙAₙ][B₁ … Bₙ]ᵀ/√r (None for non-matrices: the caller loops)."""
        if len(tuple(shape)) != 2:
            return None
        a_parts, b_parts = [], []
        for s, c in coeffs:
            a, b = factors(s, name, tuple(shape), self.rank, device, self.version)  # type: ignore[arg-type]
            a_parts.append(a.mul_(c))
            b_parts.append(b)
        return (torch.cat(a_parts, 1) @ torch.cat(b_parts, 1).T).div_(math.sqrt(self.rank))

    def __repr__(self) -> str:
        return f"LowRankNoise(rank={self.rank}, vectors={self.vectors!r}, version={self.version})"
