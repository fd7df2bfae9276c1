"""The ES core: noise, ask/tell, exact restore, fp32 accumulation, config validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from evotune.backends.models import load_model
from evotune.config import build_config
from evotune.errors import ConfigError
from evotune.es.params import EvolvingParams, select_params
from evotune.es.strategy import Member, ask, centered_rank, tell, zscore
from evotune.noise import factors, member_seed, noise


def test_noise_differs_between_same_shape_tensors_and_is_reproducible():
    a = noise(7, "model.layers.0.self_attn.q_proj.weight", (64, 64))
    b = noise(7, "model.layers.1.self_attn.q_proj.weight", (64, 64))
    assert not torch.equal(a, b)
    assert abs(float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1])) < 0.05
    assert torch.equal(a, noise(7, "model.layers.0.self_attn.q_proj.weight", (64, 64)))
    assert not torch.equal(a, noise(8, "model.layers.0.self_attn.q_proj.weight", (64, 64)))
    assert a.dtype == torch.float32
    assert abs(float(a.mean())) < 0.05 and abs(float(a.std()) - 1) < 0.05


def test_noise_independent_of_parameter_order(tiny_model):
    m1, _ = load_model(str(tiny_model))
    m2, _ = load_model(str(tiny_model))
    p1 = EvolvingParams(select_params(m1))
    p2 = EvolvingParams(list(reversed(select_params(m2))))
    p1.perturb(123, 1, 0.1)
    p2.perturb(123, 1, 0.1)
    for (n, a), (_, b) in zip(sorted(m1.named_parameters()), sorted(m2.named_parameters()), strict=True):
        assert torch.equal(a, b), n


def test_lowrank_factors_shapes_and_scale():
    a, b = factors(3, "w", (32, 16), 4)
    assert a.shape == (32, 4) and b.shape == (16, 4)
    e = a @ b.T / math.sqrt(4)
    assert 0.7 < float(e.std()) < 1.3


def test_member_seeds_are_pure_and_unique():
    assert member_seed(0, 1, 2) == member_seed(0, 1, 2)
    pop = ask(0, 5, 64)
    assert len({m.seed for m in pop}) == 64
    assert pop == ask(0, 5, 64)
    assert {m.seed for m in pop}.isdisjoint({m.seed for m in ask(0, 6, 64)})


def test_antithetic_pairs_share_seed_with_opposite_sign():
    pop = ask(1, 1, 6, antithetic=True)
    assert [m.sign for m in pop] == [1, -1, 1, -1, 1, -1]
    assert pop[0].seed == pop[1].seed and pop[0].seed != pop[2].seed
    with pytest.raises(ValueError):
        ask(1, 1, 5, antithetic=True)


def test_shaping_functions():
    z = zscore([1.0, 2.0, 3.0])
    assert np.allclose(z, [-1.2247449, 0.0, 1.2247449], atol=1e-6)
    r = centered_rank([10.0, -5.0, 3.0, 3.0])
    assert np.allclose(r, [0.5, -0.5, 0.0, 0.0])
    assert np.allclose(zscore([2.0, 2.0]), [0.0, 0.0])


def test_tell_zero_variance_and_nan():
    pop = ask(0, 1, 4)
    assert tell(pop, [0.5] * 4) is None
    with pytest.raises(FloatingPointError, match="non-finite fitness"):
        tell(pop, [0.1, float("nan"), 0.2, 0.3])
    coeffs = tell(pop, [1.0, 2.0, 3.0, 4.0])
    assert coeffs is not None and len(coeffs) == 4
    assert abs(sum(coeffs.values())) < 1e-9


def test_tell_combines_antithetic_pairs():
    pop = ask(0, 1, 4, antithetic=True)
    coeffs = tell(pop, [3.0, 1.0, 2.0, 2.0])
    assert coeffs is not None and len(coeffs) == 2
    z = zscore([3.0, 1.0, 2.0, 2.0])
    assert coeffs[pop[0].seed] == pytest.approx(z[0] - z[1])
    assert coeffs[pop[2].seed] == pytest.approx(0.0)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_perturb_then_restore_is_bit_exact(tiny_model, dtype):
    model, _ = load_model(str(tiny_model), dtype)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    params = EvolvingParams(select_params(model))
    for seed, sign in [(1, 1), (2, -1), (3, 1)]:
        params.perturb(seed, sign, 0.01)
        assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())
        params.restore()
        for n, p in model.named_parameters():
            assert torch.equal(before[n], p), n


def test_update_accumulates_in_fp32_even_for_bf16(tiny_model):
    """A step far below bf16 resolution must still move the fp32 master (bf16 would swallow it)."""
    model, _ = load_model(str(tiny_model), "bfloat16")
    params = EvolvingParams(select_params(model))
    m0 = {n: t.clone() for n, t in params.master.items()}
    params.apply_update({11: 1.0}, 1e-6)
    for n, t in params.master.items():
        assert t.dtype == torch.float32
        delta = t - m0[n]
        # fp32 resolves the step to within an fp32 ulp of |w| <= 1 (~1.2e-7)
        assert torch.allclose(delta, 1e-6 * noise(11, n, tuple(t.shape)), atol=1.2e-7), n
        assert float(delta.abs().max()) > 0
    # ...while the bf16 copy of a weight near 1.0 (ulp 7.8e-3) cannot see it at all
    norm = "model.layers.0.input_layernorm.weight"
    assert torch.equal(dict(model.named_parameters())[norm].float(), m0[norm])


def test_update_matches_formula_and_only_selected_params_move(tiny_model):
    model, _ = load_model(str(tiny_model))
    sel = select_params(model, include=["*layers.0.*"], exclude=["*norm*"])
    names = {n for n, _ in sel}
    assert names and all("layers.0." in n and "norm" not in n for n in names)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    params = EvolvingParams(sel)
    pop = ask(0, 1, 4)
    fit = [0.1, 0.4, 0.2, 0.3]
    coeffs = tell(pop, fit)
    params.apply_update(coeffs, 0.01 / 4)
    z = zscore(fit)
    for n, p in model.named_parameters():
        if n not in names:
            assert torch.equal(p, before[n])
            continue
        expect = before[n].clone()
        acc = torch.zeros_like(expect)
        for m, zi in sorted(zip(pop, z, strict=True), key=lambda t: t[0].seed):
            acc += float(zi) * noise(m.seed, n, tuple(expect.shape))
        assert torch.allclose(p, expect + 0.0025 * acc, atol=1e-6), n


def test_select_params_no_match_is_an_error(tiny_model):
    model, _ = load_model(str(tiny_model))
    with pytest.raises(ValueError, match="select none of the model's"):  # a ConfigError: one line in the CLI
        select_params(model, include=["nothing*"])


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match=r"es\.sigma"):
        build_config(None, {"es.sigma": -1})
    with pytest.raises(ConfigError, match=r"es\.population"):
        build_config(None, {"es.population": 0})
    with pytest.raises(ConfigError, match="antithetic"):
        build_config(None, {"es.population": 3, "es.antithetic": True})
    with pytest.raises(ConfigError, match=r"es\.bogus"):
        build_config(None, {"es.bogus": 1})


def test_config_yaml_with_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("es:\n  population: 8\n  sigma: 0.002\ntask:\n  name: countdown\n")
    cfg = build_config(p, {"es.sigma": 0.003})
    assert cfg.es.population == 8 and cfg.es.sigma == 0.003 and cfg.task.name == "countdown"
    p.write_text("es: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        build_config(p)


def test_member_equality_is_by_value():
    assert Member(0, 5, 1) == Member(0, 5, 1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_perturb_restore_update_work_on_params_that_require_grad_in_worker_threads(monkeypatch, dtype):
    """Grad mode is thread-local: a caller's no_grad does not reach the noise threads (issue 29, item 4)."""
    monkeypatch.setenv("EVOTUNE_NOISE_THREADS", "2")

    def model(grad: bool) -> torch.nn.Module:
        m = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.Linear(8, 4), torch.nn.LayerNorm(4))
        with torch.no_grad():
            for i, p in enumerate(m.parameters()):
                p.copy_(torch.linspace(-1, 1, p.numel()).view(p.shape) * (i + 1))
        return m.to(dtype).requires_grad_(grad)

    m_grad, m_plain = model(True), model(False)
    pg, pp = EvolvingParams(list(m_grad.named_parameters())), EvolvingParams(list(m_plain.named_parameters()))
    assert len(pg.params) > 2
    for params in (pg, pp):
        params.perturb(5, -1, 0.1)
    for (n, a), (_, b) in zip(m_grad.named_parameters(), m_plain.named_parameters(), strict=True):
        assert torch.equal(a, b), n
    pg.restore()
    pp.restore()
    for params in (pg, pp):
        params.apply_update({3: 0.5, 9: -1.0}, 0.01)
    for (n, a), (_, b) in zip(m_grad.named_parameters(), m_plain.named_parameters(), strict=True):
        assert torch.equal(a, b) and a.requires_grad and a.is_leaf and a.grad_fn is None, n
    assert pg.checksum() == pp.checksum()
    m_grad(torch.ones(2, 16, dtype=dtype)).sum().backward()  # still trainable by gradients
    assert all(p.grad is not None for p in m_grad.parameters())


# -- shaping against the field's definitions (issue 29, item 5 and the cross-checks) -------------------
def _evosax_standardize(f: np.ndarray) -> np.ndarray:
    """evosax's z-score (`jax.nn.standardize(f, epsilon=1e-8)`), written out: (f − mean)/√(var + 1e-8)."""
    return (f - f.mean()) / np.sqrt(f.var() + 1e-8)


def test_zscore_divides_by_std_plus_eps_not_sqrt_var_plus_eps():
    f = np.array([0.3, -1.2, 2.5, 0.0, 0.7, 1.1])
    assert np.allclose(zscore(f), _evosax_standardize(f), rtol=1e-8, atol=0)  # same at ordinary scales
    assert zscore(f).tolist() == pytest.approx(
        [-0.23767036, -1.57456616, 1.72311014, -0.50504952, 0.11883518, 0.47534073], abs=1e-7
    )  # frozen
    tiny = 1e-4 * f  # fitness that differs by ~1e-4 (std 1.2e-4)
    assert np.allclose(zscore(tiny), zscore(f), rtol=1e-3, atol=0)  # scale-free: the same shaping, the same step
    shrink = _evosax_standardize(tiny) / _evosax_standardize(f)
    assert shrink.max() < 0.8  # evosax's √(var + 1e-8) floors the std at 1e-4: its step shrinks
    assert (zscore(f) ** 2).sum() == pytest.approx(len(f), rel=1e-7)  # Σ z² = N: the step RMS α/√N


def test_centered_rank_is_evosax_rankdata_definition_and_one_member_is_zero():
    from scipy.stats import rankdata

    rng = np.random.default_rng(0)
    for n in (2, 3, 7, 30, 101):
        f = rng.integers(0, 5, n).astype(float) if n % 2 else rng.normal(size=n)  # with and without ties
        evosax = (rankdata(f) - 1.0) / (n - 1) - 0.5  # evosax.core.fitness_shaping.centered_rank_fitness_shaping_fn
        assert np.allclose(centered_rank(f), evosax, rtol=0, atol=1e-15), n
    assert centered_rank([4.2]).tolist() == [0.0]  # evosax: 0/0 = NaN; a lone member carries no ranking
    with np.errstate(invalid="ignore"):
        assert np.isnan((rankdata([4.2]) - 1.0) / 0.0 - 0.5).all()
    n = 30
    c = centered_rank(np.arange(n, dtype=float))
    assert (c**2).sum() == pytest.approx(n * (n + 1) / (12 * (n - 1)), rel=1e-12)
