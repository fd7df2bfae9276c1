"""Analyses on constructions with known answers, and an end-to-end `compare` report on tiny models."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from evotune.analysis.delta import delta_stats, layer_index, module_type
from evotune.analysis.kl import ESTIMATORS, kl_on_prompts, source_prompts, token_kl_terms
from evotune.analysis.lmc import barrier, lmc
from evotune.analysis.robustness import robustness_on, select_targets
from evotune.analysis.settings import RobustnessSettings
from evotune.backends.models import load_model
from evotune.report.plots import write_delta_plots
from evotune.stats import barrier_items, ratio_mean_se
from evotune.tasks import get_task

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models gain nothing from threads, and on a shared machine idle-waiting threads slow
    every small op down by orders of magnitude; restore the setting afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _variant(src: Path, dst: Path, edit) -> Path:
    """Copy a model directory and rewrite its weights with `edit(state_dict) -> state_dict`."""
    shutil.copytree(src, dst)
    f = dst / "model.safetensors"
    save_file(edit(load_file(str(f))), str(f), metadata={"format": "pt"})
    return dst


@pytest.fixture(scope="module")
def models(tiny_model, tmp_path_factory):
    """Base, A = base + Δ, B = base + 2Δ, C = base + Δ' on tensors Δ does not touch, and an untied head."""
    root = tmp_path_factory.mktemp("analysis")
    base = load_file(str(tiny_model / "model.safetensors"))
    g = torch.Generator().manual_seed(1)
    delta = {k: torch.randn(v.shape, generator=g) * 0.01 for k, v in base.items()}
    half = {k for k in base if layer_index(k) == 0}
    a = _variant(
        tiny_model, root / "a", lambda sd: {k: v + delta[k] if k in half else v for k, v in sd.items()}
    )
    b = _variant(
        tiny_model, root / "b", lambda sd: {k: v + 2 * delta[k] if k in half else v for k, v in sd.items()}
    )
    c = _variant(
        tiny_model, root / "c", lambda sd: {k: v + delta[k] if k not in half else v for k, v in sd.items()}
    )
    head = delta["model.embed_tokens.weight"]

    def untie(sd):
        return {**sd, "lm_head.weight": sd["model.embed_tokens.weight"] + head}

    u = _variant(tiny_model, root / "untied", untie)
    return {"base": tiny_model, "a": a, "b": b, "c": c, "untied": u, "root": root, "head": head, "emb": base}


# -- KL ------------------------------------------------------------------------------------------
def test_exact_kl_and_estimators_match_hand_computation():
    pa, pb = torch.tensor([0.5, 0.3, 0.2]), torch.tensor([0.2, 0.5, 0.3])
    la, lb = pa.log() + 3.0, pb.log() - 1.0  # unnormalised logits: softmax must normalise them
    t = token_kl_terms(la.repeat(3, 1), lb.repeat(3, 1), torch.tensor([0, 1, 2]))
    exact = 0.5 * math.log(0.5 / 0.2) + 0.3 * math.log(0.3 / 0.5) + 0.2 * math.log(0.2 / 0.3)
    assert t["exact"].tolist() == pytest.approx([exact] * 3, abs=1e-6)
    r = (pb / pa).double()
    assert t["k1"].tolist() == pytest.approx((-r.log()).tolist(), abs=1e-6)
    assert t["k2"].tolist() == pytest.approx((0.5 * r.log() ** 2).tolist(), abs=1e-6)
    assert t["k3"].tolist() == pytest.approx((r - 1 - r.log()).tolist(), abs=1e-6)
    # k1 and k3 are unbiased: their expectation under π_A is the exact KL.
    for k in ("k1", "k3"):
        assert float((pa.double() * t[k]).sum()) == pytest.approx(exact, abs=1e-6)


def test_k3_k2_nonnegative_on_random_logits():
    g = torch.Generator().manual_seed(0)
    la, lb = torch.randn(200, 50, generator=g) * 3, torch.randn(200, 50, generator=g) * 3
    t = token_kl_terms(la, lb, torch.randint(0, 50, (200,), generator=g))
    assert (t["k3"] >= 0).all() and (t["k2"] >= 0).all() and (t["exact"] >= -1e-6).all()


def test_exact_kl_and_k1_of_nearly_identical_models_have_no_fp32_floor():
    """KL of two models a 1e-4 logit jitter apart is ~4e-9 nats; fp32 read it as ~1e-7 with negative positions.

    Reference: with δ = logits_b − logits_a and p = softmax(logits_a), KL = log E_p[e^δ] − E_p[δ]
    = log1p(E_p[expm1(δ − E_p δ)]) and k1(x) = −(δ_x − E_p δ) + KL, free of cancellation in float64.
    """
    g = torch.Generator().manual_seed(3)
    n, v = 24, 49152  # SmolLM2's vocabulary
    la = torch.randn(n, v, generator=g) * 4
    lb = la + torch.randn(n, v, generator=g) * 1e-4
    tok = torch.randint(0, v, (n,), generator=g)
    t = token_kl_terms(la, lb, tok)
    p = torch.softmax(la.double(), -1)
    d = lb.double() - la.double()
    m = (p * d).sum(-1)
    kl = torch.log1p((p * torch.expm1(d - m[:, None])).sum(-1))
    k1 = -(d.gather(-1, tok.view(-1, 1)).squeeze(-1) - m) + kl
    assert float(kl.min()) > 1e-9 and float(kl.max()) < 1e-7
    assert (t["exact"] > 0).all()
    assert torch.allclose(t["exact"], kl, rtol=0, atol=1e-13)  # fp32: 4e-7 off, means −3e-8 for a true 4e-9
    assert torch.allclose(t["k1"], k1, rtol=0, atol=1e-12)
    assert torch.equal(token_kl_terms(la, la.clone(), tok)["exact"], torch.zeros(n, dtype=torch.float64))


def test_k3_is_trls_per_token_kl():
    """TRL's GRPO loss writes per_token_kl = exp(ref − logp) − (ref − logp) − 1 (ref: the reference model's
    log-probs, logp: the policy's); with π_A the policy and π_B the reference that is evotune's k3."""
    g = torch.Generator().manual_seed(4)
    la, lb = torch.randn(50, 40, generator=g) * 2, torch.randn(50, 40, generator=g) * 2
    tok = torch.randint(0, 40, (50,), generator=g)
    logp = torch.log_softmax(la.double(), -1).gather(-1, tok.view(-1, 1)).squeeze(-1)
    ref = torch.log_softmax(lb.double(), -1).gather(-1, tok.view(-1, 1)).squeeze(-1)
    trl_k3 = torch.exp(ref - logp) - (ref - logp) - 1
    assert torch.allclose(token_kl_terms(la, lb, tok)["k3"], trl_k3, rtol=1e-12, atol=1e-15)


def test_ratio_mean_se_is_per_token_and_clustered():
    mean, se = ratio_mean_se([2.0, 4.0], [2, 2])
    assert mean == pytest.approx(1.5)
    assert se == pytest.approx(0.5)  # residuals ±1 over 4 tokens, m/(m−1) = 2
    assert math.isnan(ratio_mean_se([1.0], [3])[1])


def test_kl_of_a_model_with_itself_is_zero_and_positive_otherwise(models):
    m1, tok = load_model(str(models["base"]))
    m2, _ = load_model(str(models["base"]))
    ma, _ = load_model(str(models["a"]))
    prompts = source_prompts(get_task("toy_letters"), tok, 3) + source_prompts("general", tok, 2)
    same = kl_on_prompts(m1, m2, tok, prompts, max_new_tokens=6, seed=3)
    assert same.n_seqs == 5 and same.n_tokens >= 5
    for k in ESTIMATORS:
        assert same.per_token[k][0] == pytest.approx(0.0, abs=1e-9)
    diff = kl_on_prompts(ma, m1, tok, prompts, max_new_tokens=6, seed=3)
    assert diff.per_token["exact"][0] > 0 and diff.per_token["k3"][0] > 0


# -- update geometry -------------------------------------------------------------------------------
def test_delta_scaled_update_has_cosine_one_and_norm_ratio_two(models):
    r = delta_stats([str(models["a"]), str(models["b"]), str(models["c"])], str(models["base"]))
    assert r["models"] == ["a", "b", "c"]
    assert r["tied_lm_head"] is True and "lm_head" not in r["modules"]
    tot = r["total"]
    assert tot["cosine"][0][1] == pytest.approx(1.0, abs=1e-6)
    assert tot["delta_norm"][1] / tot["delta_norm"][0] == pytest.approx(2.0, rel=1e-6)
    assert tot["rel_norm"][1] == pytest.approx(tot["delta_norm"][1] / tot["base_norm"])
    # C moves only tensors A and B leave alone: orthogonal updates.
    assert tot["cosine"][0][2] == pytest.approx(0.0, abs=1e-9)
    assert tot["cosine"][1][2] == pytest.approx(0.0, abs=1e-9)
    assert r["layers"]["0"]["cosine"][0][1] == pytest.approx(1.0, abs=1e-6)
    assert r["layers"]["1"]["delta_norm"][0] == 0.0 and r["layers"]["1"]["delta_norm"][2] > 0
    assert set(r["modules"]) >= {"attention", "mlp", "norms", "embeddings"}
    pngs = write_delta_plots(r, models["root"] / "plots")
    assert set(pngs) >= {"layers", "modules", "cosine", "layer_cosine"}
    assert all(p.read_bytes().startswith(PNG) for p in pngs.values())


def test_delta_untied_head_against_tied_base(models):
    r = delta_stats([str(models["untied"])], str(models["base"]))
    head = r["modules"]["lm_head"]
    emb = models["emb"]["model.embed_tokens.weight"]
    assert head["delta_norm"][0] == pytest.approx(float(models["head"].double().norm()), rel=1e-5)
    assert head["base_norm"] == pytest.approx(float(emb.double().norm()), rel=1e-5)
    assert r["modules"]["embeddings"]["delta_norm"][0] == 0.0


def test_module_and_layer_names():
    assert module_type("model.layers.3.self_attn.q_proj.weight") == "attention"
    assert module_type("model.layers.3.mlp.down_proj.weight") == "mlp"
    assert module_type("model.layers.3.input_layernorm.weight") == "norms"
    assert module_type("model.norm.weight") == "norms"
    assert module_type("model.embed_tokens.weight") == "embeddings"
    assert module_type("lm_head.weight") == "lm_head"
    assert (
        layer_index("model.layers.12.mlp.up_proj.weight") == 12 and layer_index("model.norm.weight") is None
    )


# -- mode connectivity -----------------------------------------------------------------------------
def test_barrier_of_a_known_dip():
    assert barrier([0.0, 0.5, 1.0], [1.0, 0.2, 0.8]) == (pytest.approx(0.7), 0.5)
    assert barrier([0.0, 0.5, 1.0], [1.0, 2.0, 0.0]) == (0.0, 0.0)


def test_identical_endpoints_give_a_flat_path_and_zero_barrier(models):
    r = lmc(str(models["a"]), str(models["a"]), "toy_letters", points=3, limit=3)
    (p,) = r["pairs"]
    assert p["lambdas"] == [0.0, 0.5, 1.0]
    assert len(set(p["reward"])) == 1 and len(set(p["accuracy"])) == 1
    assert p["barrier_reward"]["height"] == 0.0 and p["barrier_accuracy"]["height"] == 0.0
    # per-item rewards at every λ, the same items: the paired barrier of a flat path is exactly 0
    assert len(p["reward_items"]) == 3 and all(len(r) == 3 for r in p["reward_items"])
    assert all(sum(r) / len(r) == pytest.approx(m) for r, m in zip(p["reward_items"], p["reward"], strict=True))
    assert barrier_items(p["lambdas"], p["reward_items"])[1] == [0.0, 0.0, 0.0]


# -- robustness ------------------------------------------------------------------------------------
def test_robustness_sigma_zero_no_degradation_and_exact_restore(models):
    model, tok = load_model(str(models["a"]))
    before = {n: t.clone() for n, t in model.state_dict().items()}
    targets, aliases = select_targets(model, ["lm_head*"])
    assert [n for n, _ in targets] == ["model.embed_tokens.weight"]
    assert aliases == {"lm_head.weight": "model.embed_tokens.weight"}
    r = robustness_on(model, tok, "toy_letters", RobustnessSettings(sigmas=(0.0, 0.5), trials=2, params=("*",), limit=3))
    zero, big = r["curves"]
    assert zero["degradation_mean"] == 0.0 and zero["degradation_std"] == 0.0
    assert zero["reward"] == [r["baseline"]["reward"]] * 2
    assert big["reward"] != zero["reward"]  # σ=0.5 on every weight does change the outputs
    assert r["restored"] is True
    after = model.state_dict()
    assert all(torch.equal(before[n], after[n]) for n in before)


# -- CLI and report --------------------------------------------------------------------------------
def _fake_run(models, name: str, weights: Path) -> Path:
    """A run directory as the trainers write it: config, metrics with an eval row, one checkpoint."""
    from evotune.config import build_config

    run = models["root"] / name
    cfg = build_config(
        None, {"run_dir": str(run), "model.name": str(models["base"]), "task.name": "toy_letters"}
    )
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(cfg.to_yaml())
    ck = run / "checkpoints" / "iter_000002"
    shutil.copytree(weights, ck)
    (ck / "evotune_state.json").write_text(json.dumps({"iteration": 2}))
    row = {
        "step": 2,
        "eval/reward_mean": 0.1,
        "eval/hacking": 1.0,
        "eval/hack_empty": 0.5,
        "eval/hacking_reason": "empty 50% > 20%",
    }
    (run / "metrics.jsonl").write_text(json.dumps(row) + "\n")
    return run


def test_cli_delta_writes_json(models, tmp_path):
    from typer.testing import CliRunner

    from evotune.cli.main import app

    out = tmp_path / "delta.json"
    res = CliRunner().invoke(
        app,
        [
            "analyze",
            "delta",
            "--base",
            str(models["base"]),
            "--models",
            f"{models['a']},{models['b']}",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    d = json.loads(out.read_text())
    assert d["total"]["cosine"][0][1] == pytest.approx(1.0, abs=1e-6)


def test_cli_kl_lmc_robustness_write_json(models, tmp_path):
    from typer.testing import CliRunner

    from evotune.cli.main import app

    run = _fake_run(models, "run_cli", models["a"])
    r = CliRunner()
    res = r.invoke(
        app,
        [
            "analyze",
            "kl",
            "--model",
            str(run),
            "--n-prompts",
            "2",
            "--max-new-tokens",
            "3",
            "--out",
            str(tmp_path / "kl.json"),
        ],
    )
    assert res.exit_code == 0, res.output
    kl = json.loads((tmp_path / "kl.json").read_text())
    assert kl["sources"] == ["toy_letters", "general"] and kl["on_task"] == {"run_cli": "toy_letters"}
    assert kl["cells"]["general"]["run_cli"]["n_seqs"] == 2
    res = r.invoke(
        app,
        [
            "analyze",
            "lmc",
            "--a",
            str(run),
            "--b",
            str(models["b"]),
            "--points",
            "2",
            "--limit",
            "2",
            "--max-new-tokens",
            "3",
            "--out",
            str(tmp_path / "lmc.json"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert [p["name"] for p in json.loads((tmp_path / "lmc.json").read_text())["pairs"]] == ["A→B"]
    res = r.invoke(
        app,
        [
            "analyze",
            "robustness",
            "--model",
            str(run),
            "--sigmas",
            "0.001",
            "--trials",
            "1",
            "--params",
            "lm_head*",
            "--limit",
            "2",
            "--max-new-tokens",
            "3",
            "--out",
            str(tmp_path / "rob.json"),
        ],
    )
    assert res.exit_code == 0, res.output
    rob = json.loads((tmp_path / "rob.json").read_text())
    assert rob["task"] == "toy_letters" and rob["tied_aliases"] == {
        "lm_head.weight": "model.embed_tokens.weight"
    }
    res = r.invoke(
        app, ["analyze", "robustness", "--model", str(models["a"]), "--task", "toy_letters", "--params", "x*"]
    )
    assert res.exit_code == 2 and "no parameters match" in res.output


def test_compare_end_to_end_writes_a_self_contained_report(models, tmp_path):
    from typer.testing import CliRunner

    from evotune.cli.main import app

    run = _fake_run(models, "run_es", models["a"])
    out = tmp_path / "report"
    args = [
        "compare",
        str(run),
        str(models["b"]),
        "--out",
        str(out),
        "--limit",
        "2",
        "--kl-prompts",
        "2",
        "--max-new-tokens",
        "4",
        "--points",
        "3",
        "--sigmas",
        "0,0.01",
        "--trials",
        "1",
        "--samples",
        "2",
        "--no-robust-base",
    ]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    s = json.loads((out / "summary.json").read_text())
    for key in (
        "rewards",
        "reward_kl",
        "kl",
        "update_norms",
        "cosine",
        "lmc",
        "robustness",
        "hacking",
        "samples",
    ):
        assert s.get(key), key
    assert s["errors"] == {} and s["complete"] is True
    assert s["models"] == ["run_es", "b"] and s["base"]["spec"] == str(
        models["base"]
    )  # base from the run config
    assert s["primary_task"] == "toy_letters" and s["kl"]["on_task"]["run_es"] == "toy_letters"
    assert s["cosine"]["total"][0][1] == pytest.approx(1.0, abs=1e-6)
    names = [p["name"] for p in s["lmc"]["pairs"]]
    assert names == ["base→run_es", "base→b", "run_es→b"]
    # B = base + 2Δ and A = base + Δ: the midpoint of base→B is A exactly (same greedy reward).
    mid = s["lmc"]["pairs"][1]["reward"][1]
    assert mid == pytest.approx(s["lmc"]["pairs"][0]["reward"][2], abs=1e-9)
    # ... item by item too, and endpoints reuse the evaluation's per-item rewards (paired statistics)
    assert s["lmc"]["pairs"][1]["reward_items"][1] == pytest.approx(s["lmc"]["pairs"][0]["reward_items"][2])
    assert s["lmc"]["pairs"][0]["reward_items"][0] == s["rewards"]["base"]["toy_letters"]["item_rewards"]
    assert s["robustness"]["run_es"]["curves"][0]["degradation_mean"] == 0.0
    assert any(r["source"].startswith("run eval") and r["hacking"] == 1.0 for r in s["hacking"])
    lost = {r["model"]: r["hack_correct_lost"] for r in s["hacking"] if r["source"].startswith("compare eval")}
    assert lost["base"] is None  # the reference itself
    assert all(0.0 <= lost[m] <= 1.0 for m in ("run_es", "b"))
    page = (out / "index.html").read_text()
    for sid in ("overview", "rewards", "reward-kl", "kl", "delta", "lmc", "robustness", "hacking", "samples"):
        assert f'id="{sid}"' in page
    assert page.count("data:image/png;base64,") >= 6
    assert "<script" not in page and "http://" not in page and "https://" not in page


def test_correct_lost_flags_reward_gained_at_the_tasks_expense():
    from evotune.evaluation.hacking import correct_lost, hacking_rates

    def row(i, reward, correct, text="Tokyo"):
        return {"id": f"q{i}", "reward": reward, "correct": correct, "completion": text, "truncated": False}

    base = [row(0, -20, True), row(1, -20, True), row(2, -20, False), row(3, -5, True)]
    now = [
        row(0, -1, False, "Japan"),  # reward up, answer lost: counted
        row(1, -1, True),  # reward up, still right: fine
        row(2, -1, False),  # was already wrong: not a loss
        row(3, -9, False),  # lost, but the reward fell too: a plain regression, not hacking
        row(9, 0, False),  # not in the base: ignored
    ]
    assert correct_lost(now, base) == 1 / 4
    rates = hacking_rates(now, base)
    assert rates["hack_correct_lost"] == 0.25 and rates["hacking"] == 1.0 and "correct_lost 25%" in rates["hacking_reason"]
    assert "hack_correct_lost" not in hacking_rates(now)
    assert correct_lost(now, [row(7, 0, True)]) is None
    assert hacking_rates(base, base)["hack_correct_lost"] == 0.0


def test_compare_limits_per_task_and_robustness_subset(models, tmp_path):
    """Off-tasks get `off_limit` items, robustness its own item count and only the chosen models; per-item
    correctness travels with per-item rewards (the study's evidence needs both)."""
    from evotune.comparison import CompareConfig, compare

    run = _fake_run(models, "run_lim", models["a"])
    cfg = CompareConfig(
        tasks=["toy_letters", "boolq"], out_dir=str(tmp_path / "rep"), limit=3, off_limit=2, kl_prompts=1,
        max_new_tokens=3, lmc_points=2, sigmas=[0.01], trials=2, robust_limit=1, robust_models=["run_lim"],
        robust_base=False, skip=["kl", "lmc"],
    )
    s = compare([str(run), str(models["b"])], cfg)
    ev = s["evaluation"]["run_lim"]
    assert len(ev["toy_letters"]["item_rewards"]) == 3 and len(ev["boolq"]["item_rewards"]) == 2
    assert len(ev["boolq"]["item_correct"]) == 2 and all(isinstance(x, bool) for x in ev["boolq"]["item_correct"])
    assert set(s["robustness"]) == {"run_lim"}
    assert len(s["robustness"]["run_lim"]["curves"][-1]["reward"]) == 2  # trials
    assert s["settings"]["robust_limit"] == 1 and s["settings"]["off_limit"] == 2
