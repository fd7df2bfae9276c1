"""Verdicts from an evidence file, with no torch and no model: what `evotune study --rejudge` runs.

`judge` is the one path from evidence to the verdict JSON, used at the end of a study and by
`--rejudge`, so both write the same file from the same numbers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from evotune.study.claims import findings
from evotune.study.evidence import read_evidence


def judge(evidence: dict[str, Any], out_dir: str | Path | None = None) -> dict[str, Any]:
    """The findings of `evidence` as the verdict JSON (written to `out_dir/verdicts.json` when given)."""
    study = evidence.get("study") or {}
    result = {"name": study.get("name"), "budget": study.get("budget"), "seeds": study.get("seeds"),
              "margins": study.get("margins"), "findings": findings(evidence),
              "methods": {k: v.get("method") for k, v in (evidence.get("models") or {}).items()}}
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / ".verdicts.json.tmp"
        tmp.write_text(json.dumps(result, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
        tmp.replace(out / "verdicts.json")
    return result


def rejudge(path: str | Path, out_dir: str | Path | None = None) -> dict[str, Any]:
    """Recompute every verdict from the evidence file at `path` (a file, or a report folder holding one)."""
    return judge(read_evidence(path), out_dir)
