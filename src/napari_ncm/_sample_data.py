"""Sample data for napari's File > Open Sample menu (generated, deterministic, no download)."""

from __future__ import annotations

from typing import Any

from napari_ncm._layers import LayerData, class_labels_kwargs


def sem_mosaic() -> list[LayerData]:
    """A 1100 x 1500 px SEM mosaic of 12 NCM class regions and its ground-truth class map."""
    from ncm_core.data import synth
    from ncm_core.io.colors import class_colors

    m = synth.sem_mosaic()
    scale = (m.pixel_size, m.pixel_size)
    img_kw: dict[str, Any] = {
        "name": "SEM mosaic",
        "scale": scale,
        "contrast_limits": (0, 255),
        "metadata": {"pixel_size": m.pixel_size, "unit": "micrometer"},
    }
    names = list(m.class_names)
    truth_kw = {
        "name": "truth",
        "scale": scale,
        "opacity": 0.35,
        "visible": False,
        **class_labels_kwargs(names, class_colors(names)),
    }
    return [(m.image, img_kw, "image"), (m.truth.astype("uint8") + 1, truth_kw, "labels")]


def sem_frame() -> list[LayerData]:
    """One 544 x 512 px SEM frame (NCM811 after 100 cycles) with its information bar."""
    from ncm_core.data import synth

    img = synth.sem_frame("NCM811", "cycled100", (544, 512), info_bar=32, seed=0)
    s = synth.SEM_PIXEL_SIZE_UM
    return [(img, {"name": "NCM811_cycled100 frame", "scale": (s, s), "contrast_limits": (0, 255)}, "image")]


def cross_section() -> list[LayerData]:
    """An RGB light-microscopy cross-section of a calendered cathode (porosity 35 %)."""
    from ncm_core.data import synth

    s = synth.cross_section(0.35)
    meta = {"porosity": s.porosity, "tilt_deg": s.tilt_deg, "thickness_um": s.thickness_um, "targets": s.targets}
    return [(s.image, {"name": "cross-section", "scale": (s.pixel_size,) * 2, "rgb": True, "metadata": meta}, "image")]


def phase_volume() -> list[LayerData]:
    """A 64^3 voxel pore / solid volume of separate solid spheres of one size (0.1 um voxels), for the
    Measure widget: its truth (porosity, d50) is in the layer's metadata."""
    from ncm_core.data.synth_volumes import CLASSES, sphere_pack
    from ncm_core.io.colors import class_colors

    s = sphere_pack((64, 64, 64), radius=6, solid_fraction=0.3, seed=0)
    names = list(CLASSES)
    meta = {"truth": {"porosity": s.truth["porosity"], "d50_um": s.truth["d50"] * 0.1}}
    kw = {
        "name": "phase volume",
        "scale": (0.1,) * 3,
        "metadata": meta,
        **class_labels_kwargs(names, class_colors(names)),
    }
    return [(s.labels, kw, "labels")]
