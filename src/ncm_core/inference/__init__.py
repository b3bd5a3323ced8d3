"""Inference: the streaming engine and the tasks that run on it (tile classes), backends, dense mode, dask."""
