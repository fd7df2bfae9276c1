"""Study verdicts are computed from numbers by the stated rules (synthetic compare summaries)."""

from __future__ import annotations

import random
import statistics

import pytest
import torch

from evotune.analysis.paired import barrier_items, mean_ci
from evotune.errors import AnalysisError, ConfigError
from evotune.study import (
    CLAIM_RULES,
    FAILS,
    HOLDS,
    MIN_SEEDS,
    NOT_RUN,
    UNSURE,
    StudyConfig,
    findings,
    findings_html,
    load_study,
    versus,
)

ES, GR = ["es0", "es1", "es2"], ["grpo0", "grpo1", "grpo2"]
LAMS = [0.0, 0.25, 0.5, 0.75, 1.0]
N_ITEMS, DIM, N_LAYERS = 40, 2048, 6


def _items(base: list[float], gain: float, offset: float, rng: random.Random) -> list[float]:
    return [b + gain + offset + rng.uniform(-0.5, 0.5) for b in base]


def _path(a: str, b: str, ra: list[float], rb: list[float], shape=lambda lam: lam, dip: float = 0.0,
          noise: float = 0.5, seed: int = 0, alternate: bool = False) -> dict:
    """A constructed interpolation path: R_λ,i = R_A,i + shape(λ)(R_B,i − R_A,i) − dip·4λ(1−λ) + noise (interior).

    The noise is Gaussian, or with `alternate` exactly ±noise by item (the mean dip is then exactly `dip`)."""
    rng = random.Random(seed)

    def jitter(i: int) -> float:
        return (noise if i % 2 else -noise) if alternate else rng.gauss(0, noise)

    rows = [[x + shape(lam) * (y - x) - dip * 4 * lam * (1 - lam) + (jitter(i) if 0 < lam < 1 else 0.0)
             for i, (x, y) in enumerate(zip(ra, rb, strict=True))] for lam in LAMS]
    return {"a": a, "b": b, "name": f"{a}→{b}", "lambdas": LAMS, "reward": [statistics.fmean(r) for r in rows],
            "reward_items": rows}


def _cosines(labels: list[str], spread: dict[str, float | None], head: dict[str, float | None],
             one_direction: bool = False, seed: int = 0) -> tuple[dict[str, list[list[float]]], list[list[float]]]:
    """Per-layer cosine matrices of real random updates. A method with a `spread` moves along one direction
    plus that much noise (0.1: near-identical seeds); None: each seed draws its own direction (independent).
    `one_direction`: both methods share the direction."""
    g = torch.Generator().manual_seed(seed)

    def mat(noise: dict[str, float | None]) -> list[list[float]]:
        direction = {m: torch.randn(DIM, generator=g) for m in ("es", "grpo")}
        if one_direction:
            direction["grpo"] = direction["es"]
        d = []
        for lab in labels:
            meth = "es" if lab.startswith("es") else "grpo"
            own = torch.randn(DIM, generator=g)
            d.append(own if noise[meth] is None else direction[meth] + noise[meth] * own)
        return [[float(torch.nn.functional.cosine_similarity(x, y, dim=0)) for y in d] for x in d]

    return {str(i): mat(spread) for i in range(N_LAYERS)}, mat(head)


def _summary(es_gain=40.0, gr_gain=40.0, es_spread=0.1, gr_spread=None, gr_head=0.1, es_head=None, one_direction=False,
             es_norm=10.0, gr_norm=1.0, es_kl=0.5, gr_kl=0.1, cross_dip=10.0, same_dip=0.0,
             es_shape=lambda lam: lam, gr_shape=lambda lam: lam**6, es_hack=0.0, gr_hack=0.4,
             es_deg=2.0, gr_deg=0.2, es_big_gain=3.0, passk=None, seeds=3, path_noise=0.5, alternate=False):
    """A compare summary built from constructed data whose right verdicts are known."""
    es, gr = ES[:seeds], GR[:seeds]
    labels = es + gr
    rng = random.Random(1)
    base = [-50.0 + rng.uniform(-20, 20) for _ in range(N_ITEMS)]  # item difficulty: large, shared by all models
    offsets = [-0.2, 0.0, 0.2]
    items = {m: _items(base, es_gain if m in es else gr_gain, offsets[int(m[-1])], rng) for m in labels}
    rewards = {m: {"t": {"reward_mean": statistics.fmean(x), "reward_std": statistics.stdev(x), "n": N_ITEMS,
                         "item_rewards": x}} for m, x in items.items()}
    rewards["base"] = {"t": {"reward_mean": statistics.fmean(base), "item_rewards": base, "n": N_ITEMS}}
    layers, head = _cosines(labels, {"es": es_spread, "grpo": gr_spread}, {"es": es_head, "grpo": gr_head}, one_direction)
    pairs = [_path("base", m, base, items[m], es_shape if m in es else gr_shape, seed=k) for k, m in enumerate(labels)]
    for k, (a, b) in enumerate((a, b) for i, a in enumerate(labels) for b in labels[i + 1:]):
        cross = (a in es) != (b in es)
        pairs.append(_path(a, b, items[a], items[b], dip=cross_dip if cross else same_dip, noise=path_noise,
                           seed=100 + k, alternate=alternate))

    def rob(m: str) -> dict:
        r0 = rewards[m]["t"]["reward_mean"]
        deg = (es_deg if m in es else gr_deg) + 0.05 * int(m[-1])
        big = es_big_gain + 0.2 * int(m[-1]) if m in es else -1.0
        return {"baseline": {"reward": r0}, "curves": [
            {"sigma": 0.0, "degradation_mean": 0.0, "reward": [r0]},
            {"sigma": 0.001, "degradation_mean": deg, "reward": [r0 - deg - 0.1, r0 - deg + 0.1]},
            {"sigma": 0.01, "degradation_mean": 5.0, "reward": [r0 - 13.0, r0 + big]}]}

    summary = {
        "primary_task": "t",
        "rewards": rewards,
        "cosine": {"models": labels, "layers": layers, "modules": {"lm_head": head}},
        "update_norms": {"total": {m: {"delta_norm": es_norm if m in es else gr_norm} for m in labels}},
        "reward_kl": [{"model": m, "off_task_kl": (es_kl if m in es else gr_kl) + 0.001 * int(m[-1])} for m in labels],
        "lmc": {"pairs": pairs},
        "hacking": [{"model": m, "source": "compare eval (t)", "hack_empty": (es_hack if m in es else gr_hack)
                     + 0.01 * int(m[-1]), "reason": ""} for m in labels],
        "robustness": {m: rob(m) for m in labels},
        "passk": passk,
    }
    return summary, {m: ("es" if m in es else "grpo") for m in labels}, statistics.fmean(base)


HY = ["h0", "h1", "h2"]


def _with_hybrid(summary: dict, methods: dict[str, str], like: str) -> tuple[dict, dict[str, str]]:
    """Add grpo_es runs h0..h2 whose reward, off-task KL and hacking rate sit at ES's seeds' values (like="es"),
    GRPO's (like="grpo"), or half-way between the two (like="middle")."""
    w = {"es": 1.0, "grpo": 0.0, "middle": 0.5}[like]
    pts = {p["model"]: p for p in summary["reward_kl"]}
    hack = {r["model"]: r for r in summary["hacking"]}
    for i, h in enumerate(HY):
        e, g = ES[i], GR[i]
        ie, ig = summary["rewards"][e]["t"]["item_rewards"], summary["rewards"][g]["t"]["item_rewards"]
        items = [w * a + (1 - w) * b for a, b in zip(ie, ig, strict=True)]
        summary["rewards"][h] = {"t": {"reward_mean": statistics.fmean(items), "item_rewards": items, "n": len(items)}}
        summary["reward_kl"].append({"model": h, "off_task_kl": w * pts[e]["off_task_kl"] + (1 - w) * pts[g]["off_task_kl"]})
        summary["hacking"].append({"model": h, "source": "compare eval (t)", "reason": "",
                                   "hack_empty": w * hack[e]["hack_empty"] + (1 - w) * hack[g]["hack_empty"]})
        summary["update_norms"]["total"][h] = {"delta_norm": 1.5}
    return summary, {**methods, **dict.fromkeys(HY, "grpo_es")}


def _passk(temp: list[int], pert: list[int], n: int = 8) -> dict:
    return {"n": n, "temperature": {"value": 0.7, "counts": temp, f"pass@{n}": statistics.fmean(c > 0 for c in temp)},
            "perturbation": {"value": 0.001, "counts": pert, f"pass@{n}": statistics.fmean(c > 0 for c in pert)}}


def _verdicts(**kw) -> dict[str, str]:
    s, methods, base = _summary(**kw)
    return {r["key"]: r["verdict"] for r in findings(s, methods, base)}


def test_all_claims_hold_on_a_constructed_case():
    rng = random.Random(3)
    temp = [rng.randint(3, 8) for _ in range(40)]
    s, methods, base = _summary(passk=_passk(temp, [max(0, c - 3) for c in temp]))
    s, methods = _with_hybrid(s, methods, "es")  # GRPO's update on ES's samples lands where ES does
    rows = findings(s, methods, base)
    assert [r["key"] for r in rows] == list(CLAIM_RULES)
    assert {r["key"]: r["verdict"] for r in rows} == {k: HOLDS for k in CLAIM_RULES}
    assert all(r["rule"] == CLAIM_RULES[r["key"]] for r in rows)
    assert "ES" in rows[0]["measured"] and findings_html(rows, "completions=1").count("<tr>") == len(CLAIM_RULES) + 1
    assert findings(s, methods, base) == rows  # deterministic


def test_all_claims_fail_on_the_opposite_case():
    rng = random.Random(3)
    pert = [rng.randint(3, 8) for _ in range(40)]
    s, methods, base = _summary(
        es_gain=10.0, gr_gain=40.0, es_spread=1.0, gr_spread=0.1, gr_head=None, one_direction=True,
        es_norm=1.0, gr_norm=2.0, es_kl=0.1, gr_kl=0.5, cross_dip=0.0, same_dip=10.0,
        es_shape=lambda lam: lam**6, gr_shape=lambda lam: lam, es_hack=0.6, gr_hack=0.0,
        es_deg=0.2, gr_deg=2.0, passk=_passk([max(0, c - 3) for c in pert], pert))
    s, methods = _with_hybrid(s, methods, "grpo")  # the update, not the sampler, makes the difference
    v = {r["key"]: r["verdict"] for r in findings(s, methods, base)}
    assert v == {k: FAILS for k in CLAIM_RULES}


def test_sampler_claim_is_inconclusive_half_way_and_not_run_without_hybrid_runs():
    s, methods, base = _summary()
    s, methods = _with_hybrid(s, methods, "middle")
    row = next(r for r in findings(s, methods, base) if r["key"] == "es_sampling_gradient_update")
    assert row["verdict"] == UNSURE and "p 0.5" in row["measured"], row["measured"]
    assert "‖Δ_H‖/‖Δ_GRPO‖ 1.5" in row["measured"]
    assert _verdicts()["es_sampling_gradient_update"] == NOT_RUN
    # ES and GRPO that do not differ on any measure leave nothing to attribute
    s, methods, base = _summary(gr_gain=40.0, es_kl=0.1, gr_kl=0.1, es_hack=0.0, gr_hack=0.0)
    s, methods = _with_hybrid(s, methods, "es")
    row = next(r for r in findings(s, methods, base) if r["key"] == "es_sampling_gradient_update")
    assert row["verdict"] == UNSURE and "not separated" in row["measured"]


def test_fewer_than_three_seeds_is_inconclusive():
    v = _verdicts(seeds=2)
    for key in ("comparable_reward", "es_seeds_agree_more", "grpo_unembedding_correlates", "path_shape",
                "grpo_more_robust"):
        assert v[key] == UNSURE, key
    assert MIN_SEEDS == 3 and StudyConfig(name="x", budget={"completions": 1}).seeds == [0, 1, 2]


# -- paired statistics on constructed paths ---------------------------------------------------------
def test_flat_path_has_zero_paired_barrier():
    rng = random.Random(0)
    a, b = [rng.uniform(-60, -10) for _ in range(30)], [rng.uniform(-60, -10) for _ in range(30)]
    p = _path("a", "b", a, b, noise=0.0)
    lam, gaps = barrier_items(p["lambdas"], p["reward_items"])
    assert max(abs(g) for g in gaps) < 1e-9
    m, lo, hi = mean_ci(gaps)
    assert versus(lo, hi, 1.0) == FAILS  # an interval at 0, below any positive effect line


def test_known_dip_is_found_where_it_is():
    rng = random.Random(0)
    a = [rng.uniform(-60, -10) for _ in range(50)]  # a huge item spread that pairing removes
    p = _path("a", "b", a, [x + 5 for x in a], dip=3.0, noise=1.0)
    lam, gaps = barrier_items(p["lambdas"], p["reward_items"])
    m, lo, hi = mean_ci(gaps)
    assert lam == 0.5 and lo < 3.0 < hi and hi - lo < 1.5
    assert versus(lo, hi, 1.0) == HOLDS and versus(lo, hi, 6.0) == FAILS
    unpaired = mean_ci(p["reward_items"][2])  # the midpoint's own interval is ~10× wider than the barrier's
    assert unpaired[2] - unpaired[1] > 5 * (hi - lo)


def test_interval_straddling_the_threshold_is_inconclusive():
    rng = random.Random(0)
    a = [rng.uniform(-60, -10) for _ in range(20)]
    p = _path("a", "b", a, a, dip=2.0, noise=3.0)
    _, gaps = barrier_items(p["lambdas"], p["reward_items"])
    m, lo, hi = mean_ci(gaps)
    assert lo < 2.0 < hi and versus(lo, hi, 2.0) == UNSURE
    assert versus(float("nan"), float("nan"), 1.0) == UNSURE
    # in the study: a cross-method dip as large as 10% of the gain (40 → 4) with noisy items
    assert _verdicts(cross_dip=4.0, path_noise=3.0, alternate=True)["barrier_between_solutions"] == UNSURE


def test_barrier_items_needs_the_same_items_at_every_point():
    with pytest.raises(AnalysisError, match="same items"):
        barrier_items([0.0, 0.5, 1.0], [[1.0, 2.0], [1.0], [1.0, 2.0]])


def test_paired_reward_comparison():
    assert _verdicts(es_gain=40.0, gr_gain=38.0)["comparable_reward"] == HOLDS  # 2 < 10% of the gain
    assert _verdicts(es_gain=40.0, gr_gain=30.0)["comparable_reward"] == FAILS  # 10 > 4
    assert _verdicts(es_gain=40.0, gr_gain=36.5)["comparable_reward"] == UNSURE  # 3.5 ± ~1 straddles 4
    s, methods, base = _summary()
    for m in ES + GR:
        del s["rewards"][m]["t"]["item_rewards"]
    row = findings(s, methods, base)[0]
    assert row["verdict"] == HOLDS and "seed-level interval only" in row["measured"]


# -- the new claims, each on constructed data --------------------------------------------------------
def test_seed_agreement_identical_vs_independent_seeds():
    assert _verdicts()["es_seeds_agree_more"] == HOLDS  # ES identical, GRPO independent, GRPO shares its head
    assert _verdicts(es_head=0.1, gr_head=None)["es_seeds_agree_more"] == FAILS  # no unembedding exception
    assert _verdicts(es_spread=None)["es_seeds_agree_more"] == UNSURE  # both independent: interval straddles 0
    assert _verdicts(es_spread=None, gr_spread=0.1)["es_seeds_agree_more"] == FAILS
    s, methods, base = _summary()
    s["cosine"]["modules"] = {"embeddings": s["cosine"]["modules"].pop("lm_head")}  # tied: the embedding unembeds
    assert {r["key"]: r["verdict"] for r in findings(s, methods, base)}["es_seeds_agree_more"] == HOLDS


def test_grpo_unembedding_correlation():
    assert _verdicts()["grpo_unembedding_correlates"] == HOLDS
    assert _verdicts(gr_spread=0.1)["grpo_unembedding_correlates"] == FAILS  # every layer as correlated as the head
    assert _verdicts(gr_head=None)["grpo_unembedding_correlates"] == UNSURE  # independent everywhere: no correlation


def test_path_shape():
    assert _verdicts()["path_shape"] == HOLDS
    assert _verdicts(gr_shape=lambda lam: lam)["path_shape"] == FAILS  # both rise smoothly
    assert _verdicts(es_gain=0.0, gr_gain=0.0)["path_shape"] == UNSURE  # nothing learned: no shape to judge


def test_same_basin():
    assert _verdicts()["same_basin"] == HOLDS
    assert _verdicts(same_dip=10.0)["same_basin"] == FAILS
    assert _verdicts(cross_dip=0.0)["same_basin"] == FAILS
    # every same-method dip exactly at the 10%-of-gain line (≈ 4.0), ± 3 per item: each interval straddles it
    assert _verdicts(same_dip=4.0, path_noise=3.0, alternate=True)["same_basin"] == UNSURE


def test_robustness_claim():
    assert _verdicts()["grpo_more_robust"] == HOLDS
    assert _verdicts(es_deg=0.2, gr_deg=2.0)["grpo_more_robust"] == FAILS
    assert _verdicts(es_big_gain=-1.0)["grpo_more_robust"] == UNSURE  # GRPO more robust, but ES never gains


def test_passk_claim():
    s, methods, base = _summary()
    row = {r["key"]: r for r in findings(s, methods, base)}["temperature_beats_perturbation"]
    assert row["verdict"] == UNSURE and "not measured" in row["measured"]
    v = _verdicts(passk=_passk([0] * 20, [0] * 20))
    assert v["temperature_beats_perturbation"] == UNSURE
    s, methods, base = _summary(passk=_passk([0] * 20, [0] * 20))
    assert "nothing solved" in findings(s, methods, base)[11]["measured"]
    same = [1, 0, 2, 0, 3] * 8
    assert _verdicts(passk=_passk(same, same))["temperature_beats_perturbation"] == UNSURE


def test_hacking_counts_only_what_training_added_over_the_base():
    s, methods, base = _summary(es_hack=0.4, gr_hack=0.1)
    assert findings(s, methods, base)[5]["verdict"] == FAILS  # ES 0.41 vs GRPO 0.11, no base row
    s["hacking"].append({"model": "base", "source": "compare eval (t)", "hack_empty": 0.45, "reason": ""})
    s["hacking"].append({"model": "base", "source": "run eval (step 3)", "hack_empty": 0.0, "reason": ""})
    row = findings(s, methods, base)[5]
    assert row["verdict"] == UNSURE and "nothing above the base" in row["measured"]  # both at or below the base
    s["hacking"].append({"model": "grpo1", "source": "compare eval (t)", "hack_correct_lost": 0.3, "reason": ""})
    row = findings(s, methods, base)[5]
    assert row["verdict"] == UNSURE  # one GRPO seed of three: 0.1 ± 0.1 is within 2·SE of ES's 0
    for m, x in (("grpo0", 0.28), ("grpo2", 0.31)):
        s["hacking"].append({"model": m, "source": "compare eval (t)", "hack_correct_lost": x, "reason": ""})
    row = findings(s, methods, base)[5]
    assert row["verdict"] == HOLDS and "correct_lost" in row["measured"]


def test_missing_data_is_inconclusive():
    rows = findings({"primary_task": "t"}, {"a": "es", "b": "grpo"}, None)
    assert all(r["verdict"] == (NOT_RUN if r["key"] == "es_sampling_gradient_update" else UNSURE) for r in rows)


def test_study_config_needs_a_budget(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("name: x\n")
    with pytest.raises(ConfigError, match="budget"):
        load_study(p)
    p.write_text("name: x\nbudget: {completions: 10}\nseeds: [0, 1]\n")
    cfg = load_study(p)
    assert isinstance(cfg, StudyConfig)
    rc = cfg.run_config("grpo", 1)
    assert rc.method == "grpo" and rc.seed == 1 and rc.budget.completions == 10
    assert rc.run_dir.endswith("runs/grpo_seed1")


def test_shipped_study_configs_validate():
    for name in ("conciseness-smollm2", "countdown-qwen"):
        cfg = load_study(f"studies/{name}.yaml")
        assert cfg.run_config("es", cfg.seeds[0]).budget == cfg.run_config("grpo", cfg.seeds[0]).budget


def test_study_end_to_end_on_tiny_models(tiny_model, tmp_path):
    """Both methods train at the same budget, compare runs, the report opens with findings first."""
    import json

    from evotune.config import build_config
    from evotune.study import run_study

    cfg = build_config(None, {
        "name": "tiny", "out": str(tmp_path / "study"), "seeds": [0, 1], "threads": 1, "jobs": 2,
        "model.name": str(tiny_model), "task.name": "toy_letters",
        "generation.max_new_tokens": 4, "eval.every": 0, "eval.limit": 4,
        "budget.completions": 16,
        "es.population": 4, "es.sigma": 0.05, "es.alpha": 0.02, "es.prompts_per_iteration": 2,
        "grpo.num_generations": 4, "grpo.prompts_per_step": 2, "grpo.learning_rate": 1e-3,
        "analysis.limit": 4, "analysis.kl_prompts": 2, "analysis.off_tasks": [], "analysis.lmc_points": 3,
        "analysis.lmc_limit": 4, "analysis.sigmas": [0.01], "analysis.trials": 1,
        "analysis.passk_n": 2, "analysis.passk_prompts": 2, "analysis.passk_select": 1,
        "analysis.passk_temperatures": [1.0], "analysis.passk_sigmas": [0.01],
    }, StudyConfig)
    res = run_study(cfg, progress=False)  # two worker processes train the six runs
    assert [r["method"] for r in res["runs"]] == ["es", "es", "grpo", "grpo", "grpo", "grpo"]  # grpo_es is a grpo run
    assert res["methods"] == {"es_seed0": "es", "es_seed1": "es", "grpo_seed0": "grpo", "grpo_seed1": "grpo",
                              "grpo_es_seed0": "grpo_es", "grpo_es_seed1": "grpo_es"}
    assert all(r["completions"] >= 16 for r in res["runs"])
    hybrid = build_config(tmp_path / "study" / "runs" / "grpo_es_seed1" / "config.yaml", None)
    assert hybrid.grpo.sampler == "es" and hybrid.method == "grpo"
    # a worker process trains exactly what a sequential, in-process run trains
    from safetensors.torch import load_file

    from evotune.checkpoints import latest_checkpoint
    from evotune.sweep import train_run

    alone = cfg.run_config("es", 1).model_copy(update={"run_dir": str(tmp_path / "alone")})
    train_run(alone, progress=False)
    a = load_file(str(latest_checkpoint(tmp_path / "alone") / "model.safetensors"))
    b = load_file(str(latest_checkpoint(tmp_path / "study" / "runs" / "es_seed1") / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    compared = json.loads((tmp_path / "study" / "report" / "compare" / "summary.json").read_text())
    assert {e["label"]: e["method"] for e in compared["entries"]}["grpo_es_seed0"] == "grpo_es"
    lmc = compared["lmc"]["pairs"]
    assert lmc and not any("grpo_es" in (p["a"] + p["b"]) for p in lmc)  # study.lmc_methods: es and grpo only
    assert len(lmc) == 4 + 6  # base→each of 4 runs, and the 6 pairs among them
    assert len(res["findings"]) == len(CLAIM_RULES)
    assert all(r["verdict"] in (HOLDS, FAILS, UNSURE, NOT_RUN) for r in res["findings"])
    by_key = {r["key"]: r for r in res["findings"]}
    assert by_key["temperature_beats_perturbation"]["measured"].startswith("pass@2 T=1")
    assert "paired barrier" in by_key["barrier_between_solutions"]["measured"]
    assert by_key["comparable_reward"]["verdict"] == UNSURE  # two seeds per method are not enough
    passk = tmp_path / "study" / "report" / "passk.json"
    stamp = passk.stat().st_mtime_ns
    html = (tmp_path / "study" / "report" / "index.html").read_text()
    assert html.index("Findings") < html.index("Update geometry")
    assert json.loads((tmp_path / "study" / "report" / "study.json").read_text())["findings"]
    again = run_study(cfg, progress=False)  # finished runs are skipped, not retrained
    assert [r["steps"] for r in again["runs"]] == [r["steps"] for r in res["runs"]]
    assert passk.stat().st_mtime_ns == stamp and again["findings"] == res["findings"]  # pass@k reused, same verdicts
    judged = run_study(cfg, progress=False, reuse_compare=True)  # verdicts from the saved comparison
    assert judged["findings"] == again["findings"]
    cfg_other = cfg.model_copy(update={"out": str(tmp_path / "elsewhere")})
    with pytest.raises(ConfigError, match="no comparison"):
        run_study(cfg_other, progress=False, reuse_compare=True)
    assert not (tmp_path / "elsewhere").exists()  # refused before any training
