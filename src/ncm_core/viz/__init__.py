"""Figures (matplotlib): predictions, training curves, explanations, reports."""
