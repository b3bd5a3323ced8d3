"""The Train dock widget: a classifier from folders or painted annotations, or a regressor from crops.

Two sources:

* **Folder**: class folders of frames, or a tile set written by ``ncm crops``;
* **Annotations**: an image layer with a Labels layer painted with class
  values (value k = k-th name of *Classes*) and/or a Shapes layer of
  rectangles (class from its ``class`` feature, else the layer's name). Each
  painted region or rectangle is held out whole (see
  :mod:`ncm_core.data.annotations`).

The work is ``ncm_core.data.annotations.tiles_from_annotations`` and
``ncm_core.training.classify.train`` (then ``ncm_core.evaluation.evaluate.evaluate`` on the test
split, if there is one), run in a napari thread worker with napari's progress
bar, a Cancel button and live loss/accuracy curves; or synchronously for
tests. A cancelled run keeps its checkpoint: Run again resumes it.

With *Task* set to regression, the data are cross-section crops (the
Cross-section widget or ``ncm sections``) with a targets CSV, and the work is
``ncm_core.training.regression.train_regressor`` or, with *CV folds*, grouped k-fold
``cross_validate``, whose rate-capability plot then shows in the dock.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    LineEdit,
    PushButton,
    SpinBox,
)

from napari_ncm._background import RunsInBackground
from napari_ncm._fields import layer_choice
from ncm_core.training.config import LOSSES, REGRESS_MODELS, RegressConfig, TrainConfig

if TYPE_CHECKING:
    import napari

FOLDER, ANNOTATIONS = "Folder (class folders or tile set)", "Annotations in this viewer"
CLASSIFY, REGRESS = "Classify tiles", "Regress values (cross-section crops)"
#: widget -> the option of TrainConfig (classification) and RegressConfig (regression) it shows
_FIELDS = {
    "arch": "architecture",
    "optimizer": "optimizer",
    "epochs": "epochs",
    "batch_size": "batch_size",
    "patience": "patience",
    "val_fraction": "val_fraction",
}


def task_defaults(regress: bool) -> dict[str, Any]:
    """The task's defaults of the widgets that switch with the task, read from its options class
    (patience None shows as 0 = off)."""
    c = RegressConfig() if regress else TrainConfig()
    out = {w: getattr(c, f) for w, f in _FIELDS.items()}
    out["patience"] = out["patience"] or 0
    return out


#: the Augment choice that leaves the selection to the training recipe (augment=True)
AS_RECIPE = "as the recipe"


def augment_choices(regress: bool) -> list[str]:
    """Classification: the recipe's selection, flips and turns only, all, and none; regression: all of
    its augmentations, all but one, one alone, and none."""
    from ncm_core.data.augment import AUGMENTATIONS

    vocab = AUGMENTATIONS["regress" if regress else "classify"]
    if not regress:
        return [AS_RECIPE, "flip,rot90", ",".join(vocab), "none"]
    return [",".join(vocab), ",".join(vocab[:-1]), vocab[-1], "none"]


def default_class_names() -> str:
    from ncm_core.data.synth import CLASS_NAMES

    return ", ".join(CLASS_NAMES)


def shapes_to_rectangles(shapes: Any, image: Any) -> list:
    """Rectangles of a Shapes layer in the image's pixel indices (half-open), with their classes.

    napari puts pixel centres at integer coordinates, so a box drawn from
    world corner a to b covers pixel indices ``floor(a + 0.5)`` to ``b + 0.5``.
    """
    import numpy as np

    from ncm_core.data.annotations import Rectangle

    classes = None
    if "class" in getattr(shapes, "features", {}):
        classes = [str(c) for c in shapes.features["class"]]
    rects = []
    for k, verts in enumerate(shapes.data):
        px = np.array([image.world_to_data(shapes.data_to_world(v))[-2:] for v in verts])
        (y0, x0), (y1, x1) = px.min(0) + 0.5, px.max(0) + 0.5
        cls = classes[k] if classes and classes[k] not in ("", "nan", "None") else shapes.name
        rects.append(Rectangle(cls, float(y0), float(x0), float(y1), float(x1)))
    return rects


def hand_bundle_to_sections(viewer: Any, path: str) -> int:
    """Set ``path`` as the bundle of the Cross-section widget(s) docked in ``viewer``; returns how many."""
    from napari_ncm._sections_widget import SectionsWidget

    try:
        docked = [w for w in viewer.window.dock_widgets.values() if isinstance(w, SectionsWidget)]
    except Exception:  # a viewer without a window (scripts)
        return 0
    for w in docked:
        w.bundle.value = path
    return len(docked)


class TrainWidget(RunsInBackground, Container):
    """Train a classifier bundle; shows live curves and, after training, the test confusion matrix."""

    task_name = "Train"
    cancelled_text = "Cancelled (run again with the same settings and bundle folder to resume)"
    dock_words = {"pass --overwrite to replace it": "tick 'Replace a finished bundle there' to replace it"}

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        import napari.layers
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        super().__init__(labels=True, scrollable=True)
        self._viewer = viewer = napari_viewer
        self.task = ComboBox(choices=[CLASSIFY, REGRESS], value=CLASSIFY, label="Task")
        self.targets = FileEdit(
            mode="r",
            filter="*.csv",
            label="Targets CSV",
            tooltip="columns image,<target>,... : one row per mosaic (e.g. capacity per C-rate)",
        )
        self.group = LineEdit(
            value="", label="Group columns", tooltip="comma-separated CSV columns that are not targets, e.g. porosity"
        )
        self.folds = SpinBox(
            value=0,
            min=0,
            max=50,
            label="CV folds",
            tooltip="k-fold cross-validation grouped by mosaic; 0 = train one model",
        )
        self.loss = ComboBox(choices=list(LOSSES), value=RegressConfig.loss, label="Loss")
        self.reg_model = ComboBox(
            choices=list(REGRESS_MODELS),
            value=RegressConfig.model,
            label="Model",
            tooltip="cnn, descriptors (ridge on crop descriptors), hybrid (CNN features + descriptors) or auto: "
            "all three compared on the CV folds, the best kept",
        )
        self.reg_input = LineEdit(
            value="56x168", label="Input (HxW)", tooltip="model input size; crops are resized to it (empty = crop size)"
        )
        self.source = ComboBox(choices=[FOLDER, ANNOTATIONS], value=FOLDER, label="Train from")
        self.data = FileEdit(
            mode="d", label="Data folder", tooltip="class folders of frames, or a tile set (ncm crops)"
        )
        self.image = layer_choice(viewer, napari.layers.Image, "Image", nullable=True)
        self.labels = layer_choice(viewer, napari.layers.Labels, "Painted labels", nullable=True, preselect=False)
        self.shapes = layer_choice(viewer, napari.layers.Shapes, "Rectangles", nullable=True, preselect=False)
        self.classes = LineEdit(
            value=default_class_names(), label="Classes", tooltip="names of label values 1, 2, ... (comma separated)"
        )
        self.new_labels = PushButton(text="New annotation layer")
        self.exclude_rows = LineEdit(
            value="",
            label="Exclude rows",
            tooltip="frames: rows no crop may touch, e.g. -32: for a 32-row SEM info bar; empty: the information "
            "bar of each frame where one is found; auto: every frame must have one; none: no band",
        )
        self.tile = SpinBox(
            value=96,
            min=8,
            max=4096,
            label="Tile (px)",
            tooltip="tile size for annotations and class folders (a tile set keeps its own)",
        )
        init = task_defaults(regress=False)
        self.arch = LineEdit(value=init["arch"], label="Architecture", tooltip="any timm model name")
        self.pretrained = FileEdit(
            mode="r",
            label="Pretrained weights",
            filter="*.safetensors *.pth *.pt *.bin",
            tooltip="optional local weights file; nothing is downloaded",
        )
        self.input_size = SpinBox(value=0, min=0, max=2048, label="Input size (px)", tooltip="0 = tile size")
        self.epochs = SpinBox(value=init["epochs"], min=1, max=10000, label="Epochs")
        self.batch_size = SpinBox(value=init["batch_size"], min=1, max=4096, label="Batch size")
        self.lr = LineEdit(value=f"{TrainConfig.lr:g}", label="Learning rate")
        self.optimizer = ComboBox(
            choices=["adamw", "adam", "sgd", "lookahead_radam"], value=init["optimizer"], label="Optimizer"
        )
        choices = augment_choices(regress=False)
        self.augment = ComboBox(choices=choices, value=choices[0], label="Augment")
        self.recipe = ComboBox(
            choices=["generalise", "basic"],
            value=TrainConfig.recipe,
            label="Recipe",
            tooltip="generalise: per-tile standardisation, session-look augmentation, class-balanced sampling, "
            "label smoothing, weight averaging and test-time augmentation (for frames from several microscope "
            "sessions); basic: none of them",
        )
        self.normalize = CheckBox(value=TrainConfig.normalize, text="Normalise by dataset mean/std")
        self.patience = SpinBox(
            value=init["patience"], min=0, max=1000, label="Early stop", tooltip="epochs without improvement; 0 = off"
        )
        self.val_fraction = FloatSpinBox(
            value=init["val_fraction"],
            min=0.0,
            max=0.8,
            step=0.05,
            label="Validation share",
            tooltip="0 = no validation: the last epoch is kept",
        )
        self.output = FileEdit(mode="d", label="Bundle folder", tooltip="empty = a temporary folder")
        self.overwrite = CheckBox(
            value=TrainConfig.overwrite,
            text="Replace a finished bundle there",
            tooltip="a folder holding a finished bundle is kept unless this is on (an interrupted training resumes)",
        )
        self.run_button = PushButton(text="Train")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.status = Label(value="")
        self.extend(
            [
                self.task,
                self.source,
                self.data,
                self.targets,
                self.group,
                self.folds,
                self.loss,
                self.reg_model,
                self.reg_input,
                self.exclude_rows,
                self.image,
                self.labels,
                self.shapes,
                self.classes,
                self.new_labels,
                self.tile,
                self.arch,
                self.pretrained,
                self.input_size,
                self.epochs,
                self.batch_size,
                self.lr,
                self.optimizer,
                self.recipe,
                self.augment,
                self.normalize,
                self.patience,
                self.val_fraction,
                self.output,
                self.overwrite,
                self.run_button,
                self.cancel_button,
                self.status,
            ]
        )
        self.figure = Figure(figsize=(4.5, 2.6), dpi=80)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(200)
        self.inner.layout().addWidget(self.canvas)
        self.cm_figure = Figure(figsize=(4.5, 4.2), dpi=80)
        self.cm_canvas = FigureCanvasQTAgg(self.cm_figure)
        self.cm_canvas.setMinimumHeight(300)
        self.cm_canvas.setVisible(False)
        self.inner.layout().addWidget(self.cm_canvas)
        self.source.changed.connect(self._show_source)
        self.task.changed.connect(self._task_changed)
        self.new_labels.changed.connect(lambda: self.new_annotation_layer())
        self.run_button.changed.connect(lambda: self.run())
        self.cancel_button.changed.connect(self.cancel)
        self._show_source()
        self.history: list[dict[str, float]] = []
        self.result = None
        self.metrics = None
        self._init_runner()

    @property
    def regress(self) -> bool:
        return self.task.value == REGRESS

    def _task_changed(self) -> None:
        for name, value in task_defaults(self.regress).items():
            getattr(self, name).value = value
        choices = augment_choices(self.regress)
        self.augment.choices = choices
        self.augment.value = choices[0]
        if self.regress:
            self.source.value = FOLDER
        self._show_source()

    def _show_source(self) -> None:
        reg = self.regress
        ann = self.source.value == ANNOTATIONS and not reg
        self.source.visible = not reg
        self.data.visible = not ann
        self.exclude_rows.visible = not ann and not reg
        self.tile.visible = self.input_size.visible = self.recipe.visible = not reg
        self.data.tooltip = (
            "crops from the Cross-section widget or 'ncm sections'"
            if reg
            else "class folders of frames, or a tile set (ncm crops)"
        )
        for w in (self.targets, self.group, self.folds, self.loss, self.reg_model, self.reg_input):
            w.visible = reg
        for w in (self.image, self.labels, self.shapes, self.classes, self.new_labels):
            w.visible = ann

    def class_names(self) -> list[str]:
        return [n.strip() for n in self.classes.value.split(",") if n.strip()]

    def new_annotation_layer(self):
        """A Labels layer over the chosen image, one value per class of *Classes* (colours by class name),
        in paint mode with a brush wide enough that a stroke covers whole tiles."""
        import numpy as np

        from napari_ncm._layers import class_labels_kwargs
        from ncm_core.data.annotations import AnnotationTilesOptions
        from ncm_core.io.colors import class_colors

        image = self.image.value
        if image is None:
            self.status.value = "Choose the image to annotate first."
            return None
        names = self.class_names()
        data = image.data[0] if image.multiscale else image.data
        shape = data.shape[:2] if image.rgb else data.shape[-2:]
        kw = class_labels_kwargs(names, class_colors(names), "unlabelled")
        layer = self._viewer.add_labels(
            np.zeros(shape, np.uint8 if len(names) < 255 else np.uint16),
            name=f"{image.name} annotations",
            scale=image.scale[-2:],
            translate=image.translate[-2:],
            **kw,
        )
        tile = self.tile.value
        layer.brush_size = 2 * tile  # a stroke this wide covers a whole row of tiles wherever it runs
        layer.selected_label = 1
        layer.mode = "paint"
        self.source.value = ANNOTATIONS
        self.labels.value = layer
        cover = AnnotationTilesOptions.min_coverage
        self.status.value = (
            f"Paint each class with its label value (brush {2 * tile} px): a {tile} px tile is used for "
            f"training when one class covers {cover:.0%} of it."
        )
        return layer

    # ------------------------------------------------------------ the job
    def _job(self):
        """A function running the whole task in the calling thread; its callbacks report to the main thread."""
        from napari_ncm._torch import guard_triton

        guard_triton()
        from ncm_core.errors import NcmError

        out_text = str(self.output.value)
        out = Path(tempfile.mkdtemp(prefix="ncm-bundle-")) if out_text in ("", ".") else Path(out_text)
        try:
            lr = float(self.lr.value)
            if not 0 < lr < 10:
                raise ValueError
        except ValueError:
            raise NcmError(f"learning rate must be a positive number such as 0.001, got {self.lr.value!r}") from None
        if self.regress:
            return self._regress_job(out, lr)
        kwargs = dict(
            architecture=self.arch.value.strip(),
            input_size=self.input_size.value or None,
            epochs=self.epochs.value,
            batch_size=self.batch_size.value,
            lr=lr,
            optimizer=self.optimizer.value,
            recipe=self.recipe.value,
            augment=True if self.augment.value == AS_RECIPE else self.augment.value,
            normalize=self.normalize.value,
            patience=self.patience.value,
            val_fraction=self.val_fraction.value,
            pretrained=None if str(self.pretrained.value) in ("", ".") else str(self.pretrained.value),
            overwrite=self.overwrite.value,
        )
        from ncm_core.data.infobar import parse_band

        ann, data = None, None
        rows = parse_band(self.exclude_rows.value) if self.exclude_rows.value.strip() else None  # None: the default
        if self.source.value == ANNOTATIONS:
            ann = self._annotations()
            tiles_dir = out.with_name(out.name + "_tiles")
        else:
            if str(self.data.value) in ("", "."):
                raise NcmError("choose a data folder (class folders of frames or a tile set)")
            data = Path(str(self.data.value))
        cancel, progress, on_epoch = self._cancel, self.progress_fn(), self.post("epoch")
        tile = self.tile.value

        def task():
            from ncm_core.data.tilesets import is_tile_set, open_tile_set
            from ncm_core.evaluation.evaluate import evaluate
            from ncm_core.training.classify import train

            src = data
            if ann is not None:
                from ncm_core.data.annotations import tiles_from_annotations

                progress(0, 0, "cutting annotated tiles")
                ts = tiles_from_annotations(
                    ann["image"],
                    tiles_dir,
                    tile=tile,
                    labels=ann["labels"],
                    names=ann["names"],
                    rectangles=ann["rectangles"],
                    val_fraction=kwargs["val_fraction"],
                    overwrite=True,
                    cancel=cancel,
                )
                src = ts.root
            r = train(
                src,
                out,
                tile_size=None if is_tile_set(src) else tile,
                exclude_rows=rows,
                cancel=cancel,
                progress=progress,
                on_epoch=lambda rec: on_epoch(dict(rec)),
                **kwargs,
            )
            metrics = None
            if is_tile_set(src) and open_tile_set(src).split("test"):
                progress(0, 0, "evaluating on the test split")
                metrics = evaluate(r.bundle, src, split="test", out=Path(r.bundle) / "evaluation", cancel=cancel)
            return r, metrics

        return task

    def _regress_job(self, out: Path, lr: float):
        from ncm_core.errors import NcmError

        if str(self.data.value) in ("", "."):
            raise NcmError("choose the crop folder (Cross-section widget or 'ncm sections')")
        if str(self.targets.value) in ("", "."):
            raise NcmError("choose the targets CSV (image,<target>,...)")
        data, targets = Path(str(self.data.value)), Path(str(self.targets.value))
        groups = [g.strip() for g in self.group.value.split(",") if g.strip()]
        kwargs = dict(
            architecture=self.arch.value.strip(),
            epochs=self.epochs.value,
            batch_size=self.batch_size.value,
            lr=lr,
            optimizer=self.optimizer.value,
            augment=self.augment.value,
            loss=self.loss.value,
            model=self.reg_model.value,
            normalize=self.normalize.value,
            patience=self.patience.value,
            val_fraction=self.val_fraction.value,
            input_size=self.reg_input.value.strip() or None,
            groups=groups,
            pretrained=None if str(self.pretrained.value) in ("", ".") else str(self.pretrained.value),
            overwrite=self.overwrite.value,
        )
        folds = self.folds.value
        if folds == 1:
            raise NcmError("cross-validation needs at least 2 folds (0 trains one model)")
        cancel, progress, on_epoch = self._cancel, self.progress_fn(), self.post("epoch")

        def task():
            from ncm_core.training.regression import cross_validate, train_regressor

            common = dict(progress=progress, cancel=cancel, on_epoch=lambda rec: on_epoch(dict(rec)))
            if folds:
                return cross_validate(data, targets, out, folds=folds, **common, **kwargs), None
            return train_regressor(data, targets, out, **common, **kwargs), None

        return task

    def _annotations(self) -> dict[str, Any]:
        from napari_ncm._widget import layer_to_mosaic
        from ncm_core.errors import NcmError

        image, labels, shapes = self.image.value, self.labels.value, self.shapes.value
        if image is None:
            raise NcmError("choose the image that was annotated")
        if labels is None and shapes is None:
            raise NcmError("choose a painted Labels layer and/or a Shapes layer of rectangles")
        lab = None
        if labels is not None:
            if tuple(labels.scale[-2:]) != tuple(image.scale[-2:]) or tuple(labels.translate[-2:]) != tuple(
                image.translate[-2:]
            ):
                raise NcmError(
                    f"labels layer {labels.name!r} is not aligned with image {image.name!r} (different "
                    "scale or translate); paint on a layer made with 'New annotation layer'"
                )
            lab = labels.data[0] if labels.multiscale else labels.data
        rects = shapes_to_rectangles(shapes, image) if shapes is not None else []
        return {"image": layer_to_mosaic(image), "labels": lab, "rectangles": rects, "names": self.class_names()}

    def run(self, sync: bool = False):
        """Start training. ``sync=True`` runs it in the calling thread (tests, scripts)."""
        task = self._prepare()
        if task is None:
            return None
        self.history, self.result, self.metrics = [], None, None
        return self._run_function(task, sync, "Training", "Training...")

    # ------------------------------------------------------------ callbacks (main thread)
    def _on_epoch(self, rec: dict[str, float]) -> None:
        from ncm_core.viz.figures import draw_training_curves

        if self.history and rec.get("fold") != self.history[-1].get("fold"):
            self.history = []  # cross-validation: the curves of the fold being trained
        self.history.append(rec)
        draw_training_curves(self.figure, self.history, title=f"fold {rec['fold']}" if "fold" in rec else None)
        self.canvas.draw_idle()

    def _on_done(self, value: Any) -> None:
        from ncm_core.viz.figures import draw_confusion_matrix

        if value is None:
            return
        self.result, self.metrics = value
        r = self.result
        if hasattr(r, "metrics") or r.metric == "val_mape":
            return self._regress_done(r)
        msg = f"Done: {r.bundle} ({_kept(r, 'accuracy', '.1%')})"
        if self.metrics is not None:
            tm = self.metrics["tiles"]
            msg += f"; test accuracy {tm['accuracy']:.1%}"
            draw_confusion_matrix(
                self.cm_figure,
                tm["confusion_matrix"],
                tm["class_names"],
                title=f"Test tiles: accuracy {tm['accuracy']:.1%}",
            )
            self.cm_canvas.setVisible(True)
            self.cm_canvas.draw_idle()
        else:
            msg += self._held_out_note(r.bundle)
        self.status.value = msg
        from napari_ncm._widget import hand_bundle_to_predict

        hand_bundle_to_predict(self._viewer, str(r.bundle))

    def _held_out_note(self, bundle: Any) -> str:
        """The held-out frames' accuracy (their confusion matrix drawn below the curves) and the
        validation-spread warning, from the bundle's training record; '' without held-out frames."""
        from ncm_core.models.bundle import read_bundle_config
        from ncm_core.viz.figures import draw_confusion_matrix

        t = read_bundle_config(bundle).training
        rep, spread = t.get("validation_report"), t.get("validation_spread") or {}
        if not rep:
            return ""
        f = rep["frames"]
        title = f"Held-out frames: accuracy {f['accuracy']:.1%} (n = {f['n']})"
        draw_confusion_matrix(self.cm_figure, f["confusion_matrix"], f["class_names"], title=title)
        self.cm_canvas.setVisible(True)
        self.cm_canvas.draw_idle()
        note = f"; held-out frames {f['accuracy']:.1%}"
        return note + (f". Warning: {spread['warning']}" if spread.get("warning") else "")

    def _regress_done(self, r: Any) -> None:
        """Status line; after cross-validation, the rate-capability plot of the held-out predictions."""
        from ncm_core.evaluation.baselines import ranking_line
        from ncm_core.viz.figures import draw_rate_capability

        if not hasattr(r, "metrics"):  # one model
            self.status.value = f"Done: {r.bundle} ({_kept(r, 'MAPE', '.2f')})" + (
                f"; validation mosaics, {ranking_line(r.baselines)}" if r.baselines else ""
            )
            hand_bundle_to_sections(self._viewer, str(r.bundle))
            return
        from ncm_core.data.targets import parse_c_rates
        from ncm_core.viz.figures import rate_capability_series

        m = r.metrics
        names = list(m["crops"]["targets"])
        by = next((g for g in (m.get("group_columns") or []) if g), "source")
        measured, predicted = rate_capability_series(r.predictions, names, by)
        self.cm_figure.clear()
        draw_rate_capability(
            self.cm_figure.add_subplot(1, 1, 1),
            measured,
            predicted,
            names,
            parse_c_rates(names),
            title=f"{len(r.folds)}-fold CV: MAPE {m['fold_mean']['mape']:.2f} %",
            legend_title=by,
        )
        self.cm_figure.tight_layout()
        self.cm_canvas.setVisible(True)
        self.cm_canvas.draw_idle()
        self.status.value = (
            f"Done: {len(r.folds)}-fold CV, MAPE {m['fold_mean']['mape']:.2f} +- "
            f"{m['fold_std']['mape']:.2f} %, R^2 {m['fold_mean']['r2']:.3f}; reports in {r.out}"
        ) + (f"; {ranking_line(m['baselines'])}" if m.get("baselines") else "")


def _kept(r: Any, metric: str, fmt: str) -> str:
    """``validation <metric> <value>, epoch k``, or that the last epoch was kept without validation."""
    if not r.validated:
        return f"no validation data: last epoch {r.best_epoch} kept"
    unit = " %" if metric == "MAPE" else ""
    return f"validation {metric} {format(r.best_value, fmt)}{unit}, epoch {r.best_epoch}"
