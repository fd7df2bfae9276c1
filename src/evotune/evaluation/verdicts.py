"""An LLM's verdict as a number: log-odds of a Yes-like over a No-like next token.

Shared by the scoring service's judge head and the pairwise judge of the tournament, so both read a
causal LM the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

FIELD_CHARS = 4000  # a judge prompt keeps at most this many characters of each field (head and tail)


def clip(text: str, n: int = FIELD_CHARS) -> str:
    """Head and tail of a long field, so a judge prompt stays bounded."""
    return text if len(text) <= n else text[: n // 2] + " […] " + text[-n // 2 :]


def first_token_ids(tok: Any, words: Sequence[str]) -> set[int]:
    """The first token of each verdict word (its variants with/without a space and case)."""
    out = set()
    for w in words:
        ids = tok(w, add_special_tokens=False)["input_ids"]
        if ids:
            out.add(int(ids[0]))
    return out


@torch.no_grad()
def verdict_log_odds(
    model: Any, tok: Any, texts: Sequence[str], pos_ids: Sequence[int], neg_ids: Sequence[int], batch_size: int
) -> list[float]:
    """log P(any of pos_ids) − log P(any of neg_ids) for the token following each (left-padded) text.

    Shared by the judge scoring head and the pairwise judge of the tournament.
    """
    out: list[float] = []
    pos, neg = torch.tensor(list(pos_ids)), torch.tensor(list(neg_ids))
    old_side, tok.padding_side = tok.padding_side, "left"  # the last position must be each text's next token
    for i in range(0, len(texts), batch_size):
        enc = tok(list(texts[i : i + batch_size]), return_tensors="pt", padding=True, add_special_tokens=False)
        enc = enc.to(next(model.parameters()).device)
        logits = model(**enc).logits[:, -1, :].float()  # left padding: the last position is the next token
        logp = torch.log_softmax(logits, dim=-1)
        lp, ln = torch.logsumexp(logp[:, pos], -1), torch.logsumexp(logp[:, neg], -1)
        out.extend((lp - ln).tolist())
    tok.padding_side = old_side
    return out
