"""Models: the architecture factory and registry, own networks, bundles, checkpoints, preprocessing, OOD scores."""
