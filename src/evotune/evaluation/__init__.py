"""Scoring completions and held-out evaluation: the one code path for training, eval and analyses.

`hacking` holds the reward-hacking detectors every evaluation summary carries.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from evotune.backends.hf import COMPILE_PAD, Completion, generate
from evotune.errors import ConfigError, TaskError
from evotune.evaluation.collapse import collapse_rates
from evotune.evaluation.hacking import hacking_rates
from evotune.tasks.base import Example, Task


def check_prompts_fit(
    model: Any, tokenizer: Any, task: Task, max_new_tokens: int, eval_limit: int | None = None,
    compiled: bool = False,
) -> None:
    """Every prompt of every split, rendered, plus `max_new_tokens` fits the model's context.

    Checked before the first step: found at generation time, a long train prompt ends the run at
    whatever iteration first draws it, and every `--resume` fails again at the same iteration.
    """
    context = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if not isinstance(context, int):
        return
    for split in ("train", "eval"):
        examples = list(task.split(split))  # type: ignore[arg-type]
        if split == "eval" and eval_limit is not None:
            examples = examples[:eval_limit]
        for e in examples:
            n = len(tokenizer(task.render(e, tokenizer), add_special_tokens=False)["input_ids"])
            width = -(-n // COMPILE_PAD) * COMPILE_PAD if compiled else n
            if width + max_new_tokens > context:
                raise ConfigError(
                    f"task {task.name!r}: {split} prompt {e.id!r:.80} is {n} tokens; with max_new_tokens "
                    f"{max_new_tokens} it exceeds the model's context of {context} tokens — shorten or remove "
                    "it, or lower --max-new-tokens (checked before the first step)"
                )


def score_rows(
    task: Task, examples: Sequence[Example], completions: Sequence[Completion]
) -> list[dict[str, Any]]:
    """Per-completion rows (reward, components, correctness, length); used for fitness and eval."""
    rows = []
    rewards = task.score_batch([c.text for c in completions], examples)  # one call: a remote scorer batches
    for ex, c, r in zip(examples, completions, rewards, strict=True):
        rows.append(
            {
                "id": ex.id,
                "prompt": ex.prompt,
                "completion": c.text,
                "raw": c.raw,
                "reward": r.score,
                "components": r.components,
                "correct": r.correct,
                "n_tokens": c.n_tokens,
                "truncated": c.truncated,
            }
        )
    return rows


def summarize(
    rows: Sequence[dict[str, Any]], base_rows: Sequence[dict[str, Any]] | None = None
) -> dict[str, float]:
    """Aggregate rows into the shared eval metric names (and reward-hacking rates).

    `base_rows`: the starting model's rows on the same items, for the `correct_lost` detector.
    """
    if not rows:
        return {"n": 0}
    rewards = [r["reward"] for r in rows]
    out: dict[str, float] = {
        "n": len(rows),
        "reward_mean": statistics.fmean(rewards),
        "reward_std": statistics.pstdev(rewards),
        "accuracy": statistics.fmean(1.0 if r["correct"] else 0.0 for r in rows),
        "mean_length": statistics.fmean(len(r["completion"]) for r in rows),
        "mean_tokens": statistics.fmean(r["n_tokens"] for r in rows),
    }
    for name in sorted({k for r in rows for k in r["components"]}):
        out[f"reward_{name}"] = statistics.fmean(r["components"].get(name, 0.0) for r in rows)
    out.update(hacking_rates(rows, base_rows))
    out.update(collapse_rates(rows))
    return out


@dataclass
class EvalResult:
    summary: dict[str, float]
    rows: list[dict[str, Any]]


def evaluate(
    model: Any,
    tokenizer: Any,
    task: Task,
    split: str = "eval",
    max_new_tokens: int | None = None,
    batch_size: int = 64,
    limit: int | None = None,
    temperature: float = 0.0,
    seed: int = 0,
    base_rows: Sequence[dict[str, Any]] | None = None,
) -> EvalResult:
    """Greedy (by default) completions on a split, scored by the task's own reward."""
    examples = task.split(split)  # type: ignore[arg-type]
    if limit is not None:
        if limit < 1:
            raise TaskError(f"limit must be >= 1 held-out items, got {limit}")
        examples = examples[:limit]
    if not examples:
        raise TaskError(f"task {task.name!r} has an empty {split} split: nothing to evaluate (give it more data or a larger --n-{split})")
    mnt = task.max_new_tokens(max_new_tokens)
    prompts = [task.render(e, tokenizer) for e in examples]
    comps = generate(
        model, tokenizer, prompts, mnt, batch_size=batch_size, temperature=temperature, seed=seed
    )
    rows = score_rows(task, examples, comps)
    return EvalResult(summarize(rows, base_rows), rows)


def evaluate_tasks(
    model: Any,
    tokenizer: Any,
    tasks: Mapping[str, Task],
    max_new_tokens: Mapping[str, int | None] | int | None = None,
    batch_size: int = 64,
    limit: int | None = None,
    base_rows: Mapping[str, Sequence[dict[str, Any]]] | None = None,
) -> Iterator[tuple[str, EvalResult]]:
    """One loaded model on several tasks' held-out splits, one task at a time (so a caller can save
    each result as it arrives); the one model × task path of `compare`, `continual` and the study."""
    for name, task in tasks.items():
        mnt = max_new_tokens.get(name) if isinstance(max_new_tokens, Mapping) else max_new_tokens
        yield name, evaluate(
            model, tokenizer, task, "eval", task.max_new_tokens(mnt), batch_size, limit,
            base_rows=(base_rows or {}).get(name),
        )
