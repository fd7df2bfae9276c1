"""The whole ES-vs-GRPO study: `config` (the YAML), `evidence` (every number a verdict uses), `claims` (rules
and verdicts from the evidence alone), `judge` (evidence → verdict JSON), `runner` (train, compare, judge).

The findings table's HTML is `evotune.report.findings`. `run_study` is imported on first use: it pulls in
torch, which judging an evidence file (`evotune study --rejudge`) never needs.
"""

from typing import Any

from evotune.study.claims import CLAIM_RULES, MIN_SEEDS, findings
from evotune.study.config import Margins, StudyAnalysis, StudyConfig, load_study
from evotune.study.judge import judge, rejudge

__all__ = ["CLAIM_RULES", "MIN_SEEDS", "Margins", "StudyAnalysis", "StudyConfig", "findings", "judge", "load_study",
           "rejudge", "run_study"]


def __getattr__(name: str) -> Any:
    if name == "run_study":
        from evotune.study.runner import run_study

        return run_study
    raise AttributeError(name)
