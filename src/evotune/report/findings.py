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
        f"<p>Budget per run: {esc(budget)}. Verdicts come from the numbers in this report by the stated rule; "
        "comparisons on the same held-out items (rewards, interpolation barriers) are paired per item, and a 95% "
        "interval that straddles the rule's line is <i>inconclusive</i>.</p>"
        "<table><tr><th>#</th><th>claim (seed papers)</th><th>measured here (mean ± SE over seeds; [95% interval])</th>"
        f"<th>verdict</th><th>rule</th></tr>{body}</table>"
    )
