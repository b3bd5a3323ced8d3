"""Training: the epoch loop, classification, regression, cross-validation, tuning."""
