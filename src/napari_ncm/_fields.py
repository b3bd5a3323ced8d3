"""Input fields the dock widgets share: layer choosers that follow the viewer's layers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from magicgui.widgets import ComboBox


def layer_choice(
    viewer: Any,
    kind: type,
    label: str,
    *,
    nullable: bool = False,
    preselect: bool = True,
    tooltip: str | None = None,
    prefer: Callable[[Any], bool] | None = None,
    prefer_new: bool = True,
) -> ComboBox:
    """A chooser of the viewer's layers of type ``kind``, kept up to date as layers come and go.

    When exactly one such layer exists and nothing is chosen, it is chosen: a person with one image
    open should not have to pick it (layers made by the plugin, such as probability or heatmap
    layers, do not count). ``preselect=False`` for optional inputs (a Shapes layer of training
    rectangles must never be picked for the user). ``prefer``: layers this is true of are what the
    chooser is for (a segmentation, not a stroke layer); the newest is chosen when the chooser is made
    and (unless ``prefer_new=False``) whenever one is added, and otherwise the person's choice stands.
    """

    def choices(_widget: Any) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in viewer.layers if isinstance(layer, kind)]

    box = ComboBox(choices=choices, label=label, nullable=nullable, tooltip=tooltip)

    reset = box.reset_choices

    def refresh(event: Any = None, initial: bool = False) -> None:
        reset()
        sources = [c for c in box.choices if c is not None and not derived(c)]
        if prefer is not None:
            added = getattr(event, "value", None) if getattr(event, "type", None) == "inserted" else None
            liked = [c for c in sources if prefer(c)]
            new = prefer_new and added is not None and added is liked[-1] if liked else False
            if liked and (initial or new) and box.value is not liked[-1]:
                box.value = liked[-1]
                return
        if preselect and box.value is None and len(sources) == 1:
            box.value = sources[0]

    viewer.layers.events.inserted.connect(refresh)
    viewer.layers.events.removed.connect(refresh)
    box.reset_choices = lambda *_: refresh()  # napari calls it on layer changes; keep the preselection rule
    refresh(initial=True)
    return box


def derived(layer: Any) -> bool:
    """Whether the plugin made ``layer`` from another one (a prediction, probability or heatmap layer)."""
    meta = getattr(layer, "metadata", None) or {}
    return any(k in meta for k in ("ncm_prediction", "ncm_heatmap", "ncm_overlay"))


def on_click(viewer: Any, callback: Any, tolerance: float = 3.0) -> Any:
    """Call ``callback(world_position)`` on a mouse click in the canvas: a press and a release with no
    drag between them (a press that starts a pan or a paint stroke does nothing). Returns the napari
    drag callback, so that a widget can remove it."""
    import numpy as np

    def clicked(_viewer: Any, event: Any) -> Any:
        if event.type != "mouse_press" or getattr(event, "button", 1) != 1:
            return
        position, pos0 = tuple(event.position), np.asarray(getattr(event, "pos", (0, 0)), float)
        moved = False
        yield
        while event.type == "mouse_move":
            moved = moved or float(np.hypot(*(np.asarray(event.pos, float) - pos0))) > tolerance
            yield
        if event.type == "mouse_release" and not moved:
            callback(position)

    viewer.mouse_drag_callbacks.append(clicked)
    return clicked


class ScrollingDock:
    """Mixin for a ``Container(scrollable=True)`` docked in napari: napari docks a magicgui widget's
    ``native``, which for a scrollable container is the inner widget, not its scroll area; this hands
    napari the scroll area, so that a tall dock scrolls instead of growing the window. Add Qt widgets
    to :attr:`inner`."""

    @property
    def native(self) -> Any:
        return self._widget._mgui_get_root_native_widget()

    @property
    def inner(self) -> Any:
        """The widget holding the dock's layout (inside the scroll area)."""
        return self._widget._mgui_get_native_widget()

    def _fit_width(self) -> None:
        """As wide as the fields need (the scroll area scrolls vertically only), at most 480 px; long
        status lines wrap."""
        scroll = self.native
        if scroll is self.inner:
            return
        bar = scroll.verticalScrollBar().sizeHint().width()
        scroll.setMinimumWidth(min(480, self.inner.minimumSizeHint().width() + bar + 4))
