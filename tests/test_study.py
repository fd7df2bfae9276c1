"""Study verdicts come from the evidence file by the stated rules: constructed evidence with known answers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from evotune.errors import ConfigError
from evotune.stats import FAILS, HOLDS, NOT_INFORMATIVE, NOT_RUN, NOT_TESTABLE, UNDERPOWERED, UNSURE, VERDICTS
from evotune.study import CLAIM_RULES, StudyConfig, findings, load_study, rejudge
from evotune.study.claims import TITLES
from study_evidence import make_evidence


def verdicts(**kw) -> dict[str, str]:
    return {r["key"]: r["verdict"] for r in findings(make_evidence(**kw))}


def test_every_claim_has_a_rule_and_a_title():
    rows = findings(make_evidence())
    assert list(CLAIM_RULES) == list(TITLES)
    # check R appears only when the study trains randopt (test_check_r_...)
    assert [r["key"] for r in rows] == [k for k in CLAIM_RULES if k != "es_beats_selection"]
    assert all(r["verdict"] in VERDICTS for r in rows)
    assert findings(make_evidence()) == rows  # deterministic


def test_an_es_that_learns_a_shared_behaviour():
    v = verdicts()
    # an ES run and its null share a seed's noise: only swaps within a seed are allowed, 2³ = 8 arrangements
    shared = {r["key"]: r for r in findings(make_evidence())}["shared_signal"]
    assert v["es_learned"] == HOLDS and v["shared_signal"] == UNDERPOWERED
    assert "8 arrangements swapping ES and null within each seed" in shared["measured"]
    assert "5 seeds per method can" in shared["measured"]
    assert verdicts(seeds=5)["shared_signal"] == HOLDS  # 2⁵ = 32 arrangements: p = 1/32 is reachable
    assert v["comparable_reward"] == HOLDS  # equal gains, seed spread far inside ±5
    # a null ES that learned nothing hacks no more than ES does: "ES hacks less" cannot be told from "ES learned less"
    hack = {r["key"]: r for r in findings(make_evidence())}["es_hacks_less"]
    assert v["es_hacks_less"] == NOT_INFORMATIVE and "GRPO − null" in hack["measured"]
    assert "reward gain over the base ES +" in hack["measured"]
    assert v["es_drifts_more_off_task"] == HOLDS
    assert v["es_seeds_agree_more"] == HOLDS  # ES seeds share a direction, GRPO's less, not at the unembedding
    assert v["grpo_more_robust"] == HOLDS


def test_pure_noise_es_is_reported_as_not_informative():
    """An ES that learned nothing (fitness unrelated to noise): claims 2, 3 and 7 say nothing about learning."""
    noise = dict(es_gain=0.0, es_signal=0.0, es_head=0.0, es_diffusion=5.0, null_diffusion=5.0, es_behaviour=0.0,
                 es_kl=0.01, null_kl=0.01, gr_diffusion=0.2, gr_signal=0.5)
    v = verdicts(**noise)
    assert v["es_learned"] == FAILS and v["shared_signal"] != HOLDS
    assert v["orthogonal_updates"] == NOT_INFORMATIVE  # orthogonal: holds for the null too
    assert v["es_moves_further"] == NOT_INFORMATIVE  # further: a ratio of hyper-parameters
    agree = {r["key"]: r for r in findings(make_evidence(**noise))}["es_seeds_agree_more"]
    assert v["es_seeds_agree_more"] == FAILS  # ES seeds orthogonal: a refutation stands, so are the null's
    assert "a null ES does not hold either" in agree["measured"]
    row = {r["key"]: r for r in findings(make_evidence(**noise))}["es_moves_further"]
    assert "‖Δ_ES‖/‖Δ_null‖ 1.0" in row["measured"] and "closed form" in row["measured"]


def test_identical_and_independent_seeds():
    same = {r["key"]: r for r in findings(make_evidence(es_diffusion=0.0))}
    assert "within seeds 1 vs" in same["es_seeds_agree_more"]["measured"]
    indep = verdicts(es_signal=0.0, es_diffusion=1.0, es_head=0.0)
    assert indep["es_seeds_agree_more"] in (FAILS, NOT_INFORMATIVE)


def test_a_known_dip_is_found_at_its_lambda():
    rows = {r["key"]: r for r in findings(make_evidence(dip=12.0))}
    assert rows["barrier_between_solutions"]["verdict"] == HOLDS
    assert "at λ=0.5" in rows["barrier_between_solutions"]["measured"]
    # 'every pair has one' needs no correction over pairs, only over each pair's 3 interior λ
    assert "'has one': Bonferroni ×3 over λ" in rows["barrier_between_solutions"]["measured"]
    assert rows["same_basin"]["verdict"] == HOLDS
    assert verdicts(dip=12.0, same_dip=12.0)["same_basin"] == FAILS
    assert verdicts(dip=0.0)["barrier_between_solutions"] == FAILS


def test_an_underpowered_sample_is_called_so_with_the_n_needed():
    rows = {r["key"]: r for r in findings(make_evidence(dip=5.0, path_sd=60.0, n_items=40))}
    assert rows["barrier_between_solutions"]["verdict"] == UNDERPOWERED
    assert "items per point" in rows["barrier_between_solutions"]["measured"]
    two = {r["key"]: r for r in findings(make_evidence(seeds=2, es_gain=20.0, gr_gain=23.0, seed_sd=6.0))}
    assert two["comparable_reward"]["verdict"] == UNDERPOWERED
    assert "seeds per method for a half-width ≤ the margin, ~13 for 80% power" in two["comparable_reward"]["measured"]


def test_path_shape_tests_both_halves():
    assert verdicts(gr_shape="late")["path_shape"] == HOLDS
    assert verdicts(es_shape="late", gr_shape="late")["path_shape"] == FAILS  # ES's half fails
    assert verdicts()["path_shape"] == FAILS  # GRPO rises linearly: its half fails


def test_unembedding_claim():
    assert verdicts(gr_head=3.0, gr_signal=0.3, gr_diffusion=1.0)["grpo_unembedding_correlates"] == HOLDS
    assert verdicts()["grpo_unembedding_correlates"] == FAILS


def test_passk_not_testable_when_nothing_is_solved():
    rows = {r["key"]: r for r in findings(make_evidence(passk=([0] * 40, [0] * 40)))}
    assert rows["temperature_beats_perturbation"]["verdict"] == NOT_TESTABLE
    assert verdicts(passk=([8] * 40, [0] * 40))["temperature_beats_perturbation"] == HOLDS
    assert verdicts(passk=([0, 1] * 20, [8] * 40))["temperature_beats_perturbation"] == FAILS
    assert verdicts()["temperature_beats_perturbation"] == NOT_RUN


def test_sampler_claim_places_grpo_es_with_all_three_groups_uncertain():
    assert verdicts(hybrid_like="es", es_gain=5.0, gr_gain=40.0)["es_sampling_gradient_update"] == HOLDS
    assert verdicts(hybrid_like="grpo", es_gain=5.0, gr_gain=40.0)["es_sampling_gradient_update"] == FAILS
    half = {r["key"]: r for r in findings(make_evidence(hybrid_like="half", es_gain=5.0, gr_gain=40.0))}
    assert half["es_sampling_gradient_update"]["verdict"] in (UNSURE, UNDERPOWERED)
    assert "Fieller" in half["es_sampling_gradient_update"]["measured"]


def test_missing_evidence_is_not_run_not_a_crash():
    rows = findings({"format": "x", "primary_task": "t", "models": {}})
    assert {r["verdict"] for r in rows} <= {NOT_RUN, UNSURE}


def test_rejudge_reads_the_evidence_file_alone_and_needs_no_torch(tmp_path):
    ev = make_evidence(dip=12.0)
    (tmp_path / "evidence.json").write_text(json.dumps(ev))
    res = rejudge(tmp_path / "evidence.json", tmp_path)
    assert res["findings"] == findings(ev)
    assert json.loads((tmp_path / "verdicts.json").read_text())["findings"] == json.loads(json.dumps(res["findings"]))
    code = ("import sys; from typer.testing import CliRunner; from evotune.cli.main import app; "
            f"r = CliRunner().invoke(app, ['study', '--rejudge', {str(tmp_path)!r}, '--out', {str(tmp_path / 'again')!r}]); "
            "assert r.exit_code == 0, r.output; assert 'torch' not in sys.modules, 'torch imported'; print(r.output)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads((tmp_path / "again" / "verdicts.json").read_text()) == \
        json.loads((tmp_path / "verdicts.json").read_text())
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ConfigError, match="not an evotune study evidence file"):
        rejudge(tmp_path / "bad.json")


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
    """Every method trains at the same budget, compare runs, evidence is written, the report opens with findings."""
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
        "methods": ["es", "grpo", "grpo_es", "es_null", "randopt"],
    }, StudyConfig)
    res = run_study(cfg, progress=False)  # two worker processes train the ten runs
    assert [r["method"] for r in res["runs"]] == ["es", "es", "grpo", "grpo", "grpo", "grpo", "es", "es",
                                                  "randopt", "randopt"]
    assert res["methods"] == {"base": "base", "es_seed0": "es", "es_seed1": "es", "grpo_seed0": "grpo",
                              "grpo_seed1": "grpo", "grpo_es_seed0": "grpo_es", "grpo_es_seed1": "grpo_es",
                              "es_null_seed0": "es_null", "es_null_seed1": "es_null",
                              "randopt_seed0": "randopt", "randopt_seed1": "randopt"}
    assert all(r["completions"] >= 16 for r in res["runs"])
    null = build_config(tmp_path / "study" / "runs" / "es_null_seed1" / "config.yaml", None)
    assert null.es.null_control and null.method == "es"
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
    assert all(r["verdict"] in VERDICTS for r in res["findings"])
    by_key = {r["key"]: r for r in res["findings"]}
    assert "pass@2" in by_key["temperature_beats_perturbation"]["measured"]
    assert "paired barrier" in by_key["barrier_between_solutions"]["measured"]
    assert "‖Δ_ES‖/‖Δ_null‖" in by_key["es_moves_further"]["measured"]
    assert "ES − RandOpt" in by_key["es_beats_selection"]["measured"]
    randopt = build_config(tmp_path / "study" / "runs" / "randopt_seed1" / "config.yaml", None)
    assert randopt.method == "randopt" and randopt.es.population * 2 == 16  # N·T members × P prompts = the budget
    # the verdicts come from the evidence file alone: re-judging it gives the same table
    evidence = tmp_path / "study" / "report" / "evidence.json"
    again_judged = rejudge(evidence, tmp_path / "rejudged")
    assert json.loads(json.dumps(again_judged["findings"])) == json.loads(json.dumps(res["findings"]))
    ev = json.loads(evidence.read_text())
    assert ev["models"]["es_null_seed1"]["es"]["null_control"] is True and ev["lmc"] and ev["robustness"]
    assert set(ev["robustness"]) == {"es_seed0", "es_seed1", "grpo_seed0", "grpo_seed1", "es_null_seed0",
                                     "es_null_seed1"}
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


def test_the_shipped_evidence_rejudges_to_the_shipped_verdicts(tmp_path):
    """The committed study: its evidence file alone gives its committed verdicts, every claim judged."""
    shipped = Path(__file__).parents[1] / "benchmarks" / "results" / "study" / "conciseness-smollm2"
    rejudge(shipped / "evidence.json", tmp_path)
    assert (tmp_path / "verdicts.json").read_bytes() == (shipped / "verdicts.json").read_bytes()
    verdicts = [f["verdict"] for f in json.loads((shipped / "verdicts.json").read_text())["findings"]]
    assert len(verdicts) == 16 and "not run" not in verdicts


def test_check_r_compares_es_with_selection_only_when_the_study_trains_randopt():
    """ES's update against keeping the best random perturbation at the same completions (Welch over seeds)."""
    ev = make_evidence(es_gain=20.0, seed=3)
    assert "es_beats_selection" not in {r["key"] for r in findings(ev)}  # no randopt runs: no row
    base = ev["rewards"]["base"]["t"]["reward"]

    def with_randopt(gain: float) -> dict:
        e = json.loads(json.dumps(ev))
        for i in range(3):
            r = [b + gain + 0.3 * ((i + j) % 5 - 2) for j, b in enumerate(base)]
            e["models"][f"randopt_seed{i}"] = {"method": "randopt", "seed": i, "run": f"randopt_seed{i}"}
            e["rewards"][f"randopt_seed{i}"] = {"t": {"reward": r, "correct": [False] * len(r),
                                                      "reward_mean": sum(r) / len(r), "accuracy": 0.0}}
        return {r["key"]: r for r in findings(e)}["es_beats_selection"]

    assert with_randopt(2.0)["verdict"] == HOLDS  # ES gained ~20, selection ~2
    assert with_randopt(40.0)["verdict"] == FAILS  # selection alone beat ES
    close = with_randopt(20.0)
    assert close["verdict"] in (UNSURE, UNDERPOWERED) and "Welch" in close["measured"]


def test_every_pair_rules_are_not_corrected_over_pairs_but_some_pair_rules_are():
    """'No pair has a barrier' is an intersection–union test: each pair's every-λ intervals, uncorrected, decide it.
    Corrected over the 9 pairs × 3 λ, the same data would leave pairs undecided."""
    from evotune.study.claims import Evidence, _barriers

    ev = make_evidence(dip=3.0, path_sd=5.0)
    rows = {r["key"]: r for r in findings(ev)}
    assert rows["barrier_between_solutions"]["verdict"] == FAILS  # every ES↔GRPO pair: no barrier
    assert rows["same_basin"]["verdict"] == FAILS  # ...so no ES↔GRPO pair can have one
    E = Evidence(ev)
    cross = [(a, b) for a in E.group("es") for b in E.group("grpo")]
    wide = _barriers(E, cross, len(cross))  # what a correction over pairs would read
    assert wide[cross[0]][0][1].correction == 27 and any(iv.hi > 5.0 for ivs in wide.values() for _, iv in ivs)


def test_off_task_scores_that_never_vary_are_not_measurable():
    ev = make_evidence()
    ev["tasks"] = ["t", "boolq"]
    for label in ev["models"]:
        ev["rewards"].setdefault(label, {})["boolq"] = {"reward": [0.0] * 10, "correct": [0.0] * 10}
    row = {r["key"]: r for r in findings(ev)}["es_hacks_less"]
    assert "off-task boolq: not measurable (every model, the base included, scores 0 on every item)" in row["measured"]
    ev["rewards"]["es_seed1"]["boolq"]["reward"][3] = -1.0
    row = {r["key"]: r for r in findings(ev)}["es_hacks_less"]
    assert "off-task boolq reward change vs base" in row["measured"]
