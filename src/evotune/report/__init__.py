"""Comparison reports: every analysis on a set of runs as one HTML page and a summary.json."""

from evotune.report.compare import compare

__all__ = ["compare"]
