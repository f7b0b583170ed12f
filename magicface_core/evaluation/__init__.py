"""Metrics of the paper's tables and the evaluation run."""
