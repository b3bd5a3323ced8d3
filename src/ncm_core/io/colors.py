"""Class colours shared by figures, OME-Zarr label metadata and napari layers.

The tables are matplotlib's qualitative colormaps ``tab10``, ``tab20`` and ``tab20c`` (the Tableau
palettes), copied as data so that colouring a prediction does not import matplotlib; a test checks
them against matplotlib's own colormaps.
"""

from __future__ import annotations

RGBA = tuple[float, float, float, float]

#: matplotlib's qualitative colour tables, as 8-bit RGB hex (alpha 1)
TABLES: dict[str, tuple[str, ...]] = {
    "tab10": ("1f77b4", "ff7f0e", "2ca02c", "d62728", "9467bd", "8c564b", "e377c2", "7f7f7f", "bcbd22", "17becf"),
    "tab20": (
        "1f77b4", "aec7e8", "ff7f0e", "ffbb78", "2ca02c", "98df8a", "d62728", "ff9896", "9467bd", "c5b0d5",
        "8c564b", "c49c94", "e377c2", "f7b6d2", "7f7f7f", "c7c7c7", "bcbd22", "dbdb8d", "17becf", "9edae5",
    ),
    "tab20c": (
        "3182bd", "6baed6", "9ecae1", "c6dbef", "e6550d", "fd8d3c", "fdae6b", "fdd0a2", "31a354", "74c476",
        "a1d99b", "c7e9c0", "756bb1", "9e9ac8", "bcbddc", "dadaeb", "636363", "969696", "bdbdbd", "d9d9d9",
    ),
}  # fmt: skip


def table_color(name: str, k: int) -> RGBA:
    """Colour ``k`` of table ``name`` as RGBA floats in [0, 1], as ``matplotlib.colormaps[name](k)``."""
    h = TABLES[name][k]
    return (int(h[0:2], 16) / 255, int(h[2:4], 16) / 255, int(h[4:6], 16) / 255, 1.0)


def class_colors(n: int) -> list[RGBA]:
    """Distinct RGBA colours for ``n`` classes.

    For the 12 NCM classes, composition picks the hue family and state the
    shade (tab20c), so related classes look related.
    """
    if n == 12:
        return [table_color("tab20c", 4 * (k // 3) + (k % 3)) for k in range(n)]
    name = "tab10" if n <= 10 else "tab20"
    return [table_color(name, k % len(TABLES[name])) for k in range(n)]
