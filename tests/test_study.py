"""Study verdicts are computed from numbers by the stated rules (synthetic compare summaries)."""

from __future__ import annotations

import pytest

from evotune.errors import ConfigError
from evotune.study import FAILS, HOLDS, UNSURE, StudyConfig, findings, findings_html, load_study


def _summary(es_r, gr_r, cos_layer, es_norm, gr_norm, es_kl, gr_kl, barrier, es_hack, gr_hack):
    es, gr = ["es0", "es1"], ["grpo0", "grpo1"]
    labels = es + gr
    rewards = {m: {"t": {"reward_mean": r, "reward_std": 1.0, "n": 100}} for m, r in zip(labels, es_r + gr_r, strict=True)}
    mat = [[1.0 if i == j else cos_layer for j in range(4)] for i in range(4)]
    return {
        "primary_task": "t",
        "rewards": rewards,
        "cosine": {"models": labels, "layers": {"0": mat, "1": mat}},
        "update_norms": {"total": {m: {"delta_norm": n} for m, n in zip(labels, es_norm + gr_norm, strict=True)}},
        "reward_kl": [{"model": m, "off_task_kl": k} for m, k in zip(labels, es_kl + gr_kl, strict=True)],
        "lmc": {"pairs": [{"a": a, "b": b, "barrier_reward": {"height": barrier}} for a in es for b in gr]},
        "hacking": [{"model": m, "source": "compare eval (t)", "hack_empty": h, "reason": ""}
                    for m, h in zip(labels, es_hack + gr_hack, strict=True)],
    }, {m: ("es" if m.startswith("es") else "grpo") for m in labels}


def test_all_claims_hold_on_a_constructed_case():
    s, methods = _summary([-10.0, -10.2], [-10.1, -10.05], 0.01, [10.0, 11.0], [1.0, 1.2],
                          [0.5, 0.52], [0.1, 0.11], 5.0, [0.0, 0.0], [0.4, 0.5])
    rows = findings(s, methods, base_reward=-50.0)
    assert [r["verdict"] for r in rows] == [HOLDS] * 6
    assert "ES" in rows[0]["measured"] and findings_html(rows, "completions=1").count("<tr>") == 7


def test_all_claims_fail_on_the_opposite_case():
    s, methods = _summary([-40.0, -40.1], [-10.0, -10.1], 0.9, [1.0, 1.0], [2.0, 2.0],
                          [0.1, 0.1], [0.5, 0.52], 0.0, [0.6, 0.6], [0.0, 0.0])
    rows = findings(s, methods, base_reward=-50.0)
    assert [r["verdict"] for r in rows] == [FAILS] * 6


def test_hacking_counts_only_what_training_added_over_the_base():
    s, methods = _summary([-10.0, -10.2], [-10.1, -10.05], 0.01, [10.0, 11.0], [1.0, 1.2],
                          [0.5, 0.52], [0.1, 0.11], 5.0, [0.4, 0.42], [0.1, 0.1])
    assert findings(s, methods, base_reward=-50.0)[5]["verdict"] == FAILS  # ES 0.41 vs GRPO 0.1, no base row
    s["hacking"].append({"model": "base", "source": "compare eval (t)", "hack_empty": 0.45, "reason": ""})
    s["hacking"].append({"model": "base", "source": "run eval (step 3)", "hack_empty": 0.0, "reason": ""})
    row = findings(s, methods, base_reward=-50.0)[5]
    assert row["verdict"] == UNSURE and "nothing above the base" in row["measured"]  # both at or below the base
    s["hacking"].append({"model": "grpo1", "source": "compare eval (t)", "hack_correct_lost": 0.3, "reason": ""})
    row = findings(s, methods, base_reward=-50.0)[5]
    assert row["verdict"] == UNSURE  # one GRPO seed of two: 0.15 ± 0.15 is within 2·SE of ES's 0
    s["hacking"].append({"model": "grpo0", "source": "compare eval (t)", "hack_correct_lost": 0.28, "reason": ""})
    row = findings(s, methods, base_reward=-50.0)[5]
    assert row["verdict"] == HOLDS and "correct_lost" in row["measured"]


def test_missing_data_is_inconclusive():
    rows = findings({"primary_task": "t"}, {"a": "es", "b": "grpo"}, None)
    assert all(r["verdict"] == UNSURE for r in rows)


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
        "name": "tiny", "out": str(tmp_path / "study"), "seeds": [0, 1], "threads": 1,
        "model.name": str(tiny_model), "task.name": "toy_letters",
        "generation.max_new_tokens": 4, "eval.every": 0, "eval.limit": 4,
        "budget.completions": 16,
        "es.population": 4, "es.sigma": 0.05, "es.alpha": 0.02, "es.prompts_per_iteration": 2,
        "grpo.num_generations": 4, "grpo.prompts_per_step": 2, "grpo.learning_rate": 1e-3,
        "analysis.limit": 4, "analysis.kl_prompts": 2, "analysis.off_tasks": [], "analysis.lmc_points": 3,
        "analysis.lmc_limit": 4, "analysis.sigmas": [0.01], "analysis.trials": 1,
    }, StudyConfig)
    res = run_study(cfg, progress=False)
    assert [r["method"] for r in res["runs"]] == ["es", "es", "grpo", "grpo"]
    assert all(r["completions"] >= 16 for r in res["runs"])
    assert len(res["findings"]) == 6 and all(r["verdict"] in (HOLDS, FAILS, UNSURE) for r in res["findings"])
    html = (tmp_path / "study" / "report" / "index.html").read_text()
    assert html.index("Findings") < html.index("Update geometry")
    assert json.loads((tmp_path / "study" / "report" / "study.json").read_text())["findings"]
    again = run_study(cfg, progress=False)  # finished runs are skipped, not retrained
    assert [r["steps"] for r in again["runs"]] == [r["steps"] for r in res["runs"]]
    judged = run_study(cfg, progress=False, reuse_compare=True)  # verdicts from the saved comparison
    assert judged["findings"] == again["findings"]
    cfg_other = cfg.model_copy(update={"out": str(tmp_path / "elsewhere")})
    with pytest.raises(ConfigError, match="no comparison"):
        run_study(cfg_other, progress=False, reuse_compare=True)
    assert not (tmp_path / "elsewhere").exists()  # refused before any training
