"""`compare`: every analysis on a set of runs/models, written as one HTML report and summary.json.

The report answers "how do these solutions differ?" in one place: held-out reward and
accuracy, KL drift on- and off-task (the reward–KL plane), update size per layer and the
cosine between updates, linear mode connectivity between every pair (and from the base), and
robustness to weight noise, plus the reward-hacking table and side-by-side completions.

An analysis that cannot run on the given models (e.g. a delta needs local safetensors) is
recorded under `errors` and the rest of the report is still written.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from itertools import combinations
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from evotune.analysis.common import (
    AnalysisError,
    Entry,
    check_comparable,
    free_memory,
    jsonable,
    resolve_entries,
    resolve_entry,
)
from evotune.analysis.delta import delta_stats
from evotune.analysis.kl import build_sources, kl_matrix
from evotune.analysis.lmc import lmc_curves
from evotune.analysis.robustness import robustness
from evotune.backends.models import load_model
from evotune.evaluation import evaluate_tasks
from evotune.evaluation.hacking import HACK_KEYS
from evotune.report.render import render_html
from evotune.runs.layout import METRICS_FILE
from evotune.runs.rundir import atomic_write_json, atomic_write_text, read_jsonl

Log = Callable[[str], None]
ANALYSES = ("kl", "delta", "lmc", "robustness")
BASE_LABEL = "base"


def _task_mnt(
    entries: Sequence[Entry], sources: dict[str, Any], max_new_tokens: int | None
) -> dict[str, int]:
    """Generation length per task: the flag, else the first run's setting for it, else the task's default."""
    out = {}
    for name, t in sources.items():
        run_mnt = next(
            (
                e.max_new_tokens
                for e in entries
                if e.task_config is not None and e.task_config.name == name and e.max_new_tokens
            ),
            None,
        )
        out[name] = t.max_new_tokens(max_new_tokens if max_new_tokens is not None else run_mnt)
    return out


def evaluate_all(
    entries: Sequence[Entry],
    sources: dict[str, Any],
    mnt: dict[str, int],
    limit: int | None,
    batch_size: int,
    dtype: str,
    samples: int,
    log: Log | None = None,
    device: str = "auto",
    limits: dict[str, int | None] | None = None,
) -> tuple[dict[str, dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """Greedy held-out evaluation of every model on every task: summaries and the first rows.

    `limits` overrides `limit` per task (e.g. fewer items on an off-task than on the trained one).
    """
    summaries: dict[str, dict[str, Any]] = {}
    rows: dict[str, list[dict[str, Any]]] = {}
    first: dict[str, list[dict[str, Any]]] = {}  # the first entry's rows per task: the base's (`correct_lost`)
    for e in entries:
        model, tok = load_model(e.path, dtype, device)
        summaries[e.label] = {}
        groups: dict[int | None, dict[str, Any]] = {}
        for name, src in sources.items():
            groups.setdefault((limits or {}).get(name, limit), {})[name] = src
        results = [pair for lim, srcs in groups.items()
                   for pair in evaluate_tasks(model, tok, srcs, mnt, batch_size, lim, base_rows=first)]
        for name, res in results:
            first.setdefault(name, res.rows)
            # per-item rewards and correctness, same items for every model: paired comparisons (evotune.stats)
            summaries[e.label][name] = {**res.summary, "item_rewards": [r["reward"] for r in res.rows],
                                        "item_correct": [bool(r["correct"]) for r in res.rows]}
            for r in res.rows[:samples]:
                rows.setdefault(name, []).append(
                    {
                        "model": e.label,
                        "id": r["id"],
                        "prompt": r["prompt"],
                        "completion": r["completion"],
                        "reward": r["reward"],
                        "correct": r["correct"],
                    }
                )
            if log:
                log(
                    f"eval {e.label} on {name}: reward={res.summary['reward_mean']:.4f} "
                    f"accuracy={res.summary['accuracy']:.3f}"
                )
        del model
        free_memory()
    return summaries, rows


def hacking_table(entries: Sequence[Entry], summaries: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Hacking rates from this comparison's evaluations and from each run's last training-time eval."""

    keys = HACK_KEYS
    out = []
    for label, per_task in summaries.items():
        for task, s in per_task.items():
            out.append(
                {
                    "model": label,
                    "source": f"compare eval ({task})",
                    **{k: s.get(k) for k in keys},
                    "hacking": s.get("hacking"),
                    "reason": s.get("hacking_reason", ""),
                }
            )
    for e in entries:
        if e.run is None:
            continue
        evals = [r for r in read_jsonl(e.run / METRICS_FILE, skip_corrupt=True) if "eval/hacking" in r]
        if evals:
            r = evals[-1]
            out.append(
                {
                    "model": e.label,
                    "source": f"run eval (step {r.get('step')})",
                    **{k: r.get(f"eval/{k}") for k in keys},
                    "hacking": r.get("eval/hacking"),
                    "reason": r.get("eval/hacking_reason", ""),
                }
            )
    return out


class CompareConfig(BaseModel):
    """What `compare` measures and how; every field is a flag of `evotune compare`."""

    model_config = ConfigDict(extra="forbid")

    base: str | None = Field(default=None, description="θ₀ (default: the first run's base model)")
    tasks: list[str] = Field(default_factory=list, description="tasks besides the runs' own")
    out_dir: str = Field(default="report", description="where index.html and summary.json go")
    limit: int | None = Field(default=32, ge=1, description="held-out items per evaluation")
    kl_prompts: int = Field(default=16, ge=1, description="prompts per source for KL")
    max_new_tokens: int | None = Field(default=None, ge=1, description="default: each run's/task's own")
    lmc_points: int = Field(default=11, ge=2, description="λ grid size of the LMC paths")
    lmc_limit: int | None = Field(default=None, ge=1, description="held-out items per LMC point (default: limit)")
    lmc_kl: bool = Field(default=False, description="KL to the base along LMC paths")
    lmc_models: list[str] | None = Field(
        default=None, description="labels (globs) of the models that get LMC paths, base→model and between them "
        "(default: all)",
    )
    sigmas: list[float] = Field(default_factory=lambda: [0.001, 0.003, 0.01], description="robustness σ grid")
    trials: int = Field(default=4, ge=1, description="robustness trials per σ")
    robust_params: str = Field(default="*", description="robustness: parameters to perturb (glob)")
    robust_base: bool = Field(default=True, description="also measure the base model's robustness")
    robust_limit: int | None = Field(default=None, ge=1, description="held-out items per robustness trial "
                                     "(default: limit; fewer items, more trials: the model, not the item, is the unit)")
    robust_models: list[str] | None = Field(
        default=None, description="labels (globs) of the models whose robustness is measured (default: all)")
    off_limit: int | None = Field(default=None, ge=1, description="held-out items per evaluation on the tasks that "
                                  "are not any run's own (off-task degradation; default: limit)")
    skip: list[str] = Field(default_factory=list, description="analyses to skip: kl, delta, lmc, robustness")
    samples: int = Field(default=4, ge=0, description="sample completions per task in the report")
    seed: int = 0
    dtype: str = Field(default="auto", description="auto: float32 on the CPU, bfloat16 on CUDA")
    device: str = Field(default="auto", description="auto | cpu | cuda | cuda:N")
    batch_size: int = Field(default=64, ge=1)

    @field_validator("skip")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        bad = sorted(set(v) - set(ANALYSES))
        if bad:
            raise ValueError(f"unknown analyses to skip: {bad}; choose from {list(ANALYSES)}")
        return v


def compare(models_or_runs: Sequence[str], cfg: CompareConfig | None = None, log: Log | None = None) -> dict[str, Any]:
    """Run the analyses on runs/models against `base` and write `index.html` + `summary.json`.

    `base` defaults to the first run's base model (its config `model.name`). `tasks` are added to
    the runs' own tasks; the first run's task (else the first task) is the primary one, used for
    LMC and robustness. `skip` names analyses to leave out (kl, delta, lmc, robustness).
    """
    c = cfg or CompareConfig()
    base, tasks, limit, kl_prompts, max_new_tokens = c.base, c.tasks, c.limit, c.kl_prompts, c.max_new_tokens
    lmc_points, lmc_limit, lmc_kl, sigmas, trials = c.lmc_points, c.lmc_limit, c.lmc_kl, c.sigmas, c.trials
    robust_params, robust_base, skip, samples = c.robust_params, c.robust_base, c.skip, c.samples
    seed, dtype, device, batch_size = c.seed, c.dtype, c.device, c.batch_size
    if not models_or_runs:
        raise AnalysisError("compare needs at least one run or model")
    entries = resolve_entries(models_or_runs)
    base_spec = base or next((e.base_model for e in entries if e.base_model), None)
    if base_spec is None:
        raise AnalysisError("pass --base: none of the arguments is a run that names its base model")
    base_e = replace(resolve_entry(base_spec), label=BASE_LABEL)
    check_comparable(entries, base_e)
    own = [e.task_config.name for e in entries if e.task_config is not None]
    wanted = list(tasks or []) + [t for t in dict.fromkeys(own) if t not in (tasks or [])]
    sources = build_sources(entries, wanted or None)  # the runs' own tasks are always included
    if not sources:
        raise AnalysisError("pass --tasks: none of the arguments is a run that brings its task")
    primary = next((e.task_config.name for e in entries if e.task_config is not None), next(iter(sources)))
    mnt = _task_mnt(entries, sources, max_new_tokens)
    everyone = [base_e, *entries]
    out = Path(c.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    timing: dict[str, float] = {}
    errors: dict[str, str] = {}
    summary: dict[str, Any] = {
        "models": [e.label for e in entries],
        "base": {"label": BASE_LABEL, "spec": base_spec, "path": base_e.path},
        "entries": [
            {
                "label": e.label,
                "spec": e.spec,
                "path": e.path,
                "run": e.run,
                "method": e.method,
                "task": e.task_config.name if e.task_config is not None else None,
            }
            for e in entries
        ],
        "tasks": list(sources),
        "primary_task": primary,
        "settings": {
            "limit": limit,
            "kl_prompts": kl_prompts,
            "max_new_tokens": mnt,
            "lmc_points": lmc_points,
            "lmc_limit": lmc_limit or limit,
            "lmc_models": c.lmc_models,
            "sigmas": list(sigmas),
            "trials": trials,
            "robust_params": robust_params,
            "robust_limit": c.robust_limit or limit,
            "off_limit": c.off_limit,
            "seed": seed,
            "dtype": dtype,
            "device": device,
            "skip": list(skip),
        },
        "errors": errors,
        "timing": timing,
        "complete": False,
    }

    def save() -> None:
        """summary.json after every analysis, so an interrupted comparison keeps what it measured."""
        atomic_write_json(out / "summary.json", jsonable(summary))

    def step(name: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        if log:
            log(f"[{name}] start")
        try:
            return fn()
        except (AnalysisError, ValueError, RuntimeError) as exc:  # keep the rest of the report
            errors[name] = f"{type(exc).__name__}: {exc}"
            if log:
                log(f"[{name}] failed: {errors[name]}")
            return None
        finally:
            timing[name] = time.perf_counter() - t0
            free_memory()

    limits = {t: c.off_limit for t in sources if t not in own} if c.off_limit else None
    rewards, sample_rows = step(
        "evaluation", lambda: evaluate_all(everyone, sources, mnt, limit, batch_size, dtype, samples, log,
                                           device=device, limits=limits)
    ) or ({}, {})
    summary["rewards"] = {m: {t: _reward_cell(s) for t, s in per.items()} for m, per in rewards.items()}
    summary["evaluation"] = rewards
    summary["samples"] = sample_rows
    summary["hacking"] = hacking_table(entries, rewards)
    save()

    kl = None
    if "kl" not in skip:

        lengths = {**mnt, "general": max_new_tokens or 64}
        kl = step(
            "kl",
            lambda: kl_matrix(
                entries, base_e, list(sources.values()), kl_prompts, lengths, seed, dtype=dtype, device=device
            ),
        )
    summary["kl"] = kl
    summary["reward_kl"] = _reward_kl(entries, rewards, kl, primary)
    save()

    delta = None
    if "delta" not in skip:

        delta = step("delta", lambda: delta_stats(entries, base_e))
    summary["delta"] = delta
    summary["update_norms"] = _update_norms(delta)
    summary["cosine"] = _cosine(delta)
    save()

    lmc_res = None
    if "lmc" not in skip:

        chosen = [i + 1 for i, e in enumerate(entries)
                  if c.lmc_models is None or any(fnmatch.fnmatchcase(e.label, g) for g in c.lmc_models)]
        known = {m: b for m in rewards if (b := _baseline(rewards, m, primary))}  # = the greedy eval above
        pairs = [(0, i) for i in chosen] + list(combinations(chosen, 2))
        lmc_res = step(
            "lmc",
            lambda: lmc_curves(
                everyone,
                pairs,
                sources[primary],
                lmc_points,
                lmc_limit or limit,
                mnt[primary],
                batch_size,
                kl=lmc_kl,
                kl_ref=0,
                seed=seed,
                dtype=dtype, device=device,
                log=log,
                known=known if lmc_limit in (None, limit) else None,
            ),
        )
    summary["lmc"] = lmc_res
    save()

    robust: dict[str, Any] = {}
    if "robustness" not in skip:

        for e in everyone if robust_base else entries:
            if c.robust_models is not None and e.label != BASE_LABEL and not any(
                    fnmatch.fnmatchcase(e.label, g) for g in c.robust_models):
                continue
            r = step(
                f"robustness:{e.label}",
                lambda e=e: robustness(
                    e,
                    sources[primary],
                    sigmas,
                    trials,
                    robust_params,
                    c.robust_limit or limit,
                    mnt[primary],
                    batch_size,
                    seed,
                    dtype=dtype, device=device,
                    log=log,
                    baseline=_scalars(_baseline(rewards, e.label, primary))
                    if c.robust_limit in (None, limit) else None,  # else measured on its own items
                ),
            )
            if r is not None:
                robust[e.label] = r
                summary["robustness"] = robust
            save()
    summary["robustness"] = robust or None
    summary["complete"] = not errors  # a report with a failed analysis is not complete


    atomic_write_text(out / "index.html", render_html(summary))
    save()
    return summary


def _baseline(rewards: dict[str, dict[str, Any]], label: str, task: str) -> dict[str, float] | None:
    """{reward, accuracy} of a model from the evaluation step (None if it was not evaluated)."""
    s = rewards.get(label, {}).get(task)
    if s is None:
        return None
    return {"reward": s["reward_mean"], "accuracy": s["accuracy"], "reward_items": s.get("item_rewards")}


def _scalars(b: dict[str, Any] | None) -> dict[str, float] | None:
    """A baseline's numbers without its per-item list (robustness compares means)."""
    return None if b is None else {k: v for k, v in b.items() if k != "reward_items"}


def _reward_cell(s: dict[str, Any]) -> dict[str, Any]:
    return {k: s.get(k) for k in ("reward_mean", "reward_std", "accuracy", "mean_tokens", "n", "item_rewards",
                                  "item_correct")}


def _reward_kl(
    entries: Sequence[Entry], rewards: dict[str, dict[str, Any]], kl: dict[str, Any] | None, primary: str
) -> list[dict[str, Any]]:
    """One point per model on its own task (the primary one for plain models); the base sits at KL 0."""
    pts = []
    if BASE_LABEL in rewards and primary in rewards[BASE_LABEL]:
        pts.append(
            {
                "model": BASE_LABEL,
                "task": primary,
                "reward": rewards[BASE_LABEL][primary]["reward_mean"],
                "accuracy": rewards[BASE_LABEL][primary]["accuracy"],
                "kl": 0.0,
                "kl_se": 0.0,
            }
        )
    for e in entries:
        task = e.task_config.name if e.task_config is not None else primary
        r = rewards.get(e.label, {}).get(task)
        p: dict[str, Any] = {
            "model": e.label,
            "task": task,
            "reward": r and r["reward_mean"],
            "accuracy": r and r["accuracy"],
            "kl": None,
            "kl_se": None,
            "off_task_kl": None,
        }
        if kl is not None and task in kl["cells"]:
            cell = kl["cells"][task][e.label]
            p.update(kl=cell["exact"]["mean"], kl_se=cell["exact"]["se"], kl_k3=cell["k3"]["mean"])
            off = kl["summary"][e.label].get("off_task")
            if off:
                p["off_task_kl"] = off["exact"]["mean"]
        pts.append(p)
    return pts


def _update_norms(delta: dict[str, Any] | None) -> dict[str, Any] | None:
    """‖Δ‖ and ‖Δ‖/‖θ₀‖ per layer / module / total, keyed by model (a compact view of `delta`)."""
    if delta is None:
        return None
    models = delta["models"]

    def view(g: dict[str, Any]) -> dict[str, Any]:
        return {
            m: {"delta_norm": g["delta_norm"][i], "rel_norm": g["rel_norm"][i]} for i, m in enumerate(models)
        }

    return {
        "layers": {k: view(g) for k, g in delta["layers"].items()},
        "modules": {k: view(g) for k, g in delta["modules"].items()},
        "total": view(delta["total"]),
    }


def _cosine(delta: dict[str, Any] | None) -> dict[str, Any] | None:
    if delta is None:
        return None
    return {
        "models": delta["models"],
        "total": delta["total"]["cosine"],
        "layers": {k: g["cosine"] for k, g in delta["layers"].items()},
        "modules": {k: g["cosine"] for k, g in delta["modules"].items()},
    }
