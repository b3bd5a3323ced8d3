"""The options of a measurement (``ncm measure``, :func:`ncm_core.workflows.measure.measure`, the Measure
widget): one home for each default."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ncm_core.errors import NcmError


@dataclass(frozen=True)
class MeasureOptions:
    """Options of :func:`ncm_core.workflows.measure.measure`.

    ``classes``: class names "a,b,c" (or a list) for values 1, 2, 3, or ``{value: name}`` (default: the
    file's NGFF class names or ``classes.txt`` beside it); ``pore``: the pore class (default: the class
    named pore, void, electrolyte or resin); ``particle_class``: the phase whose particles are measured
    (default: the class
    named active / particle, else the largest solid class); ``labels``: which label image of an OME-Zarr
    (default: the first); ``pixel_size``: micrometres per pixel (default: the file's; none: pixels, with
    a warning). ``axis``: the through-plane axis of profiles and tortuosity (0 = rows of a 2D image, the
    first axis of a volume); ``profile_bin``: profile bin width in pixels; ``sections``: ``sections.json``
    (or its folder) from ``ncm sections``, for a profile through the thickness measured from the
    collector; ``regions``: a label image of regions (same shape; a path or an array) measured one by one; ``region``:
    ``y0:y1,x0:x1[,z0:z1]``, the part for in-memory measures (particles, local thickness, correlation,
    tortuosity; default: the whole image when it fits in memory); ``separation``: snow, watershed or none;
    ``particles``, ``tortuosity``, ``figures``: switch those parts off; ``device`` for tortuosity.
    """

    classes: str | tuple[str, ...] | dict[int, str] | None = None
    pore: str | None = None
    particle_class: str | None = None
    labels: str | None = None
    pixel_size: float | None = None
    axis: int = 0
    profile_bin: float = 1.0
    sections: str | None = None
    regions: Any = None
    region: str | None = None
    separation: str = "snow"
    particles: bool = True
    tortuosity: bool = True
    figures: bool = True
    device: str = "auto"
    overwrite: bool = False


REGION_HELP = "y0:y1,x0:x1 for an image, y0:y1,x0:x1,z0:z1 for a volume (pixels; an end may be left out)"


def parse_region(text: str | None, shape: tuple[int, ...]) -> tuple[slice, ...]:
    """``"y0:y1,x0:x1[,z0:z1]"`` -> slices in the array's axis order (``(z, y, x)`` for a volume),
    checked against ``shape``; None -> the whole array."""
    if text is None or not str(text).strip():
        return tuple(slice(0, s) for s in shape)
    parts = [p.strip() for p in str(text).split(",")]
    want = 2 if len(shape) == 2 else 3
    if len(parts) != want or not all(re.fullmatch(r"-?\d*:-?\d*", p) for p in parts):
        raise NcmError(f"region {text!r} is not {REGION_HELP}")
    order = [0, 1] if want == 2 else [1, 2, 0]  # y, x[, z] -> array axes
    out: list[slice] = [slice(0)] * want
    for p, ax in zip(parts, order, strict=True):
        a, b = p.split(":")
        lo, hi, _ = slice(int(a) if a else None, int(b) if b else None).indices(shape[ax])
        if hi - lo < 2:
            raise NcmError(
                f"region {text!r} leaves {max(hi - lo, 0)} pixels along an axis of {shape[ax]}: {REGION_HELP}"
            )
        out[ax] = slice(lo, hi)
    return tuple(out)
