"""Evaluation: metrics and reports for bundles and predictions."""
