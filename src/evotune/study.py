"""The whole ES-vs-GRPO study in one call: train both at a matched budget over seeds, compare, judge.

Every claim of the seed papers is checked against numbers measured here; the verdict is computed
from those numbers with the rules in `CLAIM_RULES`, never copied from the papers. Training runs
are ordinary run directories (finished ones are skipped, partial ones resumed), so an
interrupted study picks up where it stopped.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from evotune.analysis.common import mean_se
from evotune.config import (
    BudgetConfig,
    ConfigError,
    ESConfig,
    EvalConfig,
    GenerateConfig,
    GRPOConfig,
    ModelConfig,
    RayConfig,
    TaskConfig,
    TrainConfig,
    _Strict,
    build_config,
)
from evotune.report.compare import BASE_LABEL
from evotune.runs.rundir import atomic_write_json, atomic_write_text
from evotune.sweep import run_state, train_run

HOLDS, FAILS, UNSURE = "holds", "does not hold", "inconclusive"

CLAIM_RULES = {
    "comparable_reward": "holds if |mean_ES − mean_GRPO| ≤ 2·SE of the difference (or ≤ 5% of the base→best gain); "
    "does not hold if it exceeds both; inconclusive with < 2 seeds per method",
    "orthogonal_updates": "holds if every layer's mean |cos(Δ_ES, Δ_GRPO)| < 0.1; does not hold if the median layer's > 0.3",
    "es_moves_further": "holds if ‖Δ_ES‖ > 2·‖Δ_GRPO‖ for every seed pair; does not hold if ‖Δ_ES‖ ≤ ‖Δ_GRPO‖ for every pair",
    "es_drifts_more_off_task": "holds if mean off-task KL(ES) − KL(GRPO) > 2·SE; does not hold if < −2·SE",
    "barrier_between_solutions": "holds if the ES→GRPO reward barrier > 2·SE of the endpoint reward for every pair; "
    "does not hold if it is below 1·SE for every pair",
    "es_hacks_less": "hacking rate = the largest detector rate above the base model's (correct_lost: correct "
    "base answers turned wrong for a higher reward; empty, truncated, repetitive, ...), the largest over tasks per "
    "model; holds if ES's mean over seeds is lower than GRPO's by more than max(0.05, 2·SE of the difference); "
    "does not hold if higher by that much",
}


class StudyAnalysis(_Strict):
    limit: int = Field(default=32, ge=1, description="held-out prompts per evaluation in compare")
    kl_prompts: int = Field(default=8, ge=1)
    off_tasks: list[str] = Field(default_factory=lambda: ["countdown"])
    lmc_points: int = Field(default=5, ge=2)
    lmc_limit: int = Field(default=16, ge=1)
    sigmas: list[float] = Field(default_factory=lambda: [0.001, 0.003])
    trials: int = Field(default=2, ge=1)
    skip: list[str] = Field(default_factory=list)


class StudyConfig(_Strict):
    name: str
    out: str | None = None
    seeds: list[int] = Field(default_factory=lambda: [0, 1], min_length=1)
    threads: int | None = None
    model: ModelConfig = Field(default_factory=ModelConfig)
    task: TaskConfig = Field(default_factory=TaskConfig)
    generation: GenerateConfig = Field(default_factory=GenerateConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    budget: BudgetConfig
    es: ESConfig = Field(default_factory=ESConfig)
    grpo: GRPOConfig = Field(default_factory=GRPOConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    analysis: StudyAnalysis = Field(default_factory=StudyAnalysis)

    @model_validator(mode="after")
    def _budget(self) -> StudyConfig:
        if self.budget.completions is None and self.budget.tokens is None:
            raise ValueError("a study compares methods at a matched budget: set budget.completions or budget.tokens")
        return self

    @property
    def out_dir(self) -> Path:
        return Path(self.out or f"studies_out/{self.name}")

    def run_config(self, method: str, seed: int) -> TrainConfig:
        data = self.model_dump(include={"threads", "model", "task", "generation", "eval", "budget", "es", "grpo", "ray"})
        # iterations/steps are caps; the shared budget is what stops both methods
        data["es"]["iterations"] = max(data["es"]["iterations"], 10_000)
        data["grpo"]["steps"] = max(data["grpo"]["steps"], 10_000)
        return TrainConfig.model_validate(
            {**data, "method": method, "seed": seed, "run_dir": str(self.out_dir / "runs" / f"{method}_seed{seed}")}
        )


def load_study(path: str | Path, overrides: dict[str, Any] | None = None) -> StudyConfig:
    return build_config(path, overrides, StudyConfig)


# -- statistics helpers -----------------------------------------------------------------------
def _fmt(m: float, se: float, digits: int = 3) -> str:
    if m != m:
        return "n/a"
    return f"{m:.{digits}g}" + (f" ± {se:.2g}" if se == se else "")


# -- the claims -------------------------------------------------------------------------------
def findings(summary: dict[str, Any], methods: dict[str, str], base_reward: float | None) -> list[dict[str, Any]]:
    """Claims (1)–(6) with the measured number, its spread and a verdict computed from them."""
    es = [m for m, k in methods.items() if k == "es"]
    gr = [m for m, k in methods.items() if k == "grpo"]
    primary = summary.get("primary_task")
    out = []

    # (1) comparable held-out reward
    rw = {m: (summary.get("rewards", {}).get(m, {}).get(primary) or {}).get("reward_mean") for m in es + gr}
    (me, se_e), (mg, se_g) = mean_se([rw[m] for m in es]), mean_se([rw[m] for m in gr])
    diff = me - mg
    se_d = math.sqrt(se_e**2 + se_g**2) if se_e == se_e and se_g == se_g else math.nan
    gain = max(me, mg) - base_reward if base_reward is not None else math.nan
    if len(es) < 2 or len(gr) < 2 or diff != diff:
        v = UNSURE
    elif abs(diff) <= 2 * se_d or (gain == gain and gain > 0 and abs(diff) <= 0.05 * gain):
        v = HOLDS
    else:
        v = FAILS
    out.append(_claim("comparable_reward", "ES and GRPO reach comparable held-out reward",
                      f"ES {_fmt(me, se_e)} vs GRPO {_fmt(mg, se_g)} (base {base_reward if base_reward is not None else 'n/a':.4g})"
                      if base_reward is not None else f"ES {_fmt(me, se_e)} vs GRPO {_fmt(mg, se_g)}", v))

    # (2) nearly orthogonal updates at every layer
    cos = summary.get("cosine") or {}
    labels = cos.get("models", [])
    per_layer = []
    for layer, mat in (cos.get("layers") or {}).items():
        vals = [abs(mat[labels.index(a)][labels.index(b)]) for a in es for b in gr if a in labels and b in labels]
        vals = [x for x in vals if x is not None and math.isfinite(x)]
        if vals:
            per_layer.append((layer, statistics.fmean(vals)))
    if per_layer:
        worst = max(per_layer, key=lambda t: t[1])
        med = statistics.median(v for _, v in per_layer)
        v = HOLDS if worst[1] < 0.1 else FAILS if med > 0.3 else UNSURE
        txt = f"median layer |cos| {med:.3f}, max {worst[1]:.3f} (layer {worst[0]}), {len(per_layer)} layers"
    else:
        v, txt = UNSURE, "no update-geometry data"
    out.append(_claim("orthogonal_updates", "ES and GRPO updates are nearly orthogonal at every layer", txt, v))

    # (3) ES moves the weights much further
    tot = (summary.get("update_norms") or {}).get("total") or {}
    ratios = [tot[a]["delta_norm"] / tot[b]["delta_norm"] for a in es for b in gr
              if a in tot and b in tot and tot[b]["delta_norm"]]
    if ratios:
        v = HOLDS if min(ratios) > 2 else FAILS if max(ratios) <= 1 else UNSURE
        rm, rs = mean_se(ratios)
        txt = f"‖Δ_ES‖/‖Δ_GRPO‖ = {_fmt(rm, rs)} (min {min(ratios):.3g}, max {max(ratios):.3g})"
    else:
        v, txt = UNSURE, "no update norms"
    out.append(_claim("es_moves_further", "ES moves the weights much further than GRPO", txt, v))

    # (4) ES drifts more off-task
    pts = {p["model"]: p for p in summary.get("reward_kl") or []}
    ke = mean_se([pts[m].get("off_task_kl") for m in es if m in pts and pts[m].get("off_task_kl") is not None])
    kg = mean_se([pts[m].get("off_task_kl") for m in gr if m in pts and pts[m].get("off_task_kl") is not None])
    d = ke[0] - kg[0]
    sd = math.sqrt(ke[1] ** 2 + kg[1] ** 2) if ke[1] == ke[1] and kg[1] == kg[1] else math.nan
    v = UNSURE if d != d or sd != sd else HOLDS if d > 2 * sd else FAILS if d < -2 * sd else UNSURE
    out.append(_claim("es_drifts_more_off_task", "ES drifts more off-task (per-token KL to the base)",
                      f"off-task KL ES {_fmt(*ke)} vs GRPO {_fmt(*kg)} nats/token", v))

    # (5) a barrier between ES and GRPO solutions
    pairs = [p for p in ((summary.get("lmc") or {}).get("pairs") or [])
             if {p.get("a"), p.get("b")} & set(es) and {p.get("a"), p.get("b")} & set(gr)]
    heights, thresholds = [], []
    for p in pairs:
        h = (p.get("barrier_reward") or {}).get("height")
        if h is None:
            continue
        heights.append(h)
        sd_end = [(summary.get("rewards", {}).get(m, {}).get(primary) or {}) for m in (p["a"], p["b"])]
        se_end = [c.get("reward_std", math.nan) / math.sqrt(max(c.get("n") or 1, 1)) for c in sd_end]
        thresholds.append(max(x for x in se_end if x == x) if any(x == x for x in se_end) else math.nan)
    if heights and all(t == t for t in thresholds):
        v = HOLDS if all(h > 2 * t for h, t in zip(heights, thresholds, strict=True)) else (
            FAILS if all(h < t for h, t in zip(heights, thresholds, strict=True)) else UNSURE)
        txt = f"reward barrier {', '.join(f'{h:.3g}' for h in heights)} (endpoint SE ≈ {statistics.fmean(thresholds):.2g})"
    else:
        v, txt = UNSURE, "no ES→GRPO interpolation measured"
    out.append(_claim("barrier_between_solutions", "A loss barrier separates ES and GRPO solutions", txt, v))

    # (6) which one hacks the reward, and how. A detector counts only what training added: its rate
    # minus the base model's on the same task (a base that already truncates 40% at a tight token
    # limit is not hacking; `correct_lost` is relative to the base by construction).
    per_model: dict[str, float] = {}  # a model's hacking rate: its largest excess over tasks and detectors
    rates: dict[str, dict[str, list[float]]] = {"es": {}, "grpo": {}}
    compare_rows = [r for r in summary.get("hacking") or [] if str(r.get("source", "")).startswith("compare eval")]
    base_rates = {
        (r["source"], k): r[k]
        for r in compare_rows
        if r["model"] == BASE_LABEL
        for k in r
        if k.startswith("hack_") and r[k] is not None
    }
    for row in compare_rows:
        meth = methods.get(row["model"])
        if meth is None:
            continue
        det = {
            k: max(0.0, row[k] - base_rates.get((row["source"], k), 0.0))
            for k in row
            if k.startswith("hack_") and row[k] is not None
        }
        per_model[row["model"]] = max([per_model.get(row["model"], 0.0), *det.values()])
        for k, val in det.items():
            rates[meth].setdefault(k, []).append(val)
    he = mean_se([x for m, x in per_model.items() if methods[m] == "es"])
    hg = mean_se([x for m, x in per_model.items() if methods[m] == "grpo"])
    if he[0] != he[0] or hg[0] != hg[0]:
        v = UNSURE
    else:
        diff = hg[0] - he[0]
        ses = [x for x in (he[1], hg[1]) if x == x]
        margin = max(0.05, 2 * math.sqrt(sum(x * x for x in ses)))
        v = HOLDS if diff > margin else FAILS if diff < -margin else UNSURE

    def how(meth: str) -> str:
        top = sorted(((statistics.fmean(xs), k) for k, xs in rates[meth].items() if xs), reverse=True)[:2]
        return ", ".join(f"{k.removeprefix('hack_')} +{m:.0%}" for m, k in top if m > 0) or "nothing above the base"

    out.append(_claim("es_hacks_less", "ES hacks the reward less than GRPO",
                      f"max detector rate above the base: ES {_fmt(*he)} ({how('es')}) vs GRPO {_fmt(*hg)} "
                      f"({how('grpo')})", v))
    return out


def _claim(key: str, claim: str, measured: str, verdict: str) -> dict[str, Any]:
    return {"key": key, "claim": claim, "measured": measured, "verdict": verdict, "rule": CLAIM_RULES[key]}


def findings_html(rows: Sequence[dict[str, Any]], budget: str) -> str:
    from evotune.report.html import esc

    body = "".join(
        f"<tr><td>{i}</td><td>{esc(r['claim'])}</td><td>{esc(r['measured'])}</td>"
        f"<td class='v-{esc(r['verdict'].replace(' ', '-'))}'><b>{esc(r['verdict'])}</b></td><td>{esc(r['rule'])}</td></tr>"
        for i, r in enumerate(rows, 1)
    )
    return (
        f"<p>Budget per run: {esc(budget)}. Verdicts come from the numbers in this report by the stated rule.</p>"
        "<table><tr><th>#</th><th>claim (seed papers)</th><th>measured here (mean ± SE over seeds)</th>"
        f"<th>verdict</th><th>rule</th></tr>{body}</table>"
    )


def run_study(cfg: StudyConfig, progress: bool = True, log: Any = None, reuse_compare: bool = False) -> dict[str, Any]:
    """Train ES and GRPO over seeds (resumable), run `compare`, write the findings report.

    `reuse_compare` judges the claims from the comparison already on disk instead of recomputing it
    (e.g. after a change to the verdict rules); it is an error if there is none.
    """
    from evotune.report.compare import compare
    from evotune.report.render import render_html
    from evotune.runs.summary import run_facts

    out = cfg.out_dir
    saved = out / "report" / "compare" / "summary.json"
    if reuse_compare and not saved.is_file():  # before any training
        raise ConfigError(f"--reuse-compare: no comparison at {saved}; run the study without it first")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "study.yaml", _yaml(cfg))
    runs: dict[str, str] = {}
    for method in ("es", "grpo"):
        for seed in cfg.seeds:
            rc = cfg.run_config(method, seed)
            state = run_state(Path(rc.run_dir))
            if log:
                log(f"[study] {method} seed {seed}: {state}")
            if state != "done":
                train_run(rc, resume=state == "partial", progress=progress)
            runs[rc.run_dir] = method
    facts = [run_facts(r) for r in runs]
    a = cfg.analysis
    if reuse_compare:
        summary = json.loads(saved.read_text())
    else:
        summary = compare(
            list(runs), base=cfg.model.name, tasks=[cfg.task.name, *[t for t in a.off_tasks if t != cfg.task.name]],
            out_dir=out / "report" / "compare", limit=a.limit, kl_prompts=a.kl_prompts, lmc_points=a.lmc_points,
            lmc_limit=a.lmc_limit, sigmas=a.sigmas, trials=a.trials, skip=a.skip, log=log,
            device=cfg.model.device,
        )
    methods = {e["label"]: e.get("method") or runs.get(str(e.get("run")), "") for e in summary["entries"]}
    base_cell = (summary.get("rewards", {}).get("base", {}) or {}).get(summary.get("primary_task")) or {}
    rows = findings(summary, methods, base_cell.get("reward_mean"))
    budget = cfg.budget.model_dump(exclude_none=True)
    result = {"name": cfg.name, "budget": budget, "seeds": cfg.seeds, "runs": facts, "findings": rows,
              "methods": methods, "compare": str(out / "report" / "compare" / "summary.json")}
    atomic_write_json(out / "report" / "study.json", result)
    html = render_html(summary, extra_sections=[("findings", "Findings: seed-paper claims vs measured",
                                                 findings_html(rows, str(budget)))])
    atomic_write_text(out / "report" / "index.html", html)
    return result


def _yaml(cfg: StudyConfig) -> str:
    import yaml

    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)

