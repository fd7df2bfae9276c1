"""The whole ES-vs-GRPO study: `config` (the YAML), `claims` (rules and verdicts), `runner` (train, compare, judge).

The findings table's HTML is `evotune.report.findings`.
"""

from evotune.report.findings import findings_html
from evotune.study.claims import CLAIM_RULES, FAILS, HOLDS, MIN_SEEDS, NOT_RUN, UNSURE, findings, versus
from evotune.study.config import StudyAnalysis, StudyConfig, load_study
from evotune.study.runner import run_study

__all__ = [
    "CLAIM_RULES", "FAILS", "HOLDS", "MIN_SEEDS", "NOT_RUN", "UNSURE", "StudyAnalysis", "StudyConfig", "findings", "findings_html",
    "load_study", "run_study", "versus",
]
