"""Data: tile grids, crops, tile sets, annotations, targets, cross-section geometry, synthetic samples."""
