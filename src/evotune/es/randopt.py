"""RandOpt's selection (Gan & Isola, "neural thickets", arXiv 2603.12228): keep the top K, vote among them.

Pure functions over numbers and strings, like `strategy`: no model, no files.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence


def top_k(fitness: Sequence[float], k: int) -> list[int]:
    """Indices of the `k` highest fitness values, best first; ties go to the lower index (deterministic)."""
    bad = [i for i, f in enumerate(fitness) if not math.isfinite(f)]
    if bad:
        raise FloatingPointError(f"non-finite fitness for members {bad}")
    if k < 1:
        raise ValueError(f"top_k must be >= 1, got {k}")
    return sorted(range(len(fitness)), key=lambda i: (-fitness[i], i))[:k]


def answer_key(completion: str) -> str:
    """What a vote compares: the completion with case and runs of whitespace ignored."""
    return re.sub(r"\s+", " ", completion).strip().casefold()


def majority_vote(answers: Sequence[Sequence[str]]) -> list[int]:
    """Per item, which voter's answer the ensemble gives: `answers[j][i]` is voter j's answer to item i,
    voters ranked best first.

    The most frequent answer (by `answer_key`) wins; a tie goes to the answer of the best-ranked voter
    among the tied ones, and the chosen index is the best-ranked voter who gave it.
    """
    if not answers:
        raise ValueError("a vote needs at least one voter")
    n = len(answers[0])
    if any(len(a) != n for a in answers):
        raise ValueError("every voter must answer every item")
    chosen = []
    for i in range(n):
        keys = [answer_key(a[i]) for a in answers]
        counts = Counter(keys)
        most = max(counts.values())
        chosen.append(next(j for j, key in enumerate(keys) if counts[key] == most))
    return chosen
