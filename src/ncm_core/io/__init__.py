"""Reading and writing images: lazy mosaics (zarr, OME-Zarr, TIFF, PNG), NGFF output, colours."""
