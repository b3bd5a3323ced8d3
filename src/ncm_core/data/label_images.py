"""Images with label images for training a segmenter: ``DATA/<stem>.<ext>`` + ``DATA/<stem>_labels.<ext>``.

A label image holds 0 for an unlabelled pixel and k for class k (1-based), so sparse strokes painted in
napari and dense ground truth read the same way. Class names come from ``classes.txt`` in DATA (one name
a line, class 1 first) or from the caller. Everything a user can get wrong is refused in one line naming
the file: a label image whose size differs from its image, label values with no class name, labels of
only one class, no labelled pixel at all, images with different channel counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ncm_core.errors import NcmError

#: suffixes read as images and label images
IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
LABEL_SUFFIXES = (".png", ".tif", ".tiff")
#: stems ending so are companions of an image, never images themselves
COMPANIONS = ("_labels", "_truth")
CLASSES_FILE = "classes.txt"


@dataclass
class LabelSet:
    """Images ``(C, H, W)`` float32 (raw values) with their label images ``(H, W)`` (0 = unlabelled, k = class k)."""

    images: list[np.ndarray]
    labels: list[np.ndarray]
    names: list[str]  # image stems
    classes: list[str]  # class k (1-based label value) is classes[k - 1]
    root: Path | None = None
    pixel_size: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def channels(self) -> int:
        return int(self.images[0].shape[0])

    def counts(self) -> np.ndarray:
        """Labelled pixels per class (index k - 1 for class k)."""
        total = np.zeros(len(self.classes) + 1, np.int64)
        for lab in self.labels:
            total += np.bincount(lab.ravel(), minlength=len(total))[: len(total)]
        return total[1:]

    def __len__(self) -> int:
        return len(self.images)


def read_classes(path: str | Path) -> list[str]:
    """Class names from a ``classes.txt`` (one a line; blank lines and ``#`` comments left out)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise NcmError(f"cannot read the class list ({exc})", path) from None
    names = [s.strip() for s in lines if s.strip() and not s.strip().startswith("#")]
    if not names:
        raise NcmError("the class list is empty: one class name a line, class 1 first", path)
    if len(set(names)) != len(names):
        raise NcmError(f"the class list names a class twice ({', '.join(names)})", path)
    return names


def _decode(path: Path, what: str) -> np.ndarray:
    """A TIFF (tifffile) or PIL image file as stored (a palette PNG keeps its indices: label values), or
    one line naming the file."""
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            return np.asarray(tifffile.imread(path))
        from PIL import Image

        with Image.open(path) as im:
            return np.asarray(im)
    except Exception as exc:
        raise NcmError(f"not a readable {what} ({type(exc).__name__}: {exc})", path) from None


def _read_image(path: Path) -> np.ndarray:
    """An image file as ``(C, H, W)`` float32 of its raw values."""
    from ncm_core.io.pixels import check_finite

    arr = check_finite(_decode(path, "image"), path)
    if arr.ndim == 2:
        arr = arr[None]
    elif arr.ndim == 3 and arr.shape[-1] <= 4 and arr.shape[0] > 4:
        arr = np.moveaxis(arr, -1, 0)
    elif arr.ndim != 3:
        raise NcmError(f"expected a 2D grey or colour image, got shape {arr.shape}", path)
    if arr.shape[0] == 4:  # RGBA: the alpha channel carries no phase
        arr = arr[:3]
    return arr.astype(np.float32)


def _read_labels(path: Path) -> np.ndarray:
    """A label image as an ``(H, W)`` integer array."""
    lab = _decode(path, "label image")
    if lab.ndim == 3 and lab.shape[-1] in (3, 4) and (lab[..., :3] == lab[..., :1]).all():
        lab = lab[..., 0]  # a grey label image saved as RGB
    if lab.ndim != 2:
        raise NcmError(f"a label image must be one channel of class numbers, got shape {lab.shape}", path)
    if lab.dtype.kind == "f" and (not np.isfinite(lab).all() or (lab != np.round(lab)).any()):
        raise NcmError("label values must be whole numbers (0 = unlabelled, k = class k)", path)
    if lab.dtype.kind not in "uif" or (lab.size and lab.min() < 0):
        raise NcmError("label values must be whole numbers of 0 or more (0 = unlabelled, k = class k)", path)
    return lab.astype(np.int32)


def find_pairs(data_dir: str | Path) -> list[tuple[Path, Path]]:
    """``(image, label image)`` pairs in ``data_dir``: images without a ``<stem>_labels`` file are left out."""
    root = Path(data_dir)
    if not root.is_dir():
        raise NcmError("no such folder (expected images with <stem>_labels.png/.tif label images)", root)
    files = sorted(p for p in root.iterdir() if p.is_file())
    labels = {
        p.stem[: -len("_labels")]: p for p in files if p.stem.endswith("_labels") and p.suffix.lower() in LABEL_SUFFIXES
    }
    pairs = []
    for p in files:
        if p.suffix.lower() in IMAGE_SUFFIXES and not p.stem.endswith(COMPANIONS) and p.stem in labels:
            pairs.append((p, labels[p.stem]))
    if not pairs:
        raise NcmError("no image with a label image: name them <stem>.png and <stem>_labels.png (or .tif)", root)
    return pairs


def check_labels(labels: Sequence[np.ndarray], classes: Sequence[str], where: str | Path | None) -> np.ndarray:
    """Labelled pixels per class; one line when the labels cannot train a segmenter (values without a class
    name, no labelled pixel, only one class labelled)."""
    top = max((int(lab.max()) for lab in labels if lab.size), default=0)
    if top > len(classes):
        raise NcmError(
            f"label value {top} has no class name: the class list names {len(classes)} "
            f"({', '.join(classes)}); label k is class k",
            where,
        )
    counts = np.zeros(len(classes) + 1, np.int64)
    for lab in labels:
        counts += np.bincount(lab.ravel(), minlength=len(counts))
    counts = counts[1:]
    if not counts.any():
        raise NcmError("no labelled pixel: paint at least two classes (label value k = class k, 0 = unlabelled)", where)
    present = np.flatnonzero(counts)
    if len(present) < 2:
        raise NcmError(
            f"only class {classes[present[0]]!r} is labelled: a segmenter needs pixels of at least two classes",
            where,
        )
    return counts


def load_label_set(data_dir: str | Path, classes: Sequence[str] | None = None) -> LabelSet:
    """Read every ``<stem>.<png|tif|tiff|jpg>`` of ``data_dir`` that has a ``<stem>_labels.<png|tif|tiff>``.

    ``classes`` names class 1, 2, ... (else ``classes.txt`` in ``data_dir``; else ``class_1``, ...). Label
    values above the number of classes, a label image of another size than its image, images with
    different channel counts, no labelled pixel, or only one labelled class: one :class:`NcmError` each.
    """
    root = Path(data_dir)
    pairs = find_pairs(root)
    images, labels, names = [], [], []
    for img_path, lab_path in pairs:
        img = _read_image(img_path)
        lab = _read_labels(lab_path)
        if lab.shape != img.shape[1:]:
            raise NcmError(
                f"label image is {lab.shape[0]}x{lab.shape[1]} px, its image {img_path.name} "
                f"{img.shape[1]}x{img.shape[2]} px: they must be the same size",
                lab_path,
            )
        if images and img.shape[0] != images[0].shape[0]:
            raise NcmError(
                f"image has {img.shape[0]} channel(s), {names[0]} has {images[0].shape[0]}: "
                "all images of a training set need the same channels",
                img_path,
            )
        images.append(img)
        labels.append(lab)
        names.append(img_path.stem)
    notes = []
    if classes is None and (root / CLASSES_FILE).is_file():
        classes = read_classes(root / CLASSES_FILE)
    elif classes is None:
        top = max(int(lab.max()) for lab in labels)
        classes = [f"class_{k}" for k in range(1, max(top, 2) + 1)]
        notes.append(f"no {CLASSES_FILE}: classes named {', '.join(classes)}")
    classes = [str(c).strip() for c in classes]
    if len(set(classes)) != len(classes) or not all(classes):
        raise NcmError(f"class names must be distinct and not empty, got {', '.join(classes)}", root)
    where = root / CLASSES_FILE if (root / CLASSES_FILE).is_file() else root
    counts = check_labels(labels, classes, where)
    missing = [c for c, n in zip(classes, counts) if n == 0]
    if missing:
        notes.append(f"no pixel of class {', '.join(missing)} is labelled: it will never be predicted")
    return LabelSet(images, labels, names, list(classes), root, _pixel_size(pairs[0][0]), notes)


def _pixel_size(path: Path) -> float | None:
    """The pixel size the first image's metadata gives (OME-TIFF), else None."""
    if path.suffix.lower() not in (".tif", ".tiff"):
        return None
    try:
        from ncm_core.io.mosaic import open_mosaic

        return open_mosaic(path).pixel_size
    except NcmError:
        return None


#: an image of at most this many pixels is sampled by striding; a larger (lazy) one by windows
SAMPLE_WHOLE = 16 * 2**20


def sample_pixels(image: Any, windows: int = 8, side: int = 128) -> np.ndarray:
    """About a million pixels of ``image`` ``(C, H, W)`` (numpy, zarr or dask) to fit its normalisation: every
    n-th pixel of a small image; of a large (lazy) one, ``windows`` x ``windows`` windows of ``side`` pixels
    spread over it (a strided read of a lazy mosaic would read all of it)."""
    h, w = (int(v) for v in image.shape[1:])
    if h * w <= SAMPLE_WHOLE:
        step = max(1, int(np.ceil(np.sqrt(h * w / 1_000_000))))
        return np.asarray(image[:, ::step, ::step], np.float32)
    ys = np.linspace(0, max(h - side, 0), windows).astype(int)
    xs = np.linspace(0, max(w - side, 0), windows).astype(int)
    parts = [np.asarray(image[:, y : y + side, x : x + side], np.float32) for y in ys for x in xs]
    return np.concatenate([p.reshape(p.shape[0], -1) for p in parts], axis=1)[:, None]


def image_range(image: Any) -> tuple[float, float]:
    """The robust ``(low, high)`` of one image ``(C, H, W)`` (:func:`fit_normalization` of
    :func:`sample_pixels`): what a per-image normalisation scales that whole image by, measured once, so that
    every window of it is scaled alike."""
    return fit_normalization([sample_pixels(image)])


def fit_normalization(
    images: Sequence[np.ndarray], low: float = 0.5, high: float = 99.5, max_pixels: int = 2_000_000
) -> tuple[float, float]:
    """Robust ``(low, high)`` raw values over all training images (percentiles ``low`` and ``high`` of a
    fixed, evenly strided sample of at most ``max_pixels`` pixels), for :class:`SegmenterConfig`'s
    ``norm_low``/``norm_high``: both engines scale pixels by these fixed values, never per window."""
    total = sum(int(np.asarray(im).size) for im in images)
    step = max(1, total // max_pixels)
    sample = np.concatenate([np.asarray(im, np.float32).ravel()[::step] for im in images])
    sample = sample[np.isfinite(sample)]  # a NaN (a missing chunk, a masked pixel) would make every value NaN
    if not sample.size:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(sample, [low, high]))
    if hi <= lo:
        hi = lo + 1.0
    return lo, hi
