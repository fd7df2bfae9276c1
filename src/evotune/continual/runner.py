"""Sequential training over several tasks, with the accuracy matrix measured after every stage.

    D/continual_spec.json        the settings; a rerun must match them (else a new --run-dir)
    D/matrix/row_0.json          base model: held-out accuracy/reward on every task
    D/matrix/row_{i}.json        after stage i: the same, plus KL(π_i ‖ π_base) per task
    D/matrix/row_{i}/{task}.json(l)  each task's result (written at once) and per-completion rows
    D/stage_{i}_{task}/          a normal evotune run dir; its model.name is stage i−1's final checkpoint
    D/continual.json, D/continual.png   the matrix, the metrics and the heat map

Every step is idempotent, so rerunning the command continues a killed run: a stage with a
`summary.json` is finished and skipped, a stage dir without one is resumed (`resume=True`), and a
matrix row already written is not re-evaluated.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from evotune.analysis.common import jsonable
from evotune.analysis.kl import kl_on_prompts
from evotune.backends.models import load_model
from evotune.checkpoints import latest_checkpoint
from evotune.config import BudgetConfig, TaskConfig, TrainConfig, derive
from evotune.continual.metrics import continual_metrics
from evotune.continual.report import heatmap
from evotune.continual.spec import ContinualSpec
from evotune.errors import ConfigError
from evotune.evaluation import evaluate_tasks
from evotune.grpo.trl import completions_per_step
from evotune.hashing import stable_int
from evotune.runs.layout import CONFIG_FILE, SUMMARY_FILE
from evotune.runs.rundir import atomic_write_json, write_jsonl
from evotune.tasks import build_task
from evotune.trainers import make_trainer
from evotune.trainers.frame import set_threads

SPEC_FILE = "continual_spec.json"
RESULT_FILE = "continual.json"
PLOT_FILE = "continual.png"
KL_ESTIMATOR = "exact"
# Keys of `continual_spec.json` that may change between reruns (they do not change results).
_RERUN_FREE = ("threads", "progress")
_TASK_FIELDS = set(TaskConfig.model_fields) - {"name", "options"}


def stage_dir(spec: ContinualSpec, i: int) -> Path:
    return Path(spec.run_dir) / f"stage_{i}_{spec.tasks[i - 1]}"


def task_config(spec: ContinualSpec, name: str) -> TaskConfig:
    """The task's config: seed shared with the run, `--task-opt` values as fields or options."""
    data: dict[str, Any] = {"name": name, "seed": spec.seed, "options": {}}
    for k, v in spec.task_options.get(name, {}).items():
        if k in _TASK_FIELDS:
            data[k] = v
        else:
            data["options"][k] = v
    try:
        return TaskConfig.model_validate(data)
    except Exception as exc:
        raise ConfigError(f"continual: bad --task-opt for {name}: {exc}") from exc


def stage_config(spec: ContinualSpec, i: int, model_name: str) -> TrainConfig:
    """Stage i's TrainConfig: the shared settings, this stage's task, and the previous stage's weights.

    Unless `--set es.iterations` / `grpo.steps` was given, the run length is the number of
    iterations the completion budget needs, so the budget (not a default length) ends the stage.
    """
    budget = BudgetConfig.parse(spec.budget)
    name = spec.tasks[i - 1]
    o: dict[str, Any] = dict(spec.overrides)
    o.update({
        "method": spec.method,
        "run_dir": str(stage_dir(spec, i)),
        "seed": spec.seed,
        "model.name": model_name,
        "task": task_config(spec, name).model_dump(),
        "budget.completions": budget.completions,
        "budget.tokens": budget.tokens,
        "eval.limit": spec.eval_limit,
        "generation.max_new_tokens": spec.max_new_tokens,
        "threads": spec.threads,
    })
    cfg = derive({}, {k: v for k, v in o.items() if v is not None})  # None: not given, the default
    if budget.completions is not None:
        if spec.method == "es" and "es.iterations" not in spec.overrides:
            n_train = len(build_task(cfg.task).split("train"))
            per_iter = cfg.es.population * min(cfg.es.prompts_per_iteration or n_train, n_train)
            cfg.es.iterations = max(1, math.ceil(budget.completions / per_iter))
        if spec.method == "grpo" and "grpo.steps" not in spec.overrides:
            cfg.grpo.steps = max(1, math.ceil(budget.completions / completions_per_step(cfg)))
    return cfg


def _check_spec(spec: ContinualSpec) -> None:
    """Write the spec on the first run; on a rerun insist it is the same experiment."""
    path = Path(spec.run_dir) / SPEC_FILE
    now = {k: v for k, v in asdict(spec).items() if k not in _RERUN_FREE}
    if path.is_file():
        stored = {k: v for k, v in json.loads(path.read_text()).items() if k not in _RERUN_FREE}
        changed = [f"{k}: {stored.get(k)!r} -> {now.get(k)!r}" for k in sorted(set(stored) | set(now))
                   if stored.get(k) != now.get(k)]
        if changed:
            raise ConfigError(
                f"{spec.run_dir} holds a continual run with other settings ({'; '.join(changed)}); "
                "rerun with the same flags to continue it, or choose another --run-dir"
            )
    atomic_write_json(path, asdict(spec))


def _final_checkpoint(d: Path) -> Path:
    ck = latest_checkpoint(d)
    if ck is None:
        raise ConfigError(f"{d} finished without a checkpoint; delete the directory and rerun")
    return ck


def evaluate_row(
    spec: ContinualSpec, row: int, model_spec: str, tasks: dict[str, Any], base: Any | None, batch_size: int
) -> dict[str, Any]:
    """Held-out accuracy of one model on every task (greedy, eval limit) and its KL to the base.

    Each task's result is saved as soon as it is measured, so a killed run loses at most one task.
    """
    out_dir = Path(spec.run_dir) / "matrix"
    path = out_dir / f"row_{row}.json"
    if path.is_file():
        return json.loads(path.read_text())
    res: dict[str, Any] = {"row": row, "model": model_spec, "tasks": {}, "kl": {}}
    cells = {name: out_dir / f"row_{row}" / f"{name}.json" for name in spec.tasks}
    todo = {name: tasks[name] for name in spec.tasks if not cells[name].is_file()}
    if todo:
        model, tok = load_model(model_spec, *_placement(spec))
        for name, ev in evaluate_tasks(model, tok, todo, spec.max_new_tokens, batch_size, spec.eval_limit):
            write_jsonl(out_dir / f"row_{row}" / f"{name}.jsonl", ev.rows)
            done = {"summary": ev.summary, "kl": None}
            if base is not None and spec.kl_prompts > 0:
                done["kl"] = _kl(model, base, tok, tasks[name], spec, name)
            atomic_write_json(cells[name], _jsonable(done))
    for name in spec.tasks:
        done = json.loads(cells[name].read_text())
        res["tasks"][name] = done["summary"]
        if done["kl"] is not None:
            res["kl"][name] = done["kl"]
    atomic_write_json(path, _jsonable(res))
    return res


def _placement(spec: ContinualSpec) -> tuple[str, str]:
    """(dtype, device) for the matrix evaluations: the stages' own settings (`--set model.*`)."""
    return str(spec.overrides.get("model.dtype", "auto")), str(spec.overrides.get("model.device", "auto"))


def _kl(model: Any, base: Any, tok: Any, task: Any, spec: ContinualSpec, name: str) -> dict[str, Any]:
    """KL(π_stage ‖ π_base) per token on the task's held-out prompts (evotune.analysis.kl)."""

    prompts = [task.render(e, tok) for e in task.split("eval")[: spec.kl_prompts]]
    mnt = task.max_new_tokens(spec.max_new_tokens)
    return kl_on_prompts(model, base, tok, prompts, mnt, seed=stable_int(spec.seed, "continual-kl", name)).to_dict()


def _jsonable(obj: Any) -> Any:

    return jsonable(obj)


def run_continual(spec: ContinualSpec, on_stage: Callable[[int, str], None] | None = None) -> dict[str, Any]:
    """Train every stage in order (skipping finished ones), fill the matrix, write the results."""

    spec.validate()
    # every task and stage config is checked before the run directory is written: a refused start leaves
    # nothing behind that would then refuse the corrected command as "other settings"
    tasks = {name: build_task(task_config(spec, name)) for name in spec.tasks}
    for i in range(1, len(spec.tasks) + 1):
        stage_config(spec, i, spec.model)
    root = Path(spec.run_dir)
    root.mkdir(parents=True, exist_ok=True)
    _check_spec(spec)
    set_threads(spec.threads)
    batch_size = int(spec.overrides.get("generation.batch_size", 64))
    rows = [evaluate_row(spec, 0, spec.model, tasks, None, batch_size)]
    base_model = None
    stages: list[dict[str, Any]] = []
    prev = spec.model
    for i, name in enumerate(spec.tasks, start=1):
        d = stage_dir(spec, i)
        if on_stage is not None:
            on_stage(i, name)
        if not (d / SUMMARY_FILE).is_file():
            cfg = stage_config(spec, i, prev)
            make_trainer(cfg, resume=(d / CONFIG_FILE).is_file(), progress=spec.progress).train()
        ckpt = _final_checkpoint(d)
        summary = json.loads((d / SUMMARY_FILE).read_text())
        stages.append({"stage": i, "task": name, "dir": str(d), "model_in": prev, "checkpoint": str(ckpt),
                       "summary": summary})
        if not (root / "matrix" / f"row_{i}.json").is_file() and base_model is None and spec.kl_prompts > 0:
            base_model, _ = load_model(spec.model, *_placement(spec))
        rows.append(evaluate_row(spec, i, str(ckpt), tasks, base_model, batch_size))
        prev = str(ckpt)
    result = assemble(spec, rows, stages)
    atomic_write_json(root / RESULT_FILE, _jsonable(result))

    heatmap(result, root / PLOT_FILE)
    return result


def assemble(spec: ContinualSpec, rows: list[dict[str, Any]], stages: list[dict[str, Any]]) -> dict[str, Any]:
    """continual.json: matrices (accuracy, reward), metrics, per-stage KL (on-task and off-task mean)."""
    names = spec.tasks
    acc = [[float(r["tasks"][n]["accuracy"]) for n in names] for r in rows]
    reward = [[float(r["tasks"][n]["reward_mean"]) for n in names] for r in rows]
    kl_rows: list[list[float | None]] = []
    on_task: list[float | None] = []
    off_task: list[float | None] = []
    for i, r in enumerate(rows[1:], start=1):
        vals = [r.get("kl", {}).get(n, {}).get(KL_ESTIMATOR, {}).get("mean") for n in names]
        kl_rows.append(vals)
        on_task.append(vals[i - 1])
        off = [v for j, v in enumerate(vals) if j != i - 1 and v is not None]
        off_task.append(sum(off) / len(off) if off else None)
    return {
        "tasks": names,
        "method": spec.method,
        "base_model": spec.model,
        "budget_per_task": spec.budget,
        "eval_limit": spec.eval_limit,
        "n_eval": {n: rows[0]["tasks"][n]["n"] for n in names},
        "row_labels": ["base"] + [f"after {i}: {n}" for i, n in enumerate(names, start=1)],
        "accuracy": acc,
        "reward": reward,
        "metrics": continual_metrics(acc),
        "kl": {
            "estimator": f"{KL_ESTIMATOR} per-token KL(pi_stage || pi_base), evotune.analysis.kl.kl_on_prompts",
            "prompts_per_task": spec.kl_prompts,
            "per_task": kl_rows,
            "on_task": on_task,
            "off_task_mean": off_task,
        },
        "stages": stages,
    }
