"""Explanations: attribution methods, guided backpropagation, occlusion, mosaic heatmaps, sanity checks."""
