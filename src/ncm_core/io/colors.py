"""Class colours shared by figures, OME-Zarr label metadata and napari layers.

The tables are matplotlib's qualitative colormaps ``tab10``, ``tab20`` and ``tab20c`` (the Tableau
palettes), copied as data so that colouring a prediction does not import matplotlib; a test checks
them against matplotlib's own colormaps.
"""

from __future__ import annotations

from collections.abc import Sequence

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


#: the 12 NCM classes of the SEM study (composition x state, as :data:`ncm_core.data.synth.CLASS_NAMES`):
#: composition picks the hue family and state the shade (tab20c), so related classes look related
NCM_CLASS_COLORS: dict[str, RGBA] = {
    f"{comp}_{state}": table_color("tab20c", 4 * c + s)
    for c, comp in enumerate(("NCM333", "NCM523", "NCM622", "NCM811"))
    for s, state in enumerate(("pristine", "formation", "cycled100"))
}


def _name_hash(name: str) -> int:
    """A hash of ``name`` that is the same in every process (Python's ``hash`` of a str is salted)."""
    import zlib

    return zlib.crc32(name.encode("utf-8"))


def class_colors(classes: int | Sequence[str]) -> list[RGBA]:
    """RGBA colours for classes, one per class, the same wherever a class appears.

    Given class *names*, a class's colour follows its name, not its position: the 12 NCM classes
    have fixed colours (:data:`NCM_CLASS_COLORS`); another name takes the tab20 colour its name
    hashes to, or the next free one if an earlier name (in sorted order) has it. The colours
    therefore depend only on the set of names, never on their order, so a truth map (the
    sample's order), a bundle (sorted names) and an annotation layer (the user's order) agree.
    Given a number ``n``, the colours of classes 0..n-1 by position (old behaviour).
    """
    if isinstance(classes, int):
        n = classes
        if n == 12:
            return list(NCM_CLASS_COLORS.values())
        name = "tab10" if n <= 10 else "tab20"
        return [table_color(name, k % len(TABLES[name])) for k in range(n)]
    names = [str(c) for c in classes]
    palette = [table_color("tab20", k) for k in range(20)]
    taken = {NCM_CLASS_COLORS[n] for n in names if n in NCM_CLASS_COLORS}
    chosen: dict[str, RGBA] = {n: NCM_CLASS_COLORS[n] for n in names if n in NCM_CLASS_COLORS}
    for n in sorted(set(names) - set(chosen)):
        k = _name_hash(n) % 20
        free = [palette[(k + d) % 20] for d in range(20) if palette[(k + d) % 20] not in taken]
        chosen[n] = free[0] if free else palette[k]
        taken.add(chosen[n])
    return [chosen[n] for n in names]
