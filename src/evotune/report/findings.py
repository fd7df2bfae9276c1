"""The study's findings table as HTML: claim, measured number, verdict and the rule that gave it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from evotune.report.html import esc


def findings_html(rows: Sequence[dict[str, Any]], budget: str) -> str:

    body = "".join(
        f"<tr><td>{i}</td><td>{esc(r['claim'])}</td><td>{esc(r['measured'])}</td>"
        f"<td class='v-{esc(r['verdict'].replace(' ', '-'))}'><b>{esc(r['verdict'])}</b></td><td>{esc(r['rule'])}</td></tr>"
        for i, r in enumerate(rows, 1)
    )
    return (
        f"<p>Budget per run: {esc(budget)}. Every verdict is computed from the study's evidence file "
        "(<code>report/evidence.json</code>; <code>evotune study --rejudge</code> recomputes it without models) by "
        "the stated rule. Each interval is printed with its kind (level, df, replicate, correction). "
        "<i>holds</i> / <i>does not hold</i>: the interval lies on one side of the rule's line; <i>underpowered</i>: "
        "it reaches past the pre-registered margin on both sides (the n that would decide is given); "
        "<i>inconclusive</i>: it sits on the line; <i>not informative</i>: a null ES (fitness permuted, so nothing "
        "learned) gets the same verdict; <i>not testable</i>: nothing to measure at this scale.</p>"
        "<table><tr><th>#</th><th>claim (seed papers)</th><th>measured here (intervals with their kind)</th>"
        f"<th>verdict</th><th>rule</th></tr>{body}</table>"
    )
