"""Running the engine's blocks on dask.distributed (any :class:`~ncm_core.inference.engine.BlockTask`).

Each block is one dask task. A worker plugin loads the model once per
worker (and limits torch to the worker's threads); tasks open the mosaic from
its path and write only their own output chunks and status chunk, so no two
writers ever touch one chunk. A worker that dies loses only its running
block: finished blocks are on disk and marked done, and dask reruns the lost
task elsewhere. Scheduler addresses: ``tcp://host:8786`` (a running cluster),
``local:N`` (a LocalCluster of N processes, one thread each), or a
``distributed.Client``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from distributed import WorkerPlugin

from ncm_core.errors import Cancelled, NcmError
from ncm_core.progress import CancelFlag, is_cancelled


def check_distributable(bundle: Any, mosaic: Any) -> None:
    """Workers load the bundle and the mosaic from paths they can read: refuse anything else early."""
    if getattr(bundle, "path", None) is None:
        raise NcmError("distributed runs need a bundle saved on disk (a path every worker can read)")
    src = mosaic.source
    if not src or not Path(src).exists():
        raise NcmError(
            f"distributed runs need the mosaic as a file or zarr path every worker can read, "
            f"not {src or 'an in-memory array'}"
        )


@contextlib.contextmanager
def connect(scheduler: Any) -> Iterator[Any]:
    """A ``distributed.Client`` for ``scheduler``; clusters started here are closed afterwards."""
    from distributed import Client, LocalCluster

    if isinstance(scheduler, Client):
        yield scheduler
        return
    text = str(scheduler)
    if text.startswith("local"):
        n = int(text.split(":", 1)[1]) if ":" in text else 2
        with (
            LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
            Client(cluster) as client,
        ):
            yield client
        return
    try:
        client = Client(text, timeout="10s")
    except (OSError, TimeoutError, ValueError) as exc:
        raise NcmError(f"cannot reach the dask scheduler at {text} ({type(exc).__name__}: {exc})") from None
    try:
        yield client
    finally:
        client.close()


class ModelOnWorker(WorkerPlugin):
    """Worker plugin: the bundle, loaded once per worker, and the mosaics its tasks opened."""

    def __init__(self, bundle_path: str, device: str, threads: int = 1) -> None:
        super().__init__()
        self.bundle_path, self.device, self.threads = bundle_path, device, threads

    def setup(self, worker: Any) -> None:
        import torch

        from ncm_core.devices import resolve_device
        from ncm_core.models.bundle import load_bundle
        from ncm_core.models.segmenter import is_segmenter, load_segmenter

        torch.set_num_threads(self.threads)
        self.dev = resolve_device(self.device)
        if is_segmenter(self.bundle_path):  # a segmentation bundle (forest or U-Net)
            self.bundle = load_segmenter(self.bundle_path, device=str(self.dev))
            if getattr(self.bundle, "path", None) is None:
                self.bundle.path = Path(self.bundle_path)
        else:
            self.bundle = load_bundle(self.bundle_path)
            self.bundle.model.to(self.dev).eval()
        self.mosaics: dict[str, Any] = {}

    def mosaic(self, source: str) -> Any:
        from ncm_core.io.mosaic import open_mosaic

        if source not in self.mosaics:
            self.mosaics[source] = open_mosaic(source)
        return self.mosaics[source]


def _block_task(
    run: Any,
    context: Any,
    task: Any,
    source: str,
    block: Any,
    plugin: str,
    retries: int,
    delay: float,
    extras: dict[str, Any],
) -> list[dict[str, Any]]:
    import dataclasses

    from distributed import get_worker

    state = get_worker().plugins[plugin]
    mosaic = state.mosaic(source)
    if extras["fill_missing"]:  # the run reads absent chunks as the fill value (missing_chunks="fill")
        mosaic = dataclasses.replace(mosaic, missing=None)
    return run(task, context(state.bundle, mosaic, state.dev, strict=extras["strict"]), block, retries, delay)


def run_blocks(
    scheduler: Any,
    task: Any,
    ctx: Any,
    blocks: list[Any],
    run: Any,
    retries: int = 2,
    delay: float = 0.5,
    cancel: CancelFlag = None,
) -> Iterator[list[dict[str, Any]]]:
    """Run ``blocks`` of ``task`` as dask tasks; yields each block's failure records as it finishes.

    ``run(task, ctx, block, retries, delay)`` processes one block on a worker (the engine's ``run_block``,
    passed in so that this module needs nothing from the engine); each worker builds its context with
    ``type(ctx)``.
    """
    from distributed import as_completed

    check_distributable(ctx.bundle, ctx.mosaic)
    device = str(getattr(ctx, "requested_device", None) or ctx.device)  # "auto": GPU workers use their GPU
    bundle_path = str(Path(ctx.bundle.path).resolve())
    name = f"ncm-model-{bundle_path}-{device}"
    with connect(scheduler) as client:
        client.register_plugin(ModelOnWorker(bundle_path, device), name=name)
        # the task (with its grid-sized mask) goes to each worker once, not with every block
        task_on_workers = client.scatter(task, broadcast=True)
        source = str(Path(ctx.mosaic.source).resolve())
        n = len(blocks)
        futures = client.map(
            _block_task,
            [run] * n,
            [type(ctx)] * n,
            [task_on_workers] * n,
            [source] * n,
            blocks,
            [name] * n,
            [retries] * n,
            [delay] * n,
            [{"strict": bool(getattr(ctx, "strict", False)), "fill_missing": ctx.mosaic.missing is None}] * n,
            pure=False,
            retries=2,
        )
        try:
            for fut in as_completed(futures):
                if is_cancelled(cancel):
                    raise Cancelled()
                yield fut.result()
        finally:
            client.cancel(futures)
