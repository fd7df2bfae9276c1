"""The rows TRL trains on, in step order: step k's prompts follow ES's mini-batch rule for iteration k.

Data order does not come from TRL's shuffling sampler: the dataset is the concatenation of the per-step
batches and TRL reads it in order (`shuffle_dataset=False`), so a resumed run skips exactly the batches
already trained on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from evotune.config import TrainConfig
from evotune.errors import ConfigError


@dataclass
class StepData:
    """The rows TRL reads, in training order, plus what the reward needs to find each row's example."""

    prompts: list[str]
    example_index: list[int]
    step: list[int]
    examples: list[Any]  # the train split; `example_index` points into it
    prompt_tokens: list[int]  # per train example, counted as ES counts them (no special tokens added)


def build_step_data(cfg: TrainConfig, task: Any, tok: Any) -> StepData:
    """Rows for steps 1..grpo.steps: step k's prompts are ES's mini-batch rule for iteration k."""
    train = list(task.split("train"))
    pos = {id(e): i for i, e in enumerate(train)}
    rendered = [task.render(e, tok) for e in train]
    counts = [len(tok(p, add_special_tokens=False)["input_ids"]) for p in rendered]
    limit = cfg.grpo.max_prompt_length
    if limit is not None and counts and max(counts) > limit:
        worst = max(range(len(counts)), key=counts.__getitem__)
        raise ConfigError(
            f"train prompt {train[worst].id!r} is {counts[worst]} tokens, longer than grpo.max_prompt_length={limit}: "
            f"raise grpo.max_prompt_length to at least {max(counts)} (prompts are never truncated)"
        )
    prompts, index, steps = [], [], []
    for k in range(1, cfg.grpo.steps + 1):
        for e in task.batch("train", cfg.grpo.prompts_per_step, cfg.seed, k):
            i = pos[id(e)]
            prompts.append(rendered[i])
            index.append(i)
            steps.append(k)
    return StepData(prompts, index, steps, train, counts)
