"""The streaming engine: run a task block by block over a mosaic, into a resumable zarr group.

A *task* (:class:`BlockTask`) says what the output arrays are, which blocks there are, and how a
block's pixels become outputs (:meth:`BlockTask.prepare` in a reader thread, :meth:`BlockTask.process`
with the model). The engine does everything else, the same way for every task:

- a block plan: each block owns whole output chunks (zarr 3) and one status byte, so blocks can be
  written by independent processes;
- read-ahead: the next blocks are read and prepared in a background thread while the model runs;
- pixels checked as they are read (:mod:`ncm_core.inference.reading`): a block is retried, then read
  chunk by chunk, so an unreadable or missing chunk loses only its own tiles (the block is marked
  partial, status 3) and a block no chunk of which can be read is recorded as failed (status 2); both
  are retried by the next run, and the run ends with :class:`RunIncomplete` naming them. NaN or inf
  pixels are passed to the task as a problem map (its tiles or windows are left out, counted), or
  stop the run in one line in ``strict`` mode;
- resume: the output is written under ``<out>.partial`` (:mod:`ncm_core.outputs`) with a run
  fingerprint; the same run started again computes only the blocks not done, after checking the
  digests of the pixels the done blocks read (:mod:`ncm_core.inference.resume`): a block whose input
  changed is computed again; the group is renamed to ``out`` when complete;
- execution in this process or on dask.distributed (:mod:`ncm_core.inference.distributed`);
- progress (a generator of ``(blocks done, blocks total)``) and cancel.

Pixel-level tasks with overlapping windows (halo, blending) build on :mod:`ncm_core.inference.windows`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from ncm_core.errors import NcmError
from ncm_core.inference import resume
from ncm_core.inference.reading import FAILED_BLOCK, REASONS, BlockRead, Rect, clip, read_block, read_region
from ncm_core.inference.resume import DONE, FAILED, PARTIAL, SKIPPED, TODO
from ncm_core.outputs import check_output, disk_full, finalize, is_disk_full, partial_path, remove
from ncm_core.progress import CancelFlag, check_cancel

__all__ = ["Block", "BlockTask", "Context", "RunIncomplete", "read_region", "TODO", "DONE", "FAILED", "PARTIAL"]

READ_AHEAD = 2  # blocks prepared ahead of the one the model runs on
#: options of every engine run that change how it goes, not what it writes: left out of run fingerprints
RUN_ONLY = ("device", "overwrite", "resume", "retries", "retry_delay", "strict", "allow_incomplete")
ENGINE_FORMAT = 2  # enters the fingerprint: a .partial written by another engine format is not resumed


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
    strict: bool = False  # any problem pixel (NaN, unreadable or missing chunk) stops the run in one line


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

    def prepare(self, ctx: Context, block: Block, region: np.ndarray, problems: np.ndarray | None) -> Any:
        """CPU work before the model, in the reader thread. ``region``: the block's pixels, clipped (problem
        pixels set to 0); ``problems``: None, or per-pixel codes of :mod:`ncm_core.inference.reading` that
        the task must respect (leave out what they touch)."""
        return region

    def process(self, ctx: Context, block: Block, prepared: Any, arrays: Any) -> dict[int, int] | None:
        """Run the model on a prepared block and write its output chunks (not its status); returns what was
        left out, ``{problem code: number of tiles or windows}``, or None."""
        raise NotImplementedError

    def fail(self, block: Block, arrays: Any) -> None:
        """Mark a block that could not be read at all in the outputs (e.g. a "not predicted" code)."""


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
                "engine": ENGINE_FORMAT,
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
            import warnings

            warnings.warn(f"{partial}: the interrupted run's record cannot be read; starting again", stacklevel=2)
    remove(partial)
    return partial, None


def create_output(partial: Path, task: BlockTask, attrs: dict[str, Any]) -> Any:
    """A new group in ``partial`` with the task's arrays, the ``blocks`` status array and ``attrs``."""
    import zarr

    root = zarr.open_group(str(partial), mode="w", zarr_format=3)
    task.create(root)
    # one status byte per block (0 = to do, 1 = done, 2 = failed, 3 = partly read: failed and partial blocks
    # are retried by the next run), a digest of the pixels each done block read, and per block the number of
    # tiles or windows left out for each problem code; each one chunk per block
    resume.create_records(root, task.status_shape())
    root.create_array(
        "skipped",
        shape=(*task.status_shape(), len(REASONS) + 1),
        dtype=np.int32,
        chunks=(1, 1, len(REASONS) + 1),
        fill_value=0,
        dimension_names=["y", "x", "reason"],
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


@dataclass
class Prepared:
    """A block read and prepared in the reader thread."""

    data: Any  # the task's prepared input; None: nothing to compute
    digest: bytes
    failures: list[dict[str, Any]]  # unreadable / missing chunks: the block is partial


def prepare_block(task: BlockTask, ctx: Context, block: Block, retries: int, delay: float) -> Prepared | NcmError:
    """Read (with retries, checks) and prepare one block: a :class:`Prepared`, or an :class:`NcmError`
    when none of its pixels can be read. In ``ctx.strict`` mode any problem pixel raises."""
    if task.skip(block):
        return Prepared(None, SKIPPED, [])
    read = read_block(ctx.mosaic, block.pixels, retries, delay)
    if ctx.strict and isinstance(read, NcmError):
        raise NcmError(f"{read} (strict mode)")
    if ctx.strict and read.problems is not None:
        raise NcmError(f"{read.describe()} (strict mode)", None if read.failures else ctx.mosaic.source)
    if isinstance(read, NcmError):
        return read
    assert isinstance(read, BlockRead)
    return Prepared(task.prepare(ctx, block, read.region, read.problems), read.digest, read.failures)


def finish_block(
    task: BlockTask, ctx: Context, block: Block, prepared: Prepared | NcmError, arrays: Any, records: Any
) -> list[dict[str, Any]]:
    """Process a prepared block and record it done, partial or failed; returns its failure records."""
    status, digests, skipped = records
    if isinstance(prepared, NcmError):
        task.fail(block, arrays)
        digests[block.index] = 0  # no digest: a status rebuilt from the digests retries it
        status[block.index] = FAILED
        return [
            {
                "cells": list(block.cells),
                "pixels": list(clip(ctx.mosaic.shape, block.pixels)),
                "error": str(prepared),
                "reason": REASONS[FAILED_BLOCK],
            }
        ]
    counts = task.process(ctx, block, prepared.data, arrays) if prepared.data is not None else None
    row = np.zeros(skipped.shape[-1], np.int32)
    for code, n in (counts or {}).items():
        row[code] = n
    skipped[block.index] = row
    if prepared.failures:  # partly read: no digest, so a rebuilt status record retries it too
        digests[block.index] = 0
        status[block.index] = PARTIAL
        return [{"cells": list(block.cells), **f} for f in prepared.failures]
    digests[block.index] = np.frombuffer(prepared.digest, np.uint8)
    status[block.index] = DONE  # last: a crash in between only repeats this block
    return []


def open_records(partial: Path) -> tuple[Any, Any, Any]:
    """The ``blocks``, ``digests`` and ``skipped`` arrays of ``partial``, for writing."""
    import zarr

    return tuple(zarr.open_array(str(partial / n), mode="r+") for n in ("blocks", "digests", "skipped"))  # type: ignore[return-value]


def run_block(task: BlockTask, ctx: Context, block: Block, retries: int, delay: float) -> list[dict[str, Any]]:
    """Everything for one block in this process (a dask task): read, prepare, process, record."""
    prepared = prepare_block(task, ctx, block, retries, delay)
    return finish_block(task, ctx, block, prepared, task.open_arrays(), open_records(task.partial))


def execute(
    task: BlockTask,
    ctx: Context,
    *,
    retries: int = 2,
    retry_delay: float = 0.5,
    scheduler: Any = None,
    cancel: CancelFlag = None,
) -> Generator[tuple[int, int], None, list[dict[str, Any]]]:
    """Run the blocks of ``task`` not yet done; yields ``(done, total)``, returns the failure records. A full
    disk ends the run in one line, with the ``.partial`` removed."""
    try:
        return (yield from _execute(task, ctx, retries, retry_delay, scheduler, cancel))
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        partial = Path(task.partial)  # type: ignore[arg-type]
        raise disk_full(partial, partial.with_name(partial.name.removesuffix(".partial"))) from None


def _execute(
    task: BlockTask, ctx: Context, retries: int, retry_delay: float, scheduler: Any, cancel: CancelFlag
) -> Generator[tuple[int, int], None, list[dict[str, Any]]]:
    done = resume.read_status(task.partial, task.status_shape())
    resume.verify(task, ctx, done, task.partial, retries, retry_delay)
    blocks = task.blocks()
    todo = [b for b in blocks if done[b.index] != DONE]
    n_done = len(blocks) - len(todo)
    failed: list[dict[str, Any]] = []
    yield n_done, len(blocks)
    if scheduler is not None:
        from ncm_core.inference.distributed import run_blocks

        results: Iterable[list[dict[str, Any]]] = run_blocks(
            scheduler, task, ctx, todo, run_block, retries, retry_delay, cancel
        )
    else:
        results = _local(task, ctx, todo, retries, retry_delay, cancel)
    for result in results:
        failed.extend(result)
        n_done += 1
        yield n_done, len(blocks)
    return failed


def _local(
    task: BlockTask, ctx: Context, todo: list[Block], retries: int, delay: float, cancel: CancelFlag
) -> Iterable[list[dict[str, Any]]]:
    """Blocks in this process: the next ones are read and prepared in a thread while the model runs."""
    arrays, records = task.open_arrays(), open_records(task.partial)
    with ThreadPoolExecutor(max_workers=READ_AHEAD, thread_name_prefix="ncm-read") as pool:
        futures = [pool.submit(prepare_block, task, ctx, b, retries, delay) for b in todo[:READ_AHEAD]]
        for k, b in enumerate(todo):
            check_cancel(cancel)
            prepared = futures[k].result()
            if k + READ_AHEAD < len(todo):
                futures.append(pool.submit(prepare_block, task, ctx, todo[k + READ_AHEAD], retries, delay))
            futures[k] = None  # type: ignore[call-overload]  # free the block once used
            yield finish_block(task, ctx, b, prepared, arrays, records)


def incomplete(
    failed: list[dict[str, Any]], total: int, partial: Path, where: str | Path, cls: type[RunIncomplete] = RunIncomplete
) -> RunIncomplete:
    """The one-line error for a run with regions that could not be read (whole blocks or chunks)."""
    spots = "; ".join("y {}:{}, x {}:{}".format(*f["pixels"]) for f in failed[:5])
    blocks = len({tuple(f["cells"]) for f in failed})
    return cls(
        f"{len(failed)} region{'s' if len(failed) > 1 else ''} in {blocks} of {total} blocks could not be read "
        f"({spots}{', ...' if len(failed) > 5 else ''}): {failed[0]['error']}. The rest is kept in {partial.name}; "
        "run again to retry only what failed, or keep the result with these regions marked as not computed "
        "(--allow-incomplete)",
        where,
        failed,
    )


def settle(
    failed: list[dict[str, Any]],
    allow_incomplete: bool,
    attrs: dict[str, Any],
    root: Any,
    task: BlockTask,
    where: str | Path,
    cls: type[RunIncomplete] = RunIncomplete,
) -> None:
    """After a run with ``failed`` regions: raise ``cls`` (the run stays resumable in ``.partial``), or with
    ``allow_incomplete`` record them in ``attrs["failed_regions"]`` (the caller then completes the output,
    where they are not computed) and warn in one line."""
    if not failed:
        return
    import warnings

    attrs["failed_regions"] = failed
    err = incomplete(failed, len(task.blocks()), task.partial, where, cls)  # type: ignore[arg-type]
    if not allow_incomplete:
        root.attrs["ncm"] = attrs
        raise err
    attrs["incomplete"] = True
    warnings.warn(
        f"{where}: {len(failed)} region{'s' if len(failed) > 1 else ''} could not be read and "
        f"{'are' if len(failed) > 1 else 'is'} marked as not computed (allow_incomplete): {failed[0]['error']}",
        stacklevel=2,
    )


def skipped_counts(root: Any) -> dict[str, int]:
    """``{reason: tiles or windows left out}`` over the blocks of a run (see :mod:`ncm_core.inference.reading`)."""
    total = np.asarray(root["skipped"][...]).reshape(-1, len(REASONS) + 1).sum(axis=0)
    return {REASONS[k]: int(total[k]) for k in REASONS if total[k]}


def complete(root: Any, attrs: dict[str, Any], partial: Path, out: str | Path) -> Path:
    """Mark the run complete and rename ``<out>.partial`` to ``out``."""
    attrs["complete"] = True
    root.attrs["ncm"] = attrs
    return finalize(partial, Path(out))
