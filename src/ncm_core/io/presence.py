"""Which chunks of a zarr array are stored: zarr reads an absent chunk as the fill value, without a word.

A chunk can be absent because its writer left out chunks that held only the fill value (zarr-python's
default, ``write_empty_chunks=False``) or because it was lost (a deleted file, an interrupted copy).
The two look the same on disk, so napari-ncm reports absent chunks of an image it predicts on
(:mod:`ncm_core.inference.reading`) unless the user says the store is sparse on purpose
(``missing_chunks="fill"``); its own image writer stores every chunk (:func:`ncm_core.io.ngff.write_image`).
"""

from __future__ import annotations

import math
from typing import Any

import dask.array as da
import numpy as np


def missing_map(arr: Any) -> da.Array | None:
    """A lazy boolean array shaped like the zarr array ``arr``, True where its chunk (shard) is absent from
    the store; None when every chunk is stored (the usual case) or the store cannot be listed."""
    try:
        # zarr 3 has no public "which chunks are stored" query by key; _shards_initialized lists the
        # array's stored keys once (one listing, not one request per chunk)
        from zarr.core.array import _shards_initialized
        from zarr.core.sync import sync

        stored = set(sync(_shards_initialized(arr._async_array)))
        grid = tuple(arr.shards or arr.chunks)
        encode = arr.metadata.encode_chunk_key
    except Exception:  # another zarr version, a store that cannot be listed: nothing to report
        return None
    n_chunks = math.prod(-(-s // c) for s, c in zip(arr.shape, grid))
    if len(stored) >= n_chunks:
        return None

    def block(block_info: Any = None) -> np.ndarray:
        info = block_info[None]
        absent = encode(tuple(info["chunk-location"])) not in stored
        return np.broadcast_to(np.bool_(absent), info["chunk-shape"])  # no memory per chunk

    return da.map_blocks(block, chunks=da.core.normalize_chunks(grid, arr.shape), dtype=bool, meta=np.array((), bool))
