"""napari-ncm: a napari skin over ``ncm_core``.

Nothing heavy is imported here, so napari starts fast; torch is imported only
when a model runs.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
