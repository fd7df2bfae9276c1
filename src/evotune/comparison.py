"""`compare`: every analysis on a set of runs/models, written as one HTML report and summary.json.

The report answers "how do these solutions differ?" in one place: held-out reward and
accuracy, KL drift on- and off-task (the reward–KL plane), update size per layer and the
cosine between updates, linear mode connectivity between every pair (and from the base), and
robustness to weight noise, plus the reward-hacking table and side-by-side completions.

An analysis that cannot run on the given models (e.g. a delta needs local safetensors) is
recorded under `errors` and the rest of the report is still written.

Resumable: each finished step (evaluation, kl, delta, lmc, robustness:<model>) is saved as
`steps/<name>.json` under `out_dir` with a fingerprint of what it depends on (its settings, the
models' files, the results it reuses). A rerun with the same fingerprint reuses the step instead of
recomputing it, so an interrupted comparison of large models continues where it stopped. The
fingerprint includes a hash of evotune's own source, so results of other code are never reused.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, is_dataclass, replace
from itertools import combinations
from pathlib import Path
from typing import Any

from evotune.analysis.common import free_memory, jsonable
from evotune.analysis.delta import delta_stats
from evotune.analysis.kl import build_sources, kl_matrix
from evotune.analysis.lmc import lmc_curves
from evotune.analysis.robustness import robustness
from evotune.analysis.settings import ANALYSES, CompareConfig
from evotune.backends.models import load_model
from evotune.backends.resolve import Entry, check_comparable, resolve_entries, resolve_entry
from evotune.errors import AnalysisError
from evotune.evaluation import evaluate_tasks
from evotune.evaluation.hacking import HACK_KEYS
from evotune.report.render import render_html
from evotune.runs.layout import METRICS_FILE
from evotune.runs.rundir import atomic_write_json, atomic_write_text, read_jsonl

__all__ = ["ANALYSES", "BASE_LABEL", "CompareConfig", "compare", "hacking_table"]

Log = Callable[[str], None]
BASE_LABEL = "base"


@dataclass
class _Context:
    """What every step reads: the config, the resolved models and tasks, and the summary being built."""

    cfg: CompareConfig
    entries: list[Entry]
    base: Entry
    sources: dict[str, Any]  # task name → Task
    own: list[str]  # the runs' own task names
    primary: str  # LMC and robustness run on this task
    mnt: dict[str, int]  # generation length per task
    out: Path
    log: Log | None
    summary: dict[str, Any]

    @property
    def everyone(self) -> list[Entry]:
        return [self.base, *self.entries]

    def say(self, msg: str) -> None:
        if self.log:
            self.log(msg)

    def save(self) -> None:
        """summary.json after every analysis, so an interrupted comparison keeps what it measured."""
        atomic_write_json(self.out / "summary.json", jsonable(self.summary))


def compare(models_or_runs: Sequence[str], cfg: CompareConfig | None = None, log: Log | None = None) -> dict[str, Any]:
    """Run the analyses on runs/models against `base` and write `index.html` + `summary.json`.

    `base` defaults to the first run's base model (its config `model.name`). `tasks` are added to
    the runs' own tasks; the first run's task (else the first task) is the primary one, used for
    LMC and robustness. `skip` names analyses to leave out (kl, delta, lmc, robustness).
    """
    ctx = _prepare(models_or_runs, cfg or CompareConfig(), log)
    rewards = _evaluation(ctx)
    _kl(ctx, rewards)
    _delta(ctx)
    _lmc(ctx, rewards)
    _robustness(ctx, rewards)
    ctx.summary["complete"] = not ctx.summary["errors"]  # a report with a failed analysis is not complete
    atomic_write_text(ctx.out / "index.html", render_html(ctx.summary))
    ctx.save()
    return ctx.summary


def _prepare(models_or_runs: Sequence[str], c: CompareConfig, log: Log | None) -> _Context:
    """Resolve the models, the base and the tasks; the summary starts with what was compared and how."""
    if not models_or_runs:
        raise AnalysisError("compare needs at least one run or model")
    entries = resolve_entries(models_or_runs)
    base_spec = c.base or next((e.base_model for e in entries if e.base_model), None)
    if base_spec is None:
        raise AnalysisError("pass --base: none of the arguments is a run that names its base model")
    base_e = replace(resolve_entry(base_spec), label=BASE_LABEL)
    check_comparable(entries, base_e)
    own = [e.task_config.name for e in entries if e.task_config is not None]
    wanted = list(c.tasks or []) + [t for t in dict.fromkeys(own) if t not in (c.tasks or [])]
    sources = build_sources(entries, wanted or None)  # the runs' own tasks are always included
    if not sources:
        raise AnalysisError("pass --tasks: none of the arguments is a run that brings its task")
    primary = next((e.task_config.name for e in entries if e.task_config is not None), next(iter(sources)))
    out = Path(c.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ctx = _Context(c, entries, base_e, sources, own, primary, _task_mnt(entries, sources, c.max_new_tokens),
                   out, log, {})
    ctx.summary.update(_header(ctx, base_spec))
    return ctx


def _header(ctx: _Context, base_spec: str) -> dict[str, Any]:
    """What was compared and with which settings (the study's evidence builder reads these keys)."""
    c = ctx.cfg
    return {
        "models": [e.label for e in ctx.entries],
        "base": {"label": BASE_LABEL, "spec": base_spec, "path": ctx.base.path},
        "entries": [
            {
                "label": e.label,
                "spec": e.spec,
                "path": e.path,
                "run": e.run,
                "method": e.method,
                "task": e.task_config.name if e.task_config is not None else None,
            }
            for e in ctx.entries
        ],
        "tasks": list(ctx.sources),
        "primary_task": ctx.primary,
        "settings": {
            "limit": c.limit,
            "kl_prompts": c.kl_prompts,
            "max_new_tokens": ctx.mnt,
            "lmc_points": c.lmc_points,
            "lmc_limit": c.lmc_limit or c.limit,
            "lmc_models": c.lmc_models,
            "sigmas": list(c.sigmas),
            "trials": c.trials,
            "robust_params": c.robust_params,
            "robust_limit": c.robust_limit or c.limit,
            "off_limit": c.off_limit,
            "seed": c.seed,
            "dtype": c.dtype,
            "device": c.device,
            "skip": list(c.skip),
        },
        "errors": {},
        "timing": {},
        "complete": False,
    }


# -- steps: each runs one analysis through `_step` (saved, reused when its inputs are unchanged) --------
def _evaluation(ctx: _Context) -> dict[str, dict[str, Any]]:
    """Greedy held-out evaluation of every model on every task; the hacking table follows from it."""
    c = ctx.cfg
    limits = {t: c.off_limit for t in ctx.sources if t not in ctx.own} if c.off_limit else None
    inputs = {"models": ctx.everyone, "tasks": list(ctx.sources), "mnt": ctx.mnt, "limit": c.limit,
              "limits": limits, "batch_size": c.batch_size, "dtype": c.dtype, "device": c.device,
              "samples": c.samples}
    rewards, sample_rows = _step(ctx, "evaluation", inputs, lambda: _evaluate_all(ctx, limits)) or ({}, {})
    s = ctx.summary
    s["rewards"] = {m: {t: _reward_cell(x) for t, x in per.items()} for m, per in rewards.items()}
    s["evaluation"] = rewards
    s["samples"] = sample_rows
    s["hacking"] = hacking_table(ctx.entries, rewards)
    ctx.save()
    return rewards


def _kl(ctx: _Context, rewards: dict[str, dict[str, Any]]) -> None:
    """KL of every model to the base on every task and the general prompts; the reward–KL plane."""
    kl = None
    if "kl" not in ctx.cfg.skip:
        settings = ctx.cfg.kl_settings({**ctx.mnt, "general": ctx.cfg.max_new_tokens or 64})
        sources = list(ctx.sources.values())
        inputs = {"models": ctx.everyone, "tasks": list(ctx.sources), "settings": settings}
        kl = _step(ctx, "kl", inputs, lambda: kl_matrix(ctx.entries, ctx.base, sources, settings))
    ctx.summary["kl"] = kl
    ctx.summary["reward_kl"] = _reward_kl(ctx.entries, rewards, kl, ctx.primary)
    ctx.save()


def _delta(ctx: _Context) -> None:
    """Update Δ = θ − θ₀ per layer and module, and the cosine between updates."""
    delta = None
    if "delta" not in ctx.cfg.skip:
        delta = _step(ctx, "delta", {"models": ctx.everyone}, lambda: delta_stats(ctx.entries, ctx.base))
    ctx.summary["delta"] = delta
    ctx.summary["update_norms"] = _update_norms(delta)
    ctx.summary["cosine"] = _cosine(delta)
    ctx.save()


def _lmc(ctx: _Context, rewards: dict[str, dict[str, Any]]) -> None:
    """LMC paths base→model and between the chosen models, on the primary task."""
    c, lmc_res = ctx.cfg, None
    if "lmc" not in c.skip:
        chosen = [i + 1 for i, e in enumerate(ctx.entries)
                  if c.lmc_models is None or any(fnmatch.fnmatchcase(e.label, g) for g in c.lmc_models)]
        known = {m: b for m in rewards if (b := _baseline(rewards, m, ctx.primary))}  # = the greedy eval above
        known_now = known if c.lmc_limit in (None, c.limit) else None
        pairs = [(0, i) for i in chosen] + list(combinations(chosen, 2))
        settings = c.lmc_settings(ctx.mnt[ctx.primary])
        inputs = {"models": ctx.everyone, "pairs": pairs, "task": ctx.primary, "settings": settings,
                  "known": None if settings.kl else known_now}  # lmc_curves ignores `known` with KL
        lmc_res = _step(ctx, "lmc", inputs, lambda: lmc_curves(
            ctx.everyone, pairs, ctx.sources[ctx.primary], settings, log=ctx.log, known=known_now))
    ctx.summary["lmc"] = lmc_res
    ctx.save()


def _robustness(ctx: _Context, rewards: dict[str, dict[str, Any]]) -> None:
    """Robustness to weight noise of each chosen model (and the base), one step per model."""
    c = ctx.cfg
    robust: dict[str, Any] = {}
    if "robustness" not in c.skip:
        settings = c.robustness_settings(ctx.mnt[ctx.primary])
        for e in ctx.everyone if c.robust_base else ctx.entries:
            if c.robust_models is not None and e.label != BASE_LABEL and not any(
                    fnmatch.fnmatchcase(e.label, g) for g in c.robust_models):
                continue
            baseline = (_scalars(_baseline(rewards, e.label, ctx.primary))
                        if c.robust_limit in (None, c.limit) else None)  # else measured on its own items
            inputs = {"models": [e], "task": ctx.primary, "settings": settings, "baseline": baseline}
            r = _step(ctx, f"robustness:{e.label}", inputs, lambda e=e, b=baseline: robustness(
                e, ctx.sources[ctx.primary], settings, log=ctx.log, baseline=b))
            if r is not None:
                robust[e.label] = r
                ctx.summary["robustness"] = robust
            ctx.save()
    ctx.summary["robustness"] = robust or None


def _step(ctx: _Context, name: str, inputs: dict[str, Any], fn: Callable[[], Any]) -> Any:
    """Run one analysis, or reuse its saved result when its fingerprint matches; None if it failed.

    A failure is recorded under `errors` and the rest of the report goes on; it is not saved, so a
    rerun tries it again.
    """
    path = ctx.out / "steps" / f"{_file_name(name)}.json"
    fp = _fingerprint(inputs)
    saved = _load_step(path, fp)
    if saved is not None:
        ctx.summary["timing"][name] = saved["seconds"]
        ctx.say(f"reused {name}")
        return saved["result"]
    t0 = time.perf_counter()
    ctx.say(f"[{name}] start")
    try:
        result = fn()
    except (AnalysisError, ValueError, RuntimeError) as exc:  # keep the rest of the report
        ctx.summary["errors"][name] = f"{type(exc).__name__}: {exc}"
        ctx.say(f"[{name}] failed: {ctx.summary['errors'][name]}")
        return None
    finally:
        ctx.summary["timing"][name] = time.perf_counter() - t0
        free_memory()
    saved = {"step": name, "fingerprint": fp, "seconds": ctx.summary["timing"][name], "result": jsonable(result)}
    # key order kept (not sorted): a reused result must iterate like the fresh one (e.g. the hacking table's rows)
    atomic_write_text(path, json.dumps(saved, indent=1) + "\n")
    return result


def _load_step(path: Path, fingerprint: str) -> dict[str, Any] | None:
    """A saved step with this fingerprint, else None (missing, stale or unreadable: recompute)."""
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    ok = isinstance(saved, dict) and saved.get("fingerprint") == fingerprint and "result" in saved
    return saved if ok else None


def _file_name(step: str) -> str:
    """A portable file name for a step (`robustness:<label>` → `robustness-<label>`; a label may hold
    any character, so one that needed replacing gets a hash suffix and distinct steps stay distinct)."""
    plain = step.replace(":", "-", 1)
    safe = re.sub(r"[^A-Za-z0-9._@#-]", "_", plain)
    return safe if safe == plain else f"{safe}-{hashlib.sha256(step.encode()).hexdigest()[:8]}"


def _fingerprint(inputs: dict[str, Any]) -> str:
    """sha256 of a step's inputs; models count by label, source, task settings and their files' size and mtime."""
    def plain(v: Any) -> Any:
        if isinstance(v, Entry):
            return _model_identity(v)
        if is_dataclass(v) and not isinstance(v, type):
            return asdict(v)
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [plain(x) for x in v]
        return v

    text = json.dumps(jsonable(plain(inputs)), sort_keys=True)
    return hashlib.sha256((_code_hash() + text).encode()).hexdigest()


@functools.cache
def _code_hash() -> str:
    """sha256 over evotune's .py sources: a step saved by other code (an edited analysis) is recomputed."""
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def _model_identity(e: Entry) -> dict[str, Any]:
    """What a step's result depends on in a model: a new checkpoint or rewritten weights changes it."""
    p = Path(e.path)
    files = sorted((f.relative_to(p).as_posix(), f.stat().st_size, f.stat().st_mtime_ns)
                   for f in p.rglob("*") if f.is_file()) if p.is_dir() else []
    task = e.task_config.model_dump(mode="json") if e.task_config is not None else None
    return {"label": e.label, "spec": e.spec, "path": e.path, "run": e.run, "task": task,
            "max_new_tokens": e.max_new_tokens, "files": files}


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


def _evaluate_all(
    ctx: _Context, limits: dict[str, int | None] | None = None
) -> tuple[dict[str, dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """Greedy held-out evaluation of every model on every task: summaries and the first rows.

    `limits` overrides `cfg.limit` per task (e.g. fewer items on an off-task than on the trained one).
    """
    c = ctx.cfg
    summaries: dict[str, dict[str, Any]] = {}
    rows: dict[str, list[dict[str, Any]]] = {}
    first: dict[str, list[dict[str, Any]]] = {}  # the first entry's rows per task: the base's (`correct_lost`)
    for e in ctx.everyone:
        model, tok = load_model(e.path, c.dtype, c.device)
        summaries[e.label] = {}
        groups: dict[int | None, dict[str, Any]] = {}
        for name, src in ctx.sources.items():
            groups.setdefault((limits or {}).get(name, c.limit), {})[name] = src
        results = [pair for lim, srcs in groups.items()
                   for pair in evaluate_tasks(model, tok, srcs, ctx.mnt, c.batch_size, lim, base_rows=first)]
        for name, res in results:
            first.setdefault(name, res.rows)
            # per-item rewards and correctness, same items for every model: paired comparisons (evotune.stats)
            summaries[e.label][name] = {**res.summary, "item_rewards": [r["reward"] for r in res.rows],
                                        "item_correct": [bool(r["correct"]) for r in res.rows]}
            rows.setdefault(name, []).extend(_sample_row(e.label, r) for r in res.rows[:c.samples])
            ctx.say(f"eval {e.label} on {name}: reward={res.summary['reward_mean']:.4f} "
                    f"accuracy={res.summary['accuracy']:.3f}")
        del model
        free_memory()
    return summaries, rows


def _sample_row(label: str, r: dict[str, Any]) -> dict[str, Any]:
    """A completion shown side by side in the report."""
    keys = ("id", "prompt", "completion", "reward", "correct")
    return {"model": label, **{k: r[k] for k in keys}}


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
