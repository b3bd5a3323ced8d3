"""A cache of exported ONNX graphs, so that a short prediction can skip PyTorch entirely.

Exporting a model to ONNX needs PyTorch (and timm to rebuild it); loading an exported graph into
ONNX Runtime needs neither. Graphs are cached per bundle weights (SHA-256 of ``model.safetensors``),
exported part (``"model"``, ``"features"`` for OOD scores, ``"trunk"`` for dense mode), input size
and channels, and the versions of PyTorch (the exporter) and ONNX Runtime.

Location: ``$NCM_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/napari-ncm/onnx`` or
``~/.cache/napari-ncm/onnx``; never inside a bundle (outputs never touch inputs). Files are plain
ONNX protobuf (nothing pickled), written under a temporary name and renamed; a file that cannot be
loaded, or that names another key in its metadata, is removed and the graph exported again. The
cache is never required: without it (or when it cannot be written) the graph is exported in memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

from ncm_core.inference.engine import hash_weights

KEY_FIELD = "ncm_cache_key"  # the cache key, stored in the graph's metadata


def cache_dir() -> Path:
    """Folder of the cached graphs (see the module's description); not created here."""
    if os.environ.get("NCM_CACHE_DIR"):
        return Path(os.environ["NCM_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "napari-ncm" / "onnx"


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def weights_digest(bundle: Any) -> str:
    """SHA-256 of the bundle's weights (the safetensors file, or the in-memory state), kept on the bundle."""
    memo = bundle.__dict__.setdefault("_ncm_digest", {})
    if "sha256" not in memo:
        h = hashlib.sha256()
        hash_weights(bundle, h)
        memo["sha256"] = h.hexdigest()
    return memo["sha256"]


def cache_key(bundle: Any, part: str) -> str:
    """The key of ``bundle``'s graph for ``part``: weights, part, input, exporter and runtime versions."""
    spec = bundle.config.input
    what = {
        "weights": weights_digest(bundle),
        "part": part,
        "input_size": list(spec.input_size),
        "in_chans": spec.in_chans,
        "torch": _version("torch"),
        "onnxruntime": _version("onnxruntime"),
    }
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()


def cache_path(bundle: Any, part: str) -> Path:
    """Where ``bundle``'s graph for ``part`` is (or would be) cached."""
    return cache_dir() / f"{part}-{cache_key(bundle, part)[:40]}.onnx"


def ort_threads() -> int:
    """Threads for ONNX Runtime: PyTorch's count when it is loaded (dask workers limit it), else
    ``$OMP_NUM_THREADS`` when set (as PyTorch would), else 0 (ONNX Runtime's default: the physical
    cores, as PyTorch's)."""
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "get_num_threads"):
        return int(torch.get_num_threads())
    try:
        return max(0, int(os.environ.get("OMP_NUM_THREADS", "0")))
    except ValueError:
        return 0


def session(graph: bytes | str, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session for a serialised graph (or a file path)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = ort_threads() if threads is None else threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(graph, so, providers=["CPUExecutionProvider"])


def load_cached(bundle: Any, part: str, threads: int | None = None) -> Any | None:
    """The cached session of ``bundle``'s ``part``, or None (absent; a damaged file is removed)."""
    path = cache_path(bundle, part)
    if not path.is_file():
        return None
    try:
        sess = session(str(path), threads)
        if sess.get_modelmeta().custom_metadata_map.get(KEY_FIELD) != cache_key(bundle, part):
            raise ValueError("the graph was cached for another model")
        return sess
    except Exception:  # truncated, not ONNX, another key: export again
        discard(path)
        return None


def discard(path: Path) -> None:
    """Remove a cache file, quietly."""
    with contextlib.suppress(OSError):
        path.unlink()


def tag(graph: bytes, key: str) -> bytes:
    """``graph`` with ``key`` in its metadata (so a cache file can be checked against its name)."""
    import onnx

    model = onnx.load_model_from_string(graph)
    entry = model.metadata_props.add()
    entry.key, entry.value = KEY_FIELD, key
    return model.SerializeToString()


def model_matches_file(bundle: Any) -> bool:
    """Whether the loaded model still holds the weights file on disk (not rewritten since it was loaded),
    so that a graph exported from it may be cached under the file's hash."""
    recorded = bundle.__dict__.get("_ncm_weights_stat")
    if recorded is None or bundle.path is None:
        return False
    try:
        st = (Path(bundle.path) / "model.safetensors").stat()
    except OSError:
        return False
    return (st.st_mtime_ns, st.st_size) == tuple(recorded)


def save(bundle: Any, part: str, graph: bytes) -> Path | None:
    """Write ``graph`` (already tagged) to the cache atomically; None when the cache cannot be written."""
    path = cache_path(bundle, part)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(graph)
        os.replace(tmp, path)
        return path
    except OSError:
        if tmp is not None:
            discard(Path(tmp))
        return None
