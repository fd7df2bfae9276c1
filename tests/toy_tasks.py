"""Toy tasks for fast tests; importable as `toy_tasks:ToyLetters` from subprocesses (PYTHONPATH=tests)."""

from __future__ import annotations

from evotune.tasks.base import Example, Reward, Task, disjoint_split, register_task


@register_task("toy_letters")
class ToyLetters(Task):
    """Reward = fraction of characters that are the letter 'a' (learnable, dense, cheap)."""

    default_n_train = 24
    default_n_eval = 8
    default_max_new_tokens = 8

    def build(self):
        items = [Example(id=f"t{i}", prompt=f"Say something about item {i}.", answer=None) for i in range(64)]
        return disjoint_split(items, self.n_train, self.n_eval, self.seed)

    def reward(self, completion: str, example: Example) -> Reward:
        n = len(completion)
        frac = completion.count("a") / n if n else 0.0
        return Reward(frac, {"a_frac": frac}, frac > 0.5)
