"""The Segment dock widget: paint phases, watch a forest learn them live, train, segment a whole mosaic.

* **New stroke layer**: a Labels layer aligned with the image (same scale and translate), one value per
  class of *Classes* (value k = class k), coloured by class name, in paint mode.
* **Live**: each finished stroke (the layer's ``paint`` or ``data`` event, debounced) retrains a small
  forest on all strokes and repredicts the part of the image in view (a pan or zoom repredicts the new view)
  (:class:`ncm_core.training.live.LiveSegmenter`), shown as the semi-transparent Labels layer
  ``<image> live``, aligned with the image. The work runs in a thread worker; the layer is changed on the
  main thread.
* **Train** (forest or U-Net): :func:`ncm_core.training.segment.train_segmenter` on the image and its
  strokes, in a thread worker with progress and Cancel; the bundle becomes the one *Segment mosaic* uses.
* **Segment mosaic**: :func:`ncm_core.inference.segment.segment_mosaic` (the streaming engine) on the
  mosaic file (or the image layer's own file, or its pixels), into an OME-Zarr whose labels are then
  opened aligned with the image.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, Label, LineEdit, PushButton, SpinBox

from napari_ncm._background import RunsInBackground, one_line, show_task_error
from napari_ncm._fields import layer_choice
from ncm_core.training.segment_config import SegmentConfig

if TYPE_CHECKING:
    import napari

DEFAULT_CLASSES = "pore, active, binder"
#: the live forest predicts at most this many pixels a side around the view's centre, at stride 2 beyond
#: a quarter of that area (a preview; zoom in for full resolution)
LIVE_MAX_SIDE = 2048
#: pixels of context kept around the strokes when an image is cropped for training (>= the forest's halo)
TRAIN_MARGIN = 256
#: ms after the last paint event before the live forest retrains (a stroke ends, then it runs once)
DEBOUNCE_MS = 300
#: side of the live forest's tiles: strokes are tracked, copied and (zarr) stored in tiles of this side
LIVE_TILE = 512
#: images of more pixels than this get a zarr stroke layer (on disk, chunked like the live tiles) and are
#: trained from the tiles around their strokes
LAZY_STROKES_PX = 16 * 2**20
#: the temporary folders of zarr stroke layers, removed when Python exits
_STROKE_FOLDERS: list[tempfile.TemporaryDirectory] = []


def atom_tiles(atoms: Any, tile: int = LIVE_TILE) -> set[tuple[int, int]]:
    """The tiles ``(ty, tx)`` that a napari Labels ``paint`` event's history atoms changed: a masked paint
    atom's bounding box (``slice_key``), or the index arrays of a ``(indices, old, new)`` atom."""
    keys: set[tuple[int, int]] = set()
    for atom in atoms or []:
        box = getattr(atom, "slice_key", None)
        if box is not None:
            ys, xs = box[-2], box[-1]
            y0, x0 = ys.start or 0, xs.start or 0
            y1, x1 = max(ys.stop, y0 + 1), max(xs.stop, x0 + 1)
            keys |= {
                (a, b) for a in range(y0 // tile, (y1 - 1) // tile + 1) for b in range(x0 // tile, (x1 - 1) // tile + 1)
            }
            continue
        index = atom[0]
        if len(index) >= 2 and len(index[-1]):
            pairs = np.unique(np.stack([np.asarray(index[-2]) // tile, np.asarray(index[-1]) // tile], 1), axis=0)
            keys |= {(int(a), int(b)) for a, b in pairs}
    return keys


def stored_tiles(data: Any, tile: int = LIVE_TILE) -> list[tuple[int, int]] | None:
    """The tiles of a zarr (v3) array of ``tile``-sized chunks that exist in its store (the others hold only
    the fill value 0), or None for any other array."""
    try:
        import zarr
        from zarr.core.sync import sync
    except ImportError:  # pragma: no cover - zarr is a dependency
        return None
    if not isinstance(data, zarr.Array) or tuple(data.chunks) != (tile, tile) or data.fill_value != 0:
        return None
    encoding = data.metadata.chunk_key_encoding
    if getattr(encoding, "name", "") != "default" or getattr(encoding, "separator", "") != "/":
        return None
    prefix = (data.path + "/" if data.path else "") + "c/"

    async def keys() -> list[str]:
        return [k async for k in data.store.list_prefix(prefix)]

    out = []
    for key in sync(keys()):
        parts = key[len(prefix) :].split("/")
        if len(parts) == 2 and all(p.isdigit() for p in parts):
            out.append((int(parts[0]), int(parts[1])))
    return sorted(out)


def channels_first(layer: Any) -> Any:
    """The pixels of an Image layer (level 0) as ``(C, H, W)`` (a view: lazy data stays lazy)."""
    data = layer.data[0] if layer.multiscale else layer.data
    if layer.rgb:
        return data.transpose(2, 0, 1) if hasattr(data, "transpose") else np.moveaxis(data, -1, 0)
    if data.ndim != 2:
        from ncm_core.errors import NcmError

        raise NcmError(f"segmentation works on 2D images; {layer.name!r} has shape {data.shape}")
    return data[None]


def coarse_norm(layer: Any) -> tuple[float, float] | None:
    """The intensity range of a multiscale layer from its coarsest level (None for one level: the live
    segmenter then samples the image itself)."""
    if not layer.multiscale:
        return None
    from ncm_core.data.label_images import fit_normalization

    data = np.asarray(layer.data[-1], np.float32)
    data = np.moveaxis(data, -1, 0) if layer.rgb else data[None]
    return fit_normalization([data])


class SegmentWidget(RunsInBackground, Container):
    """Paint, live forest, train (forest or U-Net), segment a mosaic."""

    task_name = "Segment"
    cancelled_text = "Cancelled"
    dock_words = {"pass --overwrite to replace it": "choose another folder"}

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        import napari.layers

        super().__init__(labels=True, scrollable=True)
        self._viewer = viewer = napari_viewer
        self.image = layer_choice(viewer, napari.layers.Image, "Image")
        self.classes = LineEdit(value=DEFAULT_CLASSES, label="Classes", tooltip="names of label values 1, 2, ...")
        self.new_labels = PushButton(text="New stroke layer")
        self.labels = layer_choice(viewer, napari.layers.Labels, "Strokes", nullable=True, preselect=False)
        self.live = CheckBox(value=False, text="Live: retrain and repredict the view after each stroke")
        self.engine = ComboBox(choices=["forest", "unet"], value="unet", label="Engine")
        self.encoder = LineEdit(value=SegmentConfig.encoder, label="Encoder", tooltip="U-Net: any timm encoder")
        self.epochs = SpinBox(value=SegmentConfig.epochs, min=1, max=10000, label="Epochs")
        self.patch_size = SpinBox(
            value=SegmentConfig.patch_size, min=32, max=2048, step=32, label="Patch (px)", tooltip="U-Net patch side"
        )
        self.output = FileEdit(mode="d", label="Bundle folder", tooltip="empty = a temporary folder")
        self.run_button = PushButton(text="Train")
        self.bundle = FileEdit(mode="d", label="Segmenter bundle", tooltip="a forest or U-Net bundle")
        self.mosaic = FileEdit(mode="r", label="Mosaic", tooltip="empty = the image layer's file (or its pixels)")
        self.mosaic_out = FileEdit(mode="w", filter="*.zarr", label="Output (.zarr)", tooltip="empty = temporary")
        self.segment_button = PushButton(text="Segment mosaic")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.status = Label(value="")
        self.extend(
            [
                self.image,
                self.classes,
                self.new_labels,
                self.labels,
                self.live,
                self.engine,
                self.encoder,
                self.epochs,
                self.patch_size,
                self.output,
                self.run_button,
                self.bundle,
                self.mosaic,
                self.mosaic_out,
                self.segment_button,
                self.cancel_button,
                self.status,
            ]
        )
        self.new_labels.changed.connect(lambda: self.new_stroke_layer())
        self.live.changed.connect(self._live_toggled)
        self.labels.changed.connect(self._watch_labels)
        self.run_button.changed.connect(lambda: self.run())
        self.segment_button.changed.connect(lambda: self.segment())
        self.cancel_button.changed.connect(self.cancel)
        self.engine.changed.connect(self._engine_changed)
        scene = getattr(viewer, "scene", None)  # napari >= 0.9; viewer.camera before
        camera = scene.camera if scene is not None else viewer.camera
        camera.events.center.connect(self._view_changed)
        camera.events.zoom.connect(self._view_changed)
        self._engine_changed()
        self.result: Any = None
        self.live_segmenter: Any = None
        self._live_key: Any = None
        self._live_worker: Any = None
        self._live_pending = False
        self._watched: Any = None
        self._dirty: set[tuple[int, int]] | None = None  # tiles painted since the last live update; None: all
        self._history: dict[int, Any] = {}  # the stroke layer's undo and redo items already seen
        self._timer: Any = None
        self._job_kind = "train"
        self.history: list[dict[str, float]] = []
        self.figure: Any = None  # the U-Net's live curves, made at its first epoch
        self._init_runner()

    # ------------------------------------------------------------------------------ strokes
    def class_names(self) -> list[str]:
        return [n.strip() for n in self.classes.value.split(",") if n.strip()]

    def new_stroke_layer(self) -> Any:
        """A Labels layer over the chosen image, one value per class (colours by class name), to paint on."""
        from napari_ncm._layers import class_labels_kwargs
        from ncm_core.io.colors import class_colors

        image = self.image.value
        if image is None:
            self.status.value = "Choose the image to paint on first."
            return None
        names = self.class_names()
        shape = channels_first(image).shape[1:]
        layer = self._viewer.add_labels(
            self._stroke_array(shape),
            name=f"{image.name} strokes",
            scale=image.scale[-2:],
            translate=image.translate[-2:],
            **class_labels_kwargs(names, class_colors(names), "unlabelled"),
        )
        layer.brush_size = 5
        layer.selected_label = 1
        layer.mode = "paint"
        self.labels.value = layer
        self.status.value = (
            f"Paint a few lines inside each phase ({', '.join(f'{k + 1} {n}' for k, n in enumerate(names))})."
        )
        return layer

    def _stroke_array(self, shape: tuple[int, int]) -> Any:
        """Zeros of ``shape``: numpy for an image up to :data:`LAZY_STROKES_PX` pixels, else a zarr array on
        disk (chunks of :data:`LIVE_TILE`, fill 0: only painted chunks are ever written) in a temporary
        folder removed when napari exits."""
        if int(shape[0]) * int(shape[1]) <= LAZY_STROKES_PX:
            return np.zeros(shape, np.uint8)
        import zarr

        folder = tempfile.TemporaryDirectory(prefix="ncm-strokes-")
        _STROKE_FOLDERS.append(folder)  # kept while napari runs, even if this dock closes
        return zarr.create_array(
            folder.name, shape=tuple(shape), chunks=(LIVE_TILE, LIVE_TILE), dtype="uint8", fill_value=0
        )

    def _checked_inputs(self) -> tuple[Any, Any, list[str]]:
        from ncm_core.errors import NcmError

        image, labels = self.image.value, self.labels.value
        if image is None or labels is None:
            raise NcmError("choose the image and its stroke layer (New stroke layer)")
        shape = channels_first(image).shape[1:]
        aligned = (
            tuple(labels.data.shape[-2:]) == tuple(shape)
            and np.allclose(labels.scale[-2:], image.scale[-2:])
            and np.allclose(labels.translate[-2:], image.translate[-2:])
        )
        if not aligned:
            raise NcmError(f"the stroke layer {labels.name!r} is not aligned with the image {image.name!r}")
        names = self.class_names()
        if len(names) < 2:
            raise NcmError("name at least two classes (comma separated)")
        return image, labels, names

    # ------------------------------------------------------------------------------ live
    def _watch_labels(self, *_: Any) -> None:
        if self._watched is not None:
            self._watched.events.paint.disconnect(self._painted)
            self._watched.events.data.disconnect(self._replaced)
            self._watched.events.set_data.disconnect(self._undone)
        self._watched = self.labels.value
        self._dirty = None
        self._history = self._history_items()
        if self._watched is not None:
            self._watched.events.paint.connect(self._painted)
            self._watched.events.data.connect(self._replaced)
            self._watched.events.set_data.connect(self._undone)

    def _painted(self, event: Any = None) -> None:
        """A stroke ended: the tiles it touched are read again at the next live update."""
        atoms = getattr(event, "value", None)
        if atoms is not None:
            self._history[id(atoms)] = atoms
        if self._dirty is not None:
            self._dirty |= atom_tiles(atoms)
        self._stroke_finished()

    def _history_items(self) -> dict[int, Any]:
        layer = self._watched
        items = [*getattr(layer, "_undo_history", ()), *getattr(layer, "_redo_history", ())]
        return {id(item): item for item in items}

    def _undone(self, *_: Any) -> None:
        """An undo or redo (napari sends no paint event for them): the tiles of the history items that
        moved are read again."""
        items = self._history_items()
        moved = [item for key, item in items.items() if key not in self._history]
        self._history = items
        if moved:
            if self._dirty is not None:
                for item in moved:
                    self._dirty |= atom_tiles(item)
            self._stroke_finished()

    def _replaced(self, *_: Any) -> None:
        """The strokes were replaced: the next live update reads them all again."""
        self._dirty = None
        self._stroke_finished()

    def _live_toggled(self, *_: Any) -> None:
        if self.live.value:
            self._watch_labels()  # and read all the strokes again
            self._stroke_finished()

    def _stroke_finished(self, *_: Any) -> None:
        """A stroke ended (or the strokes were replaced): retrain once the painting pauses."""
        if not self.live.value:
            return
        from qtpy.QtCore import QTimer

        if self._timer is None:
            self._timer = QTimer()
            self._timer.setSingleShot(True)
            self._timer.timeout.connect(lambda: self.live_update())
        self._timer.start(DEBOUNCE_MS)

    def _view_changed(self, *_: Any) -> None:
        """Panned or zoomed: repredict the new view once the camera rests (the forest stands)."""
        if self.live_segmenter is not None and self.live_segmenter.booster is not None:
            self._stroke_finished()

    def view_rect(self, image: Any) -> tuple[int, int, int, int]:
        """Rows and columns ``(y0, y1, x0, x1)`` of the image in view (the whole image without a canvas)."""
        h, w = channels_first(image).shape[1:]
        corners = np.asarray(image.corner_pixels, float)[:, -2:]
        corners[1] += 1  # the last pixel in view -> the end of the range
        if image.multiscale:  # the corners are pixels of the level on screen: scale them to level 0
            level = image.data[image.data_level]
            lh, lw = level.shape[-3:-1] if image.rgb else level.shape[-2:]
            corners = corners * np.array([h / lh, w / lw])
        y0, x0 = (int(np.floor(v)) for v in corners[0])
        y1, x1 = (int(np.ceil(v)) for v in corners[1])
        if y1 - y0 <= 1 or x1 - x0 <= 1:
            y0, y1, x0, x1 = 0, h, 0, w
        y0, y1, x0, x1 = max(y0, 0), min(y1, h), max(x0, 0), min(x1, w)
        cy, cx, half = (y0 + y1) // 2, (x0 + x1) // 2, LIVE_MAX_SIDE // 2
        if y1 - y0 > LIVE_MAX_SIDE:
            y0, y1 = max(cy - half, 0), min(cy + half, h)
        if x1 - x0 > LIVE_MAX_SIDE:
            x0, x1 = max(cx - half, 0), min(cx + half, w)
        return y0, y1, x0, x1

    def live_update(self, sync: bool = False) -> Any:
        """Retrain the live forest on the strokes and repredict the view; ``sync`` runs it here (tests).

        Only the tiles painted since the last update are copied (here, on the main thread) and read;
        after the strokes were replaced, all of them are read again, tile by tile."""
        from ncm_core.errors import NcmError

        if not sync and self._live_worker is not None:
            self._live_pending = True
            return None
        try:
            image, labels, names = self._checked_inputs()
            key = (id(image), id(labels), tuple(names))
            if self.live_segmenter is None or self._live_key != key:
                from ncm_core.training.live import LiveSegmenter

                self.live_segmenter = LiveSegmenter(
                    channels_first(image), names, tile=LIVE_TILE, norm=coarse_norm(image)
                )
                self._live_key, self._dirty = key, None
            dirty, self._dirty = self._dirty, set()
            strokes, tiles = self._strokes_to_read(labels.data, dirty)
            rect = self.view_rect(image)
        except NcmError as exc:
            self._live_error(exc)
            return None
        live = self.live_segmenter
        y0, y1, x0, x1 = rect
        stride = 2 if (y1 - y0) * (x1 - x0) > (LIVE_MAX_SIDE // 2) ** 2 else 1
        y0, x0 = y0 - y0 % stride, x0 - x0 % stride  # the preview's grid starts at the rectangle's corner

        def work() -> Any:
            if not live.update(strokes, tiles):
                return None
            grid = live.predict_view(y0, y1, x0, x1, stride=stride, full=False)
            return (y0, y1, x0, x1), stride, grid, dict(live.timing)

        if sync:
            try:
                result = work()
            except NcmError as exc:
                self._live_error(exc)
                return None
            self._show_live(result)
            return result
        from superqt.utils import create_worker

        worker = create_worker(work, _start_thread=False, _ignore_errors=True)
        worker.returned.connect(self._show_live)
        worker.errored.connect(self._live_error)
        worker.finished.connect(self._live_finished)
        self._live_worker = worker
        worker.start()
        return worker

    def _strokes_to_read(self, data: Any, dirty: set[tuple[int, int]] | None) -> tuple[Any, Any]:
        """What the worker reads: ``(labels, tiles)`` for :meth:`LiveSegmenter.update`. Copies of the painted
        tiles (painting goes on meanwhile); after a replacement, a copy of a small layer, of the stored
        chunks of a zarr layer, or the (large, lazy) array itself, scanned tile by tile."""
        live = self.live_segmenter
        if dirty is not None:
            boxes = live.tile_boxes(dirty)
            return {k: np.array(data[a:b, c:d]) for k, (a, b, c, d) in boxes.items()}, sorted(boxes)
        if isinstance(data, np.ndarray) and data.size <= LAZY_STROKES_PX:
            return np.array(data), None
        stored = stored_tiles(data, live.tile)
        if stored is not None:
            boxes = live.tile_boxes(stored)
            return {k: np.array(data[a:b, c:d]) for k, (a, b, c, d) in boxes.items()}, None
        return data, None

    def _live_finished(self) -> None:
        self._live_worker = None
        if self._live_pending:
            self._live_pending = False
            self.live_update()

    def _live_error(self, exc: BaseException) -> None:
        self.live.value = False  # one line once, not one per stroke
        self.status.value = f"Error: {one_line(exc)}"
        show_task_error("Live segmentation", exc)

    def _show_live(self, result: Any) -> None:
        """Put the view's prediction into the ``<image> live`` layer (main thread)."""
        image = self.image.value
        if result is None or image is None:
            if result is None:
                self.status.value = "Live: paint strokes of at least two classes."
            return
        (y0, y1, x0, x1), stride, grid, timing = result
        # one value per stride x stride block whose top-left pixel is (y0, x0) + stride * (i, j): napari puts
        # pixel centres at integer world coordinates, so the block's centre is (stride - 1) / 2 further on
        scale = np.asarray(image.scale[-2:], float)
        where = {
            "scale": scale * stride,
            "translate": np.asarray(image.translate[-2:], float) + scale * ((stride - 1) / 2 + np.array([y0, x0])),
        }
        name = f"{image.name} live"
        if name not in self._viewer.layers:
            from napari_ncm._layers import class_labels_kwargs
            from ncm_core.io.colors import class_colors

            names = self.live_segmenter.classes
            self._viewer.add_labels(
                grid,
                name=name,
                opacity=0.5,
                metadata={"ncm_prediction": True},
                **where,
                **class_labels_kwargs(names, class_colors(names)),
            )
        else:
            layer = self._viewer.layers[name]
            layer.scale, layer.translate = where["scale"], where["translate"]
            layer.data = grid
        seconds = timing.get("update_s", 0) + timing.get("predict_s", 0)
        self.status.value = f"Live: the {y1 - y0}x{x1 - x0} px in view repredicted in {seconds:.2f} s"

    # ------------------------------------------------------------------------------ training
    def _engine_changed(self, *_: Any) -> None:
        unet = self.engine.value == "unet"
        self.encoder.visible = self.epochs.visible = self.patch_size.visible = unet
        self.run_button.text = "Train U-Net" if unet else "Train forest"

    def label_set(self) -> Any:
        """The image and its strokes as a :class:`~ncm_core.data.label_images.LabelSet` (checked), read only
        around the strokes (:func:`ncm_core.training.live.strokes_label_set`)."""
        from ncm_core.training.live import strokes_label_set

        image, labels, names = self._checked_inputs()
        return strokes_label_set(
            channels_first(image),
            labels.data,
            names,
            name=image.name,
            where=labels.name,
            pixel_size=(image.metadata or {}).get("pixel_size"),
            tile=LIVE_TILE,
            margin=TRAIN_MARGIN,
            lazy_above=LAZY_STROKES_PX,
            tiles=stored_tiles(labels.data, LIVE_TILE),
        )

    def _job(self) -> Any:
        from napari_ncm._torch import guard_triton

        guard_triton()  # a U-Net imports torch in the worker: triton next to Mesa's LLVM would crash napari
        if self._job_kind == "segment":
            return self._segment_job()
        from ncm_core.training.segment import train_segmenter

        ls = self.label_set()
        text = str(self.output.value)
        out = Path(tempfile.mkdtemp(prefix="ncm-segmenter-")) if text in ("", ".") else Path(text)
        kw = {"engine": self.engine.value, "val_fraction": SegmentConfig.val_fraction}
        if self.engine.value == "unet":
            kw.update(encoder=self.encoder.value.strip(), epochs=self.epochs.value, patch_size=self.patch_size.value)
        cancel, progress, on_epoch = self._cancel, self.progress_fn(), self.post("epoch")
        return lambda: train_segmenter(
            ls, out, progress=progress, cancel=cancel, on_epoch=lambda rec: on_epoch(dict(rec)), **kw
        )

    def _on_epoch(self, record: dict[str, float]) -> None:
        """The U-Net's loss and accuracy curves, redrawn after each epoch (main thread)."""
        from ncm_core.viz.figures import draw_training_curves

        if self.figure is None:
            from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
            from matplotlib.figure import Figure

            self.figure = Figure(figsize=(4.5, 2.6), dpi=80)
            self.canvas = FigureCanvasQTAgg(self.figure)
            self.canvas.setMinimumHeight(200)
            self.inner.layout().addWidget(self.canvas)
        self.history.append(record)
        draw_training_curves(self.figure, self.history)
        self.canvas.draw_idle()

    def run(self, sync: bool = False) -> Any:
        """Train a segmenter on the image's strokes (the chosen engine). ``sync`` runs it here (tests)."""
        self._job_kind = "train"
        work = self._prepare()
        if work is None:
            return None
        self.result, self.history = None, []
        return self._run_function(work, sync, "Training a segmenter", "Training...")

    # ------------------------------------------------------------------------------ mosaic
    def segment(self, sync: bool = False) -> Any:
        """Segment the mosaic with the bundle (streaming engine); its labels are then opened, aligned."""
        self._job_kind = "segment"
        work = self._prepare()
        if work is None:
            return None
        self.result = None
        return self._run_function(work, sync, "Segmenting the mosaic", "Segmenting...")

    def _segment_job(self) -> Any:
        from ncm_core.errors import NcmError

        if str(self.bundle.value) in ("", "."):
            raise NcmError("choose a segmenter bundle (train one, or a forest or U-Net bundle folder)")
        bundle = Path(str(self.bundle.value))
        image = self.image.value
        text = str(self.mosaic.value)
        if text not in ("", "."):
            mosaic: Any = text
        elif image is not None and getattr(image.source, "path", None):
            mosaic = image.source.path
        elif image is not None:
            data = image.data[0] if image.multiscale else image.data
            mosaic = data
        else:
            raise NcmError("choose the mosaic file or an image layer")
        out_text = str(self.mosaic_out.value)
        out = (
            Path(tempfile.mkdtemp(prefix="ncm-seg-")) / "segmentation.zarr" if out_text in ("", ".") else Path(out_text)
        )
        cancel, progress = self._cancel, self.progress_fn()

        def task() -> Any:
            from ncm_core.inference.segment import segment_mosaic

            return segment_mosaic(bundle, mosaic, out, progress=progress, cancel=cancel)

        return task

    # ------------------------------------------------------------------------------ results (main thread)
    def _on_done(self, value: Any) -> None:
        if value is None:
            return
        self.result = Path(value)
        if self._job_kind == "segment":
            self._open_segmentation(self.result)
            return
        from ncm_core.training.segment import describe

        self.bundle.value = str(self.result)
        self.status.value = f"Done: {describe(self.result)} -> {self.result}"

    def _open_segmentation(self, path: Path) -> None:
        """The class map (multiscale, names and colours) and any class probabilities, aligned with the image."""
        from napari_ncm._layers import segmentation_layers
        from ncm_core.inference.segmentation import open_segmentation

        image = self.image.value
        layers = segmentation_layers(open_segmentation(path), classes=None)
        base_scale = np.asarray(layers[0][1]["scale"], float)
        base_trans = np.asarray(layers[0][1]["translate"], float)
        for data, kw, kind in layers:
            stem = path.name.split(".")[0]  # the file's name first, unless it is already (segmentation.zarr)
            kw = {**kw, "name": kw["name"] if kw["name"].split(" ")[0] == stem else f"{stem} {kw['name']}"}
            if image is not None:  # the run's world frame mapped onto the image layer's
                f = np.asarray(image.scale[-2:], float) / base_scale
                kw["scale"] = tuple(np.asarray(kw["scale"], float) * f)
                kw["translate"] = tuple(
                    np.asarray(image.translate[-2:], float) + (np.asarray(kw["translate"]) - base_trans) * f
                )
            if kw["name"] in self._viewer.layers:
                self._viewer.layers.remove(kw["name"])
            (self._viewer.add_labels if kind == "labels" else self._viewer.add_image)(data, **kw)
        self.status.value = f"Done: segmentation {path}"

    def _finished_hook(self) -> None:
        self.segment_button.enabled = True

    def _run_function(self, work: Any, sync: bool, description: str, running_text: str) -> Any:
        self.segment_button.enabled = sync
        return super()._run_function(work, sync, description, running_text)
