"""The Inpaint dock widget: paint a mask over damaged pixels, fill them (``ncm_core.inference.inpaint``).

*Add mask layer* adds a Labels layer aligned with the chosen image (same shape, scale and translate) to
paint on; *Inpaint* fills the painted pixels in a napari thread worker (progress, Cancel) and adds the
result as a new layer of the image's kind (Labels for a phase map), with every unpainted pixel unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import Container, Label, PushButton, SpinBox

from napari_ncm._background import RunsInBackground
from napari_ncm._fields import layer_choice
from ncm_core.inference.inpaint import InpaintOptions

if TYPE_CHECKING:
    import napari


def _pixels(layer: Any) -> np.ndarray:
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    return np.asarray(data)


def _is_2d(layer: Any) -> bool:
    """A layer inpainting can take (2D, grey or RGB): chosen first over a 3D volume."""
    return layer.ndim == 2 or (layer.ndim == 3 and bool(getattr(layer, "rgb", False)))


class InpaintWidget(RunsInBackground, Container):
    """Fill painted regions of a grey-level image or phase map with matching structure."""

    task_name = "Inpaint"
    cancelled_text = "Cancelled: nothing was added"
    dock_words = {"(--patch)": "(Patch)", "--patch": "Patch"}

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        import napari.layers

        super().__init__(labels=True, scrollable=True)
        self._viewer = napari_viewer
        o = InpaintOptions()
        kinds = (napari.layers.Image, napari.layers.Labels)
        self.image = layer_choice(
            napari_viewer, kinds, "Image", tooltip="a grey-level image or a phase map", prefer=_is_2d, prefer_new=False
        )
        self.mask = layer_choice(
            napari_viewer, napari.layers.Labels, "Mask", nullable=True, preselect=False, tooltip="painted = fill"
        )
        self.add_mask = PushButton(text="Add mask layer")
        self.patch = SpinBox(value=o.patch, min=3, max=256, label="Patch (px)")
        self.refine = SpinBox(value=o.refine, min=0, max=5, label="Seam passes")
        self.run_button = PushButton(text="Inpaint")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.status = Label(value="")
        self.extend(
            [self.image, self.mask, self.add_mask, self.patch, self.refine, self.run_button, self.cancel_button]
            + [self.status]
        )
        self.add_mask.changed.connect(self.add_mask_layer)
        self.run_button.changed.connect(lambda: self.run())
        self.cancel_button.changed.connect(self.cancel)
        self.result = None
        self._init_runner()

    def add_mask_layer(self) -> Any:
        """A Labels layer to paint the mask on, aligned with the image; chosen as the mask."""
        src = self.image.value
        if src is None:
            self.status.value = "Choose an image first"
            return None
        shape = _pixels(src).shape[:2]
        layer = self._viewer.add_labels(
            np.zeros(shape, np.uint8),
            name=f"{src.name} mask",
            scale=tuple(src.scale)[-2:],
            translate=tuple(src.translate)[-2:],
            opacity=0.6,
        )
        layer.mode = "paint"
        layer.selected_label = 1
        self.mask.value = layer
        return layer

    def _job(self):
        from ncm_core.errors import NcmError
        from ncm_core.inference.inpaint import inpaint_array

        src, mask_layer = self.image.value, self.mask.value
        if src is None:
            raise NcmError("choose the image to inpaint")
        if mask_layer is None:
            raise NcmError("paint a mask first (Add mask layer, then paint over the pixels to fill)")
        image, mask = _pixels(src), _pixels(mask_layer) > 0
        if not mask.any():
            raise NcmError("the mask is empty: paint over the pixels to fill")
        kind = "labels" if src.__class__.__name__ == "Labels" else "auto"
        opts = dict(patch=self.patch.value, refine=self.refine.value, kind=kind)
        cancel, progress = self._cancel, self.progress_fn()
        self._source = src

        def task():
            return inpaint_array(image, mask, cancel=cancel, progress=progress, **opts)

        return task

    def run(self, sync: bool = False):
        """Inpaint; ``sync=True`` runs in the calling thread (tests, scripts)."""
        task = self._prepare()
        if task is None:
            return None
        self.result = None
        return self._run_function(task, sync, "Inpainting", "Inpainting...")

    def _on_done(self, result: Any) -> None:
        if result is None:
            return
        self.result = result
        src = self._source
        kw = dict(name=f"{src.name} inpainted", scale=tuple(src.scale)[-2:], translate=tuple(src.translate)[-2:])
        if src.__class__.__name__ == "Labels":
            self._viewer.add_labels(result, **kw)
        else:
            self._viewer.add_image(result, colormap="gray", **kw)
        self.status.value = f"Done: {kw['name']}"
