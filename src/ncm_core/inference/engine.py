"""The streaming engine: run a task block by block over a mosaic, into a resumable zarr group.

A *task* (:class:`BlockTask`) says what the output arrays are, which blocks there are, and how a
block's pixels become outputs (:meth:`BlockTask.prepare` in a reader thread, :meth:`BlockTask.process`
with the model). The engine does everything else, the same way for every task:

- a block plan: each block owns whole output chunks (zarr 3) and one status byte, so blocks can be
  written by independent processes;
- read-ahead: the next blocks are read and prepared in a background thread while the model runs;
- retries: a block whose pixels cannot be read is read again, then recorded as failed (status 2,
  a failure record naming its pixels) while the run continues; :class:`RunIncomplete` at the end;
- resume: the output is written under ``<out>.partial`` (:mod:`ncm_core.outputs`) with a run
  fingerprint; the same run started again computes only the blocks not done, and the group is
  renamed to ``out`` when complete;
- execution in this process or on dask.distributed (:mod:`ncm_core.inference.distributed`);
- progress (a generator of ``(blocks done, blocks total)``) and cancel.

Pixel-level tasks with overlapping windows (halo, blending) build on :mod:`ncm_core.inference.windows`.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from ncm_core.errors import NcmError
from ncm_core.outputs import check_output, finalize, partial_path, remove
from ncm_core.progress import CancelFlag, check_cancel

Rect = tuple[int, int, int, int]  # (y0, y1, x0, x1), half-open
READ_AHEAD = 2  # blocks prepared ahead of the one the model runs on

# status bytes of the "blocks" array
TODO, DONE, FAILED = 0, 1, 2


@dataclass(frozen=True)
class Block:
    """One unit of work: ``index`` in the status array, ``cells`` (the task's own coordinates of what it
    writes) and ``pixels`` (the mosaic rectangle it reads; unclipped, it may pass the image border)."""

    index: tuple[int, int]
    cells: Rect
    pixels: Rect


@dataclass
class Context:
    """What processing a block needs besides the task: the loaded bundle, the mosaic and the device."""

    bundle: Any
    mosaic: Any
    device: Any
    cancel: CancelFlag = None
    requested_device: str = "auto"  # what the user asked for: each dask worker resolves it on its own machine


class BlockTask:
    """Base of the tasks the engine runs. Subclasses are dataclasses, picklable (dask workers run them)."""

    partial: Path | None = None  # set by the engine: the group being written

    def status_shape(self) -> tuple[int, int]:
        """Shape of the ``blocks`` status array (one byte per block)."""
        raise NotImplementedError

    def blocks(self) -> list[Block]:
        """Every block of the run, in processing order."""
        raise NotImplementedError

    def create(self, root: Any) -> None:
        """Declare the output arrays in the new (empty) group ``root``."""
        raise NotImplementedError

    def open_arrays(self) -> Any:
        """The output arrays of ``self.partial``, opened for writing (whatever :meth:`process` needs)."""
        raise NotImplementedError

    def skip(self, block: Block) -> bool:
        """True when the block has nothing to compute (e.g. all its tiles are masked)."""
        return False

    def prepare(self, ctx: Context, block: Block, region: np.ndarray) -> Any:
        """CPU work before the model, in the reader thread (``region``: the block's pixels, clipped)."""
        return region

    def process(self, ctx: Context, block: Block, prepared: Any, arrays: Any) -> None:
        """Run the model on a prepared block and write its output chunks (not its status)."""
        raise NotImplementedError


class RunIncomplete(NcmError):
    """Some blocks could not be read; the rest is kept in ``<out>.partial`` for a re-run."""

    def __init__(self, message: str, path: str | Path, failed: list[dict[str, Any]]) -> None:
        super().__init__(message, path)
        self.failed = failed


def hash_weights(bundle: Any, h: Any) -> None:
    """Feed the bundle's weights (the safetensors file, or the in-memory state) into hash ``h``."""
    if bundle.path is not None and (bundle.path / "model.safetensors").is_file():
        with open(bundle.path / "model.safetensors", "rb") as fh:  # in pieces: never the whole file in memory
            for piece in iter(lambda: fh.read(1 << 20), b""):
                h.update(piece)
    else:
        for k, v in bundle.model.state_dict().items():
            h.update(k.encode())
            h.update(v.detach().cpu().numpy().tobytes())


def options_dict(options: Any, exclude: Iterable[str] = ()) -> dict[str, Any]:
    """The fields of an options dataclass (without deep copies), less ``exclude``."""
    skip = set(exclude)
    return {f.name: getattr(options, f.name) for f in fields(options) if f.name not in skip}


def fingerprint(bundle: Any, mosaic: Any, settings: dict[str, Any], extra: bytes = b"") -> str:
    """Hash of everything that determines a run's output, so a re-run only resumes the same run."""
    h = hashlib.sha256()
    hash_weights(bundle, h)
    h.update(
        json.dumps(
            {
                **settings,
                "source": mosaic.source,
                "shape": list(mosaic.data.shape),
                "dtype": str(mosaic.dtype),
                "input": bundle.config.input.to_dict(),
            },
            sort_keys=True,
            default=str,
        ).encode()
    )
    h.update(extra)
    return h.hexdigest()


def open_partial(out: Path, fingerprint: str, resume: bool) -> tuple[Path, Any]:
    """``(<out>.partial, its zarr group)`` when it holds an interrupted run with this ``fingerprint`` (and
    ``resume``), else ``(<out>.partial, None)`` with any other ``.partial`` removed."""
    import zarr

    partial = partial_path(out)
    if partial.exists() and resume:
        try:
            old = zarr.open_group(str(partial), mode="r+")
            if dict(old.attrs).get("ncm", {}).get("fingerprint") == fingerprint:
                return partial, old
        except Exception:
            pass
    remove(partial)
    return partial, None


def create_output(partial: Path, task: BlockTask, attrs: dict[str, Any]) -> Any:
    """A new group in ``partial`` with the task's arrays, the ``blocks`` status array and ``attrs``."""
    import zarr

    root = zarr.open_group(str(partial), mode="w", zarr_format=3)
    task.create(root)
    # one status byte per block, one chunk per block, so parallel writers never share a chunk:
    # 0 = to do, 1 = done, 2 = failed (retried on the next run)
    root.create_array(
        "blocks", shape=task.status_shape(), dtype=np.uint8, chunks=(1, 1), fill_value=TODO, dimension_names=["y", "x"]
    )
    root.attrs["ncm"] = attrs
    return root


def start(
    out: str | Path,
    fp: str,
    attrs: dict[str, Any],
    task: BlockTask,
    *,
    overwrite: bool,
    resume: bool,
    on_new: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[Path, Any, dict[str, Any] | None]:
    """Open (resume) or create ``<out>.partial`` for a run: ``(partial, root, the first run's attrs or None)``.

    ``on_new(attrs)`` runs before a new group is created (e.g. to measure and record choices that a
    resumed run must keep).
    """
    out = check_output(out, overwrite)
    partial, root = open_partial(out, fp, resume)
    first = None
    if root is None:
        if on_new is not None:
            on_new(attrs)
        root = create_output(partial, task, attrs)
    else:
        first = dict(root.attrs)["ncm"]
    task.partial = partial
    return partial, root, first


def read_region(mosaic: Any, pixels: Rect) -> np.ndarray:
    """The mosaic's pixels in ``pixels`` clipped to the image; one-line :class:`NcmError` when unreadable."""
    H, W = mosaic.shape
    y0, y1, x0, x1 = pixels
    y0, x0, y1, x1 = max(0, y0), max(0, x0), min(y1, H), min(x1, W)
    from dask.local import get_sync  # a function, not the name "synchronous", for which dask imports distributed

    try:
        return np.asarray(mosaic.data[y0:y1, x0:x1].compute(scheduler=get_sync))
    except Exception as exc:  # a damaged chunk, a vanished file, a codec error
        raise NcmError(
            f"cannot read pixels y {y0}:{y1}, x {x0}:{x1} "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})",
            mosaic.source,
        ) from None


def read_with_retries(mosaic: Any, pixels: Rect, retries: int, delay: float) -> np.ndarray | NcmError:
    """:func:`read_region`, tried ``retries`` more times (after ``delay`` x attempt seconds); the last
    error is returned, not raised."""
    for attempt in range(retries + 1):
        try:
            return read_region(mosaic, pixels)
        except NcmError as exc:
            if attempt == retries:
                return exc
            time.sleep(delay * (attempt + 1))
    raise AssertionError("unreachable")


def prepare_block(task: BlockTask, ctx: Context, block: Block, retries: int, delay: float) -> Any:
    """Read (with retries) and prepare one block: None (nothing to do), an :class:`NcmError`, or prepared data."""
    if task.skip(block):
        return None
    region = read_with_retries(ctx.mosaic, block.pixels, retries, delay)
    return region if isinstance(region, NcmError) else task.prepare(ctx, block, region)


def finish_block(
    task: BlockTask, ctx: Context, block: Block, prepared: Any, arrays: Any, status: Any
) -> dict[str, Any] | None:
    """Process a prepared block and mark it done (or failed); returns a failure record or None."""
    if isinstance(prepared, NcmError):
        H, W = ctx.mosaic.shape
        y0, y1, x0, x1 = block.pixels
        status[block.index] = FAILED
        return {
            "cells": list(block.cells),
            "pixels": [max(0, y0), min(y1, H), max(0, x0), min(x1, W)],
            "error": str(prepared),
        }
    if prepared is not None:
        task.process(ctx, block, prepared, arrays)
    status[block.index] = DONE  # after the data: a crash in between only repeats this block
    return None


def run_block(task: BlockTask, ctx: Context, block: Block, retries: int, delay: float) -> dict[str, Any] | None:
    """Everything for one block in this process (a dask task): read, prepare, process, mark."""
    import zarr

    status = zarr.open_array(str(task.partial / "blocks"), mode="r+")
    return finish_block(task, ctx, block, prepare_block(task, ctx, block, retries, delay), task.open_arrays(), status)


def execute(
    task: BlockTask,
    ctx: Context,
    *,
    retries: int = 2,
    retry_delay: float = 0.5,
    scheduler: Any = None,
    cancel: CancelFlag = None,
) -> Generator[tuple[int, int], None, list[dict[str, Any]]]:
    """Run the blocks of ``task`` not yet done; yields ``(done, total)``, returns the failure records."""
    import zarr

    status = zarr.open_array(str(task.partial / "blocks"), mode="r+")
    done = np.asarray(status[...])
    blocks = task.blocks()
    todo = [b for b in blocks if done[b.index] != DONE]
    n_done = len(blocks) - len(todo)
    failed: list[dict[str, Any]] = []
    yield n_done, len(blocks)
    if scheduler is not None:
        from ncm_core.inference.distributed import run_blocks

        results: Iterable[dict[str, Any] | None] = run_blocks(
            scheduler, task, ctx, todo, run_block, retries, retry_delay, cancel
        )
    else:
        results = _local(task, ctx, todo, status, retries, retry_delay, cancel)
    for result in results:
        if result:
            failed.append(result)
        n_done += 1
        yield n_done, len(blocks)
    return failed


def _local(
    task: BlockTask, ctx: Context, todo: list[Block], status: Any, retries: int, delay: float, cancel: CancelFlag
) -> Iterable[dict[str, Any] | None]:
    """Blocks in this process: the next ones are read and prepared in a thread while the model runs."""
    arrays = task.open_arrays()
    with ThreadPoolExecutor(max_workers=READ_AHEAD, thread_name_prefix="ncm-read") as pool:
        futures = [pool.submit(prepare_block, task, ctx, b, retries, delay) for b in todo[:READ_AHEAD]]
        for k, b in enumerate(todo):
            check_cancel(cancel)
            prepared = futures[k].result()
            if k + READ_AHEAD < len(todo):
                futures.append(pool.submit(prepare_block, task, ctx, todo[k + READ_AHEAD], retries, delay))
            futures[k] = None  # type: ignore[call-overload]  # free the block once used
            yield finish_block(task, ctx, b, prepared, arrays, status)


def incomplete(
    failed: list[dict[str, Any]], total: int, partial: Path, where: str | Path, cls: type[RunIncomplete] = RunIncomplete
) -> RunIncomplete:
    """The one-line error for a run with failed blocks."""
    spots = "; ".join(f"y {f['pixels'][0]}:{f['pixels'][1]}, x {f['pixels'][2]}:{f['pixels'][3]}" for f in failed[:5])
    return cls(
        f"{len(failed)} of {total} blocks could not be read ({spots}{', ...' if len(failed) > 5 else ''}): "
        f"{failed[0]['error']}. The rest is kept in {partial.name}; run again to retry only the failed blocks",
        where,
        failed,
    )


def complete(root: Any, attrs: dict[str, Any], partial: Path, out: str | Path) -> Path:
    """Mark the run complete and rename ``<out>.partial`` to ``out``."""
    attrs["complete"] = True
    root.attrs["ncm"] = attrs
    return finalize(partial, Path(out))
