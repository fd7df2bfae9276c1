"""Mode-collapse detector: how much of a model's output is one response said over and over.

The per-completion hacking detectors (`evaluation/hacking.py`) cannot see collapse: a refusal
template repeated on every prompt is non-empty, ASCII, not repetitive *within* itself. Collapse
is a property of the set, so it is measured on the set:

    mode_share   share of completions that are near-duplicates of the most frequent response
                 (word-bigram Jaccard similarity >= NEAR_DUP, after lowercasing and masking digits)
    distinct_1/2 corpus-level distinct-n: unique word n-grams / all word n-grams (Li et al. 2016)
    unique_share distinct normalised completions / completions

The "most frequent response" is the medoid of the largest near-duplicate cluster, not the most
frequent exact string: a template that varies one noun ("I can't help with making X") is one mode.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

_WORD = re.compile(r"\w+", re.UNICODE)
_DIGITS = re.compile(r"\d+")

NEAR_DUP = 0.5  # word-bigram Jaccard at or above which two completions count as the same response
COLLAPSE_THRESHOLD = 0.5  # mode_share above this flags the set as collapsed
_ALL_PAIRS_UP_TO = 400  # beyond this many completions, the mode is searched among sampled candidates
_CANDIDATES = 200


def normalize(text: str) -> str:
    """Lowercase words with digits masked: numbers and punctuation do not make a response new."""
    return " ".join(_DIGITS.sub("0", w) for w in _WORD.findall(text.lower()))


def shingles(text: str, n: int = 2) -> frozenset[tuple[str, ...]]:
    """Word n-grams of the normalised text; short texts become one shingle (the whole text)."""
    words = normalize(text).split()
    if len(words) < n:
        return frozenset([tuple(words)]) if words else frozenset()
    return frozenset(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def jaccard(a: frozenset[Any], b: frozenset[Any]) -> float:
    if not a and not b:
        return 1.0  # two empty outputs are the same response
    return len(a & b) / len(a | b)


def distinct_n_corpus(texts: Iterable[str], n: int) -> float:
    """Unique word n-grams over all word n-grams of all texts (1.0 when there are none)."""
    total, seen = 0, set()
    for t in texts:
        words = normalize(t).split()
        grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else 1.0


def mode_cluster(texts: Sequence[str], near_dup: float = NEAR_DUP, seed: int = 0) -> tuple[int, list[int]]:
    """(index of the mode response, indices of its near-duplicates including itself).

    Exact for up to `_ALL_PAIRS_UP_TO` texts; above, the mode is the best of the most frequent
    normalised strings plus a seeded sample (collapse makes the mode frequent, so it is found).
    """
    sh = [shingles(t) for t in texts]
    n = len(texts)
    if n <= _ALL_PAIRS_UP_TO:
        cands = list(range(n))
    else:
        freq = Counter(normalize(t) for t in texts)
        first = {}
        for i, t in enumerate(texts):
            first.setdefault(normalize(t), i)
        cands = [first[s] for s, _ in freq.most_common(_CANDIDATES // 4)]
        cands += random.Random(seed).sample(range(n), min(n, _CANDIDATES))
        cands = list(dict.fromkeys(cands))
    best, members = -1, []
    for c in cands:
        m = [j for j in range(n) if jaccard(sh[c], sh[j]) >= near_dup]
        if len(m) > len(members):
            best, members = c, m
    return best, members


def collapse_stats(texts: Sequence[str], near_dup: float = NEAR_DUP) -> dict[str, Any]:
    """The collapse numbers of a set of completions (see the module docstring)."""
    if not texts:
        return {}
    idx, members = mode_cluster(texts, near_dup)
    share = len(members) / len(texts)
    return {
        "mode_share": share,
        "mode_response": texts[idx][:300],
        "distinct_1": distinct_n_corpus(texts, 1),
        "distinct_2": distinct_n_corpus(texts, 2),
        "unique_share": len({normalize(t) for t in texts}) / len(texts),
        "collapsed": 1.0 if share > COLLAPSE_THRESHOLD else 0.0,
    }


def collapse_rates(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """`collapse_*` metrics of evaluation rows (numbers only: they go to metrics.jsonl)."""
    s = collapse_stats([r["completion"] for r in rows])
    return {f"collapse_{k}": v for k, v in s.items() if k != "mode_response"}
