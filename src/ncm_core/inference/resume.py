"""Resume only the same run: per-block digests of the input, checked when an interrupted run goes on.

The run fingerprint (:func:`ncm_core.inference.engine.fingerprint`) covers the bundle's weights, the
options and the mosaic's path, shape and dtype, not its pixels: hashing a whole mosaic before every
run would read it twice. Instead each finished block records a digest of the pixels it read (the
``digests`` array of the ``.partial`` group, one chunk per block like the status array). A resumed
run reads each finished block again (no model: a fraction of the run's time) and compares: a block
whose pixels changed is computed again, with a warning that names it, so the result equals a fresh
run's on the changed input.

The digests also back up the status record: a finished block always has one (a block with nothing
to compute, :meth:`BlockTask.skip`, has the digest of "skipped"). When the ``blocks`` array is
damaged it is rebuilt from them with a warning; when both are damaged, the error names ``--restart``.
"""

from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ncm_core.errors import NcmError
from ncm_core.inference.reading import clip, read_block

DIGEST = 16  # bytes
SKIPPED = b"skipped, nothing to compute".ljust(DIGEST)[:DIGEST]  # digest of a block the task skipped
TODO, DONE, FAILED, PARTIAL = 0, 1, 2, 3  # status bytes of the "blocks" array


def create_records(root: Any, status_shape: tuple[int, int]) -> None:
    """The ``blocks`` status array and the ``digests`` array, one chunk per block each, so parallel
    writers never share a chunk."""
    root.create_array(
        "blocks", shape=status_shape, dtype=np.uint8, chunks=(1, 1), fill_value=TODO, dimension_names=["y", "x"]
    )
    root.create_array(
        "digests",
        shape=(*status_shape, DIGEST),
        dtype=np.uint8,
        chunks=(1, 1, DIGEST),
        fill_value=0,
        dimension_names=["y", "x", "digest"],
    )


def restart_hint(partial: Path) -> str:
    return (
        f"the record of the interrupted run in {partial.name} is damaged; run again with --restart (API: resume=False)"
    )


def read_status(partial: Path, shape: tuple[int, int]) -> np.ndarray:
    """The status bytes of the run in ``partial``; rebuilt from the digests (with a warning) when the
    status array cannot be read, an :class:`NcmError` naming ``--restart`` when neither can."""
    import zarr

    try:
        status = np.asarray(zarr.open_array(str(partial / "blocks"), mode="r")[...])
        if status.shape != shape:
            raise ValueError(f"shape {status.shape}, expected {shape}")
        return status
    except Exception:
        pass
    try:
        digests = np.asarray(zarr.open_array(str(partial / "digests"), mode="r")[...])
        if digests.shape[:2] != shape:
            raise ValueError
    except Exception:
        raise NcmError(restart_hint(partial), partial) from None
    status = np.where(digests.any(axis=-1), DONE, TODO).astype(np.uint8)
    root = zarr.open_group(str(partial), mode="r+")
    arr = root.create_array(
        "blocks",
        shape=shape,
        dtype=np.uint8,
        chunks=(1, 1),
        fill_value=TODO,
        dimension_names=["y", "x"],
        overwrite=True,
    )
    arr[...] = status
    warnings.warn(
        f"{partial}: the status record of the interrupted run was damaged; rebuilt it from the block digests "
        f"({int((status == DONE).sum())} of {status.size} blocks done)",
        stacklevel=2,
    )
    return status


def verify(task: Any, ctx: Any, status: np.ndarray, partial: Path, retries: int, delay: float) -> list[Any]:
    """Blocks recorded as done whose input changed since (or whose digest is missing): their status is set
    back to to-do, one warning names them. Returns those blocks."""
    import zarr

    blocks = [b for b in task.blocks() if status[b.index] == DONE]
    if not blocks:
        return []
    digests = zarr.open_array(str(partial / "digests"), mode="r")

    def changed(block: Any) -> bool:
        old = bytes(np.asarray(digests[block.index]))
        if task.skip(block):
            return old != SKIPPED
        if old == SKIPPED or not any(old):
            return True
        now = read_block(ctx.mosaic, block.pixels, retries, delay)
        return isinstance(now, NcmError) or now.digest != old

    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="ncm-verify") as pool:
        redo = [b for b, c in zip(blocks, pool.map(changed, blocks)) if c]
    if redo:
        arr = zarr.open_array(str(partial / "blocks"), mode="r+")
        for b in redo:
            arr[b.index] = TODO
            status[b.index] = TODO
        spots = "; ".join(
            "block {},{} (y {}:{}, x {}:{})".format(*b.index, *clip(ctx.mosaic.shape, b.pixels)) for b in redo[:5]
        )
        warnings.warn(
            f"{ctx.mosaic.source}: the input changed since the interrupted run in {len(redo)} finished "
            f"block{'s' if len(redo) > 1 else ''} ({spots}{', ...' if len(redo) > 5 else ''}); computing "
            f"{'them' if len(redo) > 1 else 'it'} again",
            stacklevel=2,
        )
    return redo
