"""Class colours shared by figures, OME-Zarr label metadata and napari layers."""

from __future__ import annotations


def class_colors(n: int) -> list[tuple[float, float, float, float]]:
    """Distinct RGBA colours for ``n`` classes.

    For the 12 NCM classes, composition picks the hue family and state the
    shade (tab20c), so related classes look related.
    """
    import matplotlib

    if n == 12:
        cmap = matplotlib.colormaps["tab20c"]
        return [tuple(float(v) for v in cmap(4 * (k // 3) + (k % 3))) for k in range(n)]
    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return [tuple(float(v) for v in cmap(k % cmap.N)) for k in range(n)]
