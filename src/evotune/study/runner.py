"""The whole ES-vs-GRPO study in one call: train both at a matched budget over seeds, compare, judge.

Every claim of the seed papers is checked against numbers measured here; the verdict is computed
from those numbers with the rules in `CLAIM_RULES`, never copied from the papers. Training runs
are ordinary run directories (finished ones are skipped, partial ones resumed), so an
interrupted study picks up where it stopped.
"""

from __future__ import annotations

import importlib
import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from evotune.analysis.passk import passk_study
from evotune.backends.models import load_model
from evotune.comparison import CompareConfig, compare
from evotune.config import TrainConfig, variant_of
from evotune.errors import ConfigError
from evotune.report.findings import findings_html
from evotune.report.render import render_html
from evotune.runs.layout import DONE, PARTIAL
from evotune.runs.rundir import atomic_write_json, atomic_write_text
from evotune.runs.summary import run_facts
from evotune.study.config import StudyConfig, study_yaml
from evotune.study.evidence import build_evidence, read_evidence
from evotune.study.judge import judge
from evotune.sweep import run_state, train_run
from evotune.tasks import build_task, get_task, task_modules


def run_study(cfg: StudyConfig, progress: bool = True, log: Any = None, reuse_compare: bool = False) -> dict[str, Any]:
    """Train every method over seeds (resumable), run `compare`, write the evidence file, judge, report.

    `reuse_compare` judges from the comparison already on disk instead of recomputing it (e.g. after a
    change to the verdict rules); it is an error if there is none. The verdicts come from
    `report/evidence.json` alone, which `rejudge` reads back without models.
    """
    out = cfg.out_dir
    saved = out / "report" / "compare" / "summary.json"
    if reuse_compare and not saved.is_file():  # before any training
        raise ConfigError(f"--reuse-compare: no comparison at {saved}; run the study without it first")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "study.yaml", study_yaml(cfg))
    t0 = time.perf_counter()
    runs = train_all(cfg, progress, log)
    facts = [run_facts(r) for r in runs]
    a = cfg.analysis
    if reuse_compare:
        summary = json.loads(saved.read_text())
    else:
        names = {r: Path(r).name for r in runs}
        cc = CompareConfig(
            base=cfg.model.name, tasks=[cfg.task.name, *[t for t in a.off_tasks if t != cfg.task.name]],
            out_dir=str(out / "report" / "compare"), limit=a.limit, kl_prompts=a.kl_prompts, lmc_points=a.lmc_points,
            lmc_limit=a.lmc_limit, sigmas=a.sigmas, trials=a.trials, skip=a.skip, device=cfg.model.device,
            lmc_models=[names[r] for r, m in runs.items() if m in cfg.lmc_methods],
            robust_models=[names[r] for r, m in runs.items() if m in a.robust_methods], robust_base=False,
            robust_limit=a.robust_limit, off_limit=a.off_limit,
        )
        summary = compare(list(runs), cc, log=log)
    passk = _passk(cfg, out / "report" / "passk.json", log) if a.passk_n else None
    by_name = {Path(r).name: m for r, m in runs.items()}  # the study's run kind (`config.variant_of` of its config)
    methods = {e["label"]: by_name.get(Path(str(e.get("run") or e["label"])).name) or e.get("method") or ""
               for e in summary["entries"]}
    study = {"name": cfg.name, "budget": cfg.budget.model_dump(exclude_none=True), "seeds": cfg.seeds,
             "methods": cfg.methods, "margins": cfg.margins.model_dump(), "model": cfg.model.name,
             "task": cfg.task.name, "analysis": a.model_dump(mode="json"), "wall_s": time.perf_counter() - t0}
    evidence = build_evidence(summary, methods, study, passk, wall={f["run"]: f["wall"] for f in facts})
    atomic_write_json(out / "report" / "evidence.json", evidence)
    result = judge(read_evidence(out / "report" / "evidence.json"), out / "report")  # exactly what --rejudge reads
    result["runs"] = facts
    atomic_write_json(out / "report" / "study.json", result)
    summary["passk"] = passk
    summary["entries"] = [{**e, "method": methods.get(e["label"]) or e.get("method")} for e in summary["entries"]]
    html = render_html(summary, extra_sections=[("findings", "Findings: seed-paper claims vs measured",
                                                 findings_html(result["findings"], str(study["budget"])))])
    atomic_write_text(out / "report" / "index.html", html)
    return result


def train_all(cfg: StudyConfig, progress: bool, log: Any) -> dict[str, str]:
    """Train (or resume) every method × seed; returns run directory → study method, in config order.

    With `jobs` > 1 the runs train in that many worker processes at once (each with `threads` torch
    threads): runs share nothing, so each run's weights are those of a sequential study.
    """
    todo, runs = [], {}
    for method in cfg.methods:
        for seed in cfg.seeds:
            rc = cfg.run_config(method, seed)
            state = run_state(Path(rc.run_dir))
            if log:
                log(f"[study] {method} seed {seed}: {state}")
            if state != DONE:
                todo.append((rc, state == PARTIAL))
            runs[rc.run_dir] = variant_of(rc)  # = method: run_config made it that variant
    if cfg.jobs == 1 or len(todo) <= 1:
        for rc, resume in todo:
            _train_timed(rc, resume, progress, log)
        return runs
    todo.sort(key=lambda t: t[0].method == "es")  # the slow gradient runs first, so the workers finish together
    ctx = multiprocessing.get_context("spawn")  # fresh interpreters: no forked torch thread pools
    with ProcessPoolExecutor(max_workers=cfg.jobs, mp_context=ctx, initializer=_import_all,
                             initargs=(task_modules(),)) as pool:
        futures = {pool.submit(_train_timed, rc, resume, False, None): rc for rc, resume in todo}
        for fut in as_completed(futures):
            secs = fut.result()  # a failed run stops the study with its own error
            if log:
                log(f"[study] trained {Path(futures[fut].run_dir).name} in {secs:.0f} s")
    return runs


def _import_all(modules: list[str]) -> None:
    """Worker start: import the modules that registered the parent's own tasks (a fresh process lacks them)."""
    for m in modules:
        importlib.import_module(m)


def _train_timed(rc: TrainConfig, resume: bool, progress: bool, log: Any) -> float:
    t0 = time.perf_counter()
    train_run(rc, resume=resume, progress=progress)
    secs = time.perf_counter() - t0
    if log:
        log(f"[study] trained {Path(rc.run_dir).name} in {secs:.0f} s")
    return secs


def _passk(cfg: StudyConfig, path: Path, log: Any) -> dict[str, Any]:
    """Claim 12's measurement on the base model (reused from `path` when its settings match)."""
    a = cfg.analysis
    own = a.passk_task in (None, cfg.task.name)
    task = build_task(cfg.task) if own else get_task(str(a.passk_task))
    mnt = task.max_new_tokens(cfg.generation.max_new_tokens if own else None)
    settings = {"model": cfg.model.name, "task": cfg.task.model_dump(mode="json") if own else a.passk_task,
                "n": a.passk_n, "max_new_tokens": mnt,
                "prompts": a.passk_prompts, "select": a.passk_select, "temperatures": a.passk_temperatures,
                "sigmas": a.passk_sigmas, "seed": cfg.seeds[0],
                "perturbation_draws": "per prompt"}  # a file from the shared-draws design is not reused
    if path.is_file():
        old = json.loads(path.read_text())
        if old.get("settings") == settings:
            return old
    if log:
        log(f"[passk] base model on {task.name}: n={a.passk_n} on {a.passk_prompts} held-out prompts")
    model, tok = load_model(cfg.model.name, cfg.model.dtype, cfg.model.device)
    res = passk_study(model, tok, task, a.passk_n, a.passk_temperatures, a.passk_sigmas, mnt, a.passk_select,
                      a.passk_prompts, cfg.generation.batch_size, cfg.seeds[0], log)
    res["settings"] = settings
    atomic_write_json(path, res)
    return res
