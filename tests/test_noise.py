"""Noise version 2: CPU streams keyed by the full 63-bit seed (issue: mt19937 kept only 32 bits)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evotune.errors import RunStateError
from evotune.noise import (
    NOISE_VERSION,
    FullNoise,
    LowRankNoise,
    factors,
    member_seed,
    mt_words,
    noise,
    tensor_seed,
)

Q = "model.layers.14.self_attn.q_proj.weight"
V = "model.layers.15.self_attn.v_proj.weight"


def test_the_reported_collision_exists_in_version_1_and_is_gone_in_version_2():
    # seed 0: iteration 5 member 31 (q_proj of layer 14) vs iteration 12 member 12 (v_proj of layer 15)
    ka, kb = tensor_seed(member_seed(0, 5, 31), Q), tensor_seed(member_seed(0, 12, 12), V)
    assert ka != kb and ka & 0xFFFFFFFF == kb & 0xFFFFFFFF
    a1 = noise(member_seed(0, 5, 31), Q, (64, 9), version=1)
    b1 = noise(member_seed(0, 12, 12), V, (64, 9), version=1)
    assert torch.equal(a1, b1)  # the defect: same low 32 bits, same stream
    a2 = noise(member_seed(0, 5, 31), Q, (64, 9), version=2)
    b2 = noise(member_seed(0, 12, 12), V, (64, 9), version=2)
    assert not torch.equal(a2, b2)
    assert NOISE_VERSION == 2


def test_keys_sharing_low_32_bits_get_distinct_streams():
    base = 0x1234_5678
    draws = [noise(s, "w", (16,)) for s in (base, base + 2**32, base + 2**40, base + 2**62)]
    for i in range(len(draws)):
        for j in range(i + 1, len(draws)):
            assert not torch.equal(draws[i], draws[j])


def test_no_state_collision_among_2_to_20_keys():
    """2²⁰ keys (hashed seeds and adversarial ones sharing low bits): every mt19937 state differs.

    Words 1–2 of the state are splitmix64(key), a bijection, so the check on them is the check on the
    whole state; mt19937 maps distinct states to distinct streams. `mt_words` is what the generator uses
    (checked below on sampled keys), so the streams of these keys are pairwise distinct.
    """
    rng = np.random.default_rng(0)
    keys = np.concatenate([
        rng.integers(0, 2**63, size=2**19, dtype=np.uint64),
        (np.arange(2**19, dtype=np.uint64) << np.uint64(32)) | np.uint64(0xDEADBEEF),  # all share the low 32 bits
    ])
    assert len(np.unique(keys)) == 2**20
    from evotune.noise import splitmix64

    heads = splitmix64(keys)  # = words 1–2 of each state
    assert len(np.unique(heads)) == 2**20
    for k in keys[:: 2**16]:
        w = mt_words(int(k))
        assert int(w[1]) | (int(w[2]) << 32) == int(splitmix64(np.array([k], dtype=np.uint64))[0])


def test_generator_state_is_the_keyed_state_and_draws_are_pure():
    from evotune.noise import _generator

    g = _generator(2**61 + 7, "cpu", 2)
    assert g.initial_seed() == 2**61 + 7
    x = noise(5, "w", (100,))
    assert torch.equal(x, noise(5, "w", (100,)))
    out = torch.empty(100)
    assert torch.equal(noise(5, "w", (100,), out=out), x)
    assert torch.equal(FullNoise(2)(5, "w", (100,)), x)
    # moments: N(0, 1)
    big = noise(11, "big", (1_000_000,))
    assert abs(float(big.mean())) < 5e-3 and abs(float(big.std()) - 1) < 5e-3


def test_version_1_is_the_old_manual_seed_stream():
    k = tensor_seed(3, "w")
    old = torch.randn((10,), generator=torch.Generator().manual_seed(k))
    assert torch.equal(noise(3, "w", (10,), version=1), old)
    a1, _ = factors(3, "w", (8, 4), 2, version=1)
    a2, _ = factors(3, "w", (8, 4), 2, version=2)
    assert not torch.equal(a1, a2)
    assert LowRankNoise(2, version=1).version == 1
    with pytest.raises(ValueError, match="noise version"):
        noise(3, "w", (10,), version=3)


def test_noise_version_of_rows():
    from evotune.es.trajectory import noise_version_of

    assert noise_version_of([]) == NOISE_VERSION
    assert noise_version_of([], 1) == 1
    assert noise_version_of([{"step": 1}, {"step": 2}]) == 1  # written before versions were recorded
    assert noise_version_of([{"step": 1, "noise": 2}]) == 2
    with pytest.raises(RunStateError, match="mixes noise versions"):
        noise_version_of([{"step": 1}, {"step": 2, "noise": 2}])
    with pytest.raises(RunStateError, match="noise version 1 but es.noise_version=2"):
        noise_version_of([{"step": 1}], 2)


def test_version_2_costs_no_speed():
    """Not a timed assertion: both versions run the same torch.randn over the same bytes."""
    from evotune.noise import _generator

    assert _generator(1, "cpu", 2).get_state().numel() == torch.Generator().get_state().numel()
