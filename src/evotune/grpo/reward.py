"""The GRPO reward: each completion scored exactly as ES scores it, and the per-step accounting.

The reward function is also where evotune sees what a TRL step generated, so it records the
rewards, correctness, token counts and timing that become the step's shared `train/*` row.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from evotune.backends.hf import decode_completion
from evotune.grpo.data import StepData


@dataclass
class RewardLog:
    """What the reward function saw during one optimizer step; reset by the callback each step."""

    rewards: list[float] = field(default_factory=list)
    correct: list[bool] = field(default_factory=list)
    completion_tokens: int = 0
    prompt_tokens: int = 0
    sample: str = ""
    t_generate: float = 0.0
    t_score: float = 0.0

    def reset(self) -> None:
        self.__dict__.update(RewardLog().__dict__)


def make_reward_fn(task: Any, tok: Any, stops: set[int], max_new_tokens: int, data: StepData, stats: RewardLog) -> Any:
    """A TRL reward callable that scores exactly as ES does: `decode_completion` then `task.score`."""

    def task_reward(
        prompts: list[str], completion_ids: list[list[int]], example_index: list[int], step: list[int], **kw: Any
    ) -> list[float]:
        t0 = time.perf_counter()
        state = kw.get("trainer_state")
        if state is not None and set(step) != {state.global_step + 1}:
            raise RuntimeError(f"data order broken: rows of steps {sorted(set(step))} at step {state.global_step + 1}")
        out = []
        comps = [decode_completion(tok, ids, stops, max_new_tokens) for ids in completion_ids]
        scored = task.score_batch([c.text for c in comps], [data.examples[i] for i in example_index])
        for c, i, r in zip(comps, example_index, scored, strict=True):
            out.append(r.score)
            stats.rewards.append(r.score)
            stats.correct.append(r.correct)
            stats.completion_tokens += c.n_tokens
            stats.prompt_tokens += data.prompt_tokens[i]
            if not stats.sample:
                stats.sample = c.text
        stats.t_score += time.perf_counter() - t0
        return out

    return task_reward
