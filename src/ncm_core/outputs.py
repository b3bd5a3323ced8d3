"""Outputs that never look complete before they are, never touch an input, and never replace what is not ours.

Every writer in ncm_core goes through :func:`check_output` (refuse an output that is, contains or lies
inside one of the task's inputs; refuse an existing output unless asked to replace it, in the same words
everywhere; and replace only what napari-ncm wrote, recognised by :func:`output_kind`) and
:func:`atomic_output` or :func:`finalize` (write under ``<out>.partial``, then replace ``out`` in one
step). A crash or a cancel leaves at most a ``.partial`` beside the output, never a half-written ``out``.
A run whose output will not fit on the disk is refused before it starts (:func:`check_space`), and a
disk that fills up anyway ends the run in one line with the ``.partial`` removed (:func:`disk_full`).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ncm_core.errors import NcmError

OUTPUT_EXISTS = "output exists; choose another or pass --overwrite (API: overwrite=True)"
#: the Software tag of the single image files napari-ncm writes (TIFF tag 305, a PNG text chunk):
#: what lets --overwrite recognise them (:func:`software_tag`, :func:`output_kind`)
SOFTWARE = "napari-ncm"
#: the file that marks a folder of sample data written by ``ncm sample``
SAMPLE_MARKER = "ncm-sample.json"


def write_sample_marker(folder: Path, kind: str, seed: int) -> None:
    """Mark ``folder`` as sample data written by napari-ncm (so ``--overwrite`` may replace it)."""
    (folder / SAMPLE_MARKER).write_text(json.dumps({"format": "ncm-sample", "kind": kind, "seed": seed}))


def partial_path(out: str | Path) -> Path:
    """Where ``out`` is written until it is complete."""
    out = Path(out)
    return out.with_name(out.name + ".partial")


def _json(path: Path) -> dict[str, Any]:
    try:
        d = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    return d if isinstance(d, dict) else {}


def _format(name: str, prefix: str = "ncm-") -> Callable[[Path], bool]:
    """A folder holding JSON file ``name`` whose ``format`` starts with ``prefix``."""
    return lambda p: str(_json(p / name).get("format", "")).startswith(prefix)


def _zarr_ours(p: Path) -> bool:
    """A zarr group (v3 ``zarr.json`` or v2 ``.zattrs``) whose attributes carry our ``ncm`` metadata."""
    attrs = _json(p / "zarr.json").get("attributes") or _json(p / ".zattrs")
    return isinstance(attrs, dict) and "ncm" in attrs


def _files(*names: str) -> Callable[[Path], bool]:
    return lambda p: all((p / n).exists() for n in names)


#: What napari-ncm leaves in each output it writes: (what it is, a test of a folder). Writers of a new
#: kind of output add theirs with :func:`register_marker`.
MARKERS: list[tuple[str, Callable[[Path], bool]]] = [
    ("a zarr group written by napari-ncm", _zarr_ours),
    ("a model bundle", _format("config.json", "ncm-bundle")),
    ("a segmentation bundle", _format("config.json", "ncm-segmenter")),
    ("a tile set", _format("manifest.json", "ncm-tiles")),
    ("a pretrained backbone", _format("backbone.json", "ncm-backbone")),
    ("a sections folder", _format("sections.json", "ncm-sections")),
    ("sample data", _format(SAMPLE_MARKER, "ncm-sample")),
    ("a training checkpoint", _files("state.json", "state.safetensors")),
    ("an unfinished training run", _files("checkpoint/state.json")),
    ("an explanation folder", _files("explanations.csv")),
    ("a tuning study", _files("study.journal")),
    ("an evaluation or cross-validation folder", _format("metrics.json")),
    ("a section prediction", _files("crops.csv", "summary.json")),
    ("a measurement folder", _format("measure.json", "ncm-measure")),
    ("the demo folder", _files("data/sem_frames")),
]


def register_marker(what: str, test: Callable[[Path], bool]) -> None:
    """Recognise one more kind of napari-ncm output: ``test(folder)`` is True for it."""
    if (what, test) not in MARKERS:
        MARKERS.append((what, test))


def _file_software(p: Path) -> str | None:
    """The Software tag of a TIFF or PNG file (None for other files and unreadable ones)."""
    try:
        with p.open("rb") as f:
            head = f.read(8)
        if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
            import tifffile

            with tifffile.TiffFile(p) as t:
                tag = t.pages[0].tags.get("Software")
                return None if tag is None else str(tag.value)
        if head == b"\x89PNG\r\n\x1a\n":
            from PIL import Image

            with Image.open(p) as im:
                return im.info.get("Software")
    except Exception:  # noqa: BLE001 - anything unreadable is not ours
        return None
    return None


def software_tag(suffix: str) -> dict[str, Any]:
    """Writer keywords that tag a ``.tif``/``.png`` file as napari-ncm's (tifffile ``software``, a PNG text chunk)."""
    if suffix.lower() == ".png":
        from PIL.PngImagePlugin import PngInfo

        info = PngInfo()
        info.add_text("Software", SOFTWARE)
        return {"pnginfo": info}
    return {"software": SOFTWARE}


def output_kind(path: str | Path) -> str | None:
    """What napari-ncm output ``path`` is ("a model bundle", "an image file written by napari-ncm", ...), or
    None when we did not write it. Folders are recognised by :data:`MARKERS`, TIFF and PNG files by their
    Software tag (:data:`SOFTWARE`)."""
    p = Path(path)
    if p.is_file() and not p.is_symlink():
        return "an image file written by napari-ncm" if _file_software(p) == SOFTWARE else None
    if not p.is_dir() or p.is_symlink():
        return None
    for what, test in MARKERS:
        try:
            if test(p):
                return what
        except OSError:
            continue
    return None


def _what(p: Path) -> str:
    """A few words on what ``p`` is, for a refusal."""
    if p.is_symlink():
        return "a symbolic link"
    if p.is_file():
        return "a file"
    if (p / "zarr.json").exists() or (p / ".zgroup").exists():
        return "a zarr group not written by napari-ncm"
    return "a folder not written by napari-ncm"


def input_path(x: Any) -> Path | None:
    """The path of an input (a path, or an object with a ``path``/``source``/``root`` path), else None."""
    if isinstance(x, (str, os.PathLike)):
        return Path(x).expanduser()
    for attr in ("path", "source", "root"):
        v = getattr(x, attr, None)
        if isinstance(v, (str, os.PathLike)) and str(v):
            return Path(v).expanduser()
    return None


def check_inputs(out: str | Path, inputs: Iterable[Any], *, inside_ok: bool = False) -> None:
    """Refuse an output that is, contains or lies inside one of ``inputs`` (paths; other values are skipped).

    ``inside_ok``: a new folder inside an input folder is allowed (e.g. an evaluation beside a bundle's files).
    """
    o = Path(out).expanduser().resolve()
    for x in inputs:
        p = input_path(x)
        if p is None or not p.exists():
            continue
        i = p.resolve()
        if o == i:
            raise NcmError(f"the output is an input ({p}); choose another output", out)
        if o in i.parents:
            raise NcmError(f"the output contains an input ({p}); choose another output", out)
        if i in o.parents and not inside_ok:
            raise NcmError(f"the output lies inside an input ({p}); choose another output", out)


def is_empty_folder(p: Path) -> bool:
    """An existing folder with nothing in it (replacing it loses nothing)."""
    return p.is_dir() and not p.is_symlink() and not any(p.iterdir())


def check_output(out: str | Path, overwrite: bool, inputs: Iterable[Any] = (), *, replace_any: bool = False) -> Path:
    """``out`` as a Path, or one clear error line before any work starts.

    Refused: an output that is, contains or lies inside one of ``inputs``; an existing output (an
    empty folder is not one) unless ``overwrite``; with ``overwrite``, anything that napari-ncm did not
    write (:func:`output_kind`), unless ``replace_any`` (a save dialog that asked the user already);
    a parent that is a file or not writable.
    """
    out = Path(out).expanduser()
    check_inputs(out, inputs)
    if (out.exists() or out.is_symlink()) and not is_empty_folder(out):
        if not overwrite:
            raise NcmError(OUTPUT_EXISTS, out)
        if not replace_any and output_kind(out) is None:
            what = "a file napari-ncm did not write" if out.is_file() and not out.is_symlink() else _what(out)
            raise NcmError(
                f"--overwrite only replaces what napari-ncm wrote, and this is {what}; "
                "choose another output or remove it yourself",
                out,
            )
    parent = out.resolve().parent
    for p in (parent, *parent.parents):
        if p.exists():
            if not p.is_dir():
                raise NcmError(f"cannot write here: {p} is a file, not a folder", out)
            if not os.access(p, os.W_OK):
                raise NcmError(f"cannot write here: {p} is not writable", out)
            break
    return out


def _existing(p: Path) -> Path:
    p = p.resolve()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _mb(n: float) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def check_space(out: str | Path, need: int, what: str = "the output") -> None:
    """Refuse, before work starts, an output of about ``need`` bytes on a disk with less free space."""
    where = _existing(Path(out).expanduser())
    free = shutil.disk_usage(where).free
    if need > free:
        raise NcmError(
            f"{what} needs about {_mb(need)}, but only {_mb(free)} are free on the disk that holds {where}; "
            "free some space or write elsewhere",
            out,
        )


def is_disk_full(exc: BaseException) -> bool:
    """True for the errors of a full disk or an exhausted quota."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def disk_full(partial: Path, out: str | Path) -> NcmError:
    """Remove the unfinished ``partial`` after a full disk and return the one-line error to raise."""
    size = sum(f.stat().st_size for f in partial.rglob("*") if f.is_file()) if partial.is_dir() else 0
    remove(partial)
    return NcmError(
        f"the disk filled up while writing; removed the unfinished output ({_mb(size)} in {partial.name}); "
        "free some space and run again",
        out,
    )


def remove(path: Path) -> None:
    """Remove a file or a folder tree (nothing if absent)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def finalize(partial: Path, out: Path) -> Path:
    """Replace ``out`` by the completed ``partial`` (one rename once any old ``out`` is gone)."""
    remove(out)
    partial.rename(out)
    return out


@contextmanager
def atomic_output(
    out: str | Path,
    overwrite: bool = False,
    folder: bool = True,
    *,
    inputs: Iterable[Any] = (),
    replace_any: bool = False,
) -> Iterator[Path]:
    """Write ``out`` under ``<out>.partial`` and rename it when the block completes.

    ``out`` is checked first (:func:`check_output` with ``inputs`` and ``replace_any``). The block
    receives the ``.partial`` path (created as an empty folder when ``folder``). A stale ``.partial``
    is replaced; on an error or a cancel the ``.partial`` is removed and ``out`` is left as it was.
    """
    out = check_output(out, overwrite, inputs, replace_any=replace_any)
    part = partial_path(out)
    remove(part)
    if folder:
        part.mkdir(parents=True)
    else:
        part.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield part
    except BaseException as exc:
        if is_disk_full(exc):
            raise disk_full(part, out) from None
        remove(part)
        raise
    finalize(part, out)


def check_training_output(out: str | Path, overwrite: bool, inputs: Iterable[Any] = ()) -> Path:
    """The bundle folder ``out`` of a training run, or one clear error line before training starts.

    Refused: an output that is, contains or lies inside an input; a file; a folder that holds a finished
    model bundle (and no unfinished checkpoint to resume) unless ``overwrite``. An unfinished run in
    ``out`` resumes as before.
    """
    out = Path(out).expanduser()
    check_inputs(out, inputs)
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise NcmError(f"the output is {_what(out)}, not a folder for a model bundle", out)
        bundle = _format("config.json", "ncm-bundle")(out) or _format("config.json", "ncm-segmenter")(out)
        finished = bundle and not (out / "checkpoint" / "state.json").exists()
        if finished and not overwrite:
            raise NcmError(
                "holds a finished model bundle; choose another folder or pass --overwrite to replace it "
                "(API: overwrite=True)",
                out,
            )
    return check_output(out, True, replace_any=True)  # the parent checks; nothing is removed here
