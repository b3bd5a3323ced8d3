"""Where a cross-section lies in its mosaic: the section frame, the active-layer rectangle and the crops.

:class:`SectionGeometry` is what :func:`~ncm_core.data.section_detection.detect_section` finds; it maps
section-frame coordinates to mosaic pixels and draws the collector and the crops.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


@dataclass
class SectionGeometry:
    """Where the section lies in its mosaic, and the crops cut from it.

    The section frame maps (row ``r``, column ``c``) to mosaic pixel
    ``origin + c * u + r * d`` (``(y, x)`` vectors): ``u`` runs along the
    collector, ``d`` points from the surface towards the collector; row 0 is
    the collector's top edge.
    """

    source: str
    shape: tuple[int, int]  # mosaic (rows, columns)
    angle_deg: float  # collector angle, counter-clockwise on screen
    turned: bool  # the collector was at the top: the frame is turned by 180 degrees
    origin: tuple[float, float]  # (y, x) of section-frame (0, 0)
    u: tuple[float, float]
    d: tuple[float, float]
    columns: tuple[float, float]  # section-frame column range where the collector is visible
    pixel_size: float | None
    thickness_px: float  # median collector-to-surface distance
    surface: list[tuple[float, float]] = field(default_factory=list)  # (column, row) per strip
    rectangle: tuple[int, int, int, int] = (0, 0, 0, 0)  # r0, r1, c0, c1 in the section frame
    crop: tuple[int, int] = (224, 672)
    crops: list[tuple[int, int]] = field(default_factory=list)  # (r0, c0) of each crop in the section frame
    edge_residual_px: float = 0.0  # RMS distance of the strip edges from the fitted line

    @property
    def thickness_um(self) -> float | None:
        return None if self.pixel_size is None else self.thickness_px * self.pixel_size

    def describe(self) -> str:
        """One line: collector angle, active-layer thickness (um when the pixel size is known), crops."""
        th = f"{self.thickness_um:.1f} um" if self.thickness_um is not None else f"{self.thickness_px:.0f} px"
        return (
            f"collector {self.angle_deg:+.2f} deg{' (turned 180)' if self.turned else ''}, "
            f"active layer {th}, {len(self.crops)} crops"
        )

    def to_mosaic(self, r: Any, c: Any) -> np.ndarray:
        """Section-frame (row, column) -> mosaic (y, x); broadcasts, last axis is (y, x)."""
        r, c = np.asarray(r, np.float64), np.asarray(c, np.float64)
        o, u, d = (np.asarray(v, np.float64) for v in (self.origin, self.u, self.d))
        return o + c[..., None] * u + r[..., None] * d

    def polygon(self, r0: float, c0: float, h: float, w: float, outline: bool = False) -> np.ndarray:
        """Mosaic (y, x) corners of a section-frame rectangle of ``h`` x ``w`` pixels, clockwise: the
        corner pixels' centres, or with ``outline`` the outer edges of those pixels (for drawing)."""
        e = 0.5 if outline else 0.0
        rr = np.array([r0 - e, r0 - e, r0 + h - 1 + e, r0 + h - 1 + e])
        cc = np.array([c0 - e, c0 + w - 1 + e, c0 + w - 1 + e, c0 - e])
        return self.to_mosaic(rr, cc)

    def crop_polygons(self, outline: bool = False) -> list[np.ndarray]:
        return [self.polygon(r0, c0, *self.crop, outline=outline) for r0, c0 in self.crops]

    def collector_line(self) -> np.ndarray:
        """Mosaic (y, x) end points of the collector's top edge."""
        return self.to_mosaic([0.0, 0.0], list(self.columns))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["thickness_um"] = self.thickness_um
        return d
