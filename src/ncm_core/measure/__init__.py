"""Microstructure numbers from phase maps (2D images and 3D volumes).

Pure functions on numpy label arrays (or lazy zarr / dask ones where the measure is a sum over pixels),
built on the well-kept libraries: PoreSpy (SNOW partitioning, local thickness, correlation functions),
TauFactor (tortuosity factor), scikit-image (region properties, marching cubes) and edt.

* :mod:`~ncm_core.measure.phases`: phase fractions, porosity, profiles along an axis (block by block);
* :mod:`~ncm_core.measure.particles`: separating touching particles, particle sizes and shapes, d10/d50/d90;
* :mod:`~ncm_core.measure.interfaces`: interface length per area (2D), surface per volume (3D), specific
  surface area (marching cubes), percolation and connectivity, local thickness;
* :mod:`~ncm_core.measure.correlation`: two-point correlation and lineal-path curves;
* :mod:`~ncm_core.measure.tortuosity`: the tortuosity factor (TauFactor), with a memory estimate.

Label convention (that of ``ncm predict`` for segmenters, NGFF image-labels): value ``k + 1`` is class ``k``
and 0 is "not predicted"; a class list ``["pore", "active"]`` names values 1 and 2. A mapping
``{value: name}`` names any other convention. Pixels whose value names no class are left out of every
fraction. Lengths are in pixels, or in micrometres with ``pixel_size`` (um per pixel).

This package sits between ``io`` and ``data``: it imports only the base modules and ``io``.
"""
