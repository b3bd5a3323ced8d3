"""The Inpaint and Generate dock widgets in a real napari viewer (run under xvfb-run): paint a mask and fill
it, an empty mask as one notification line; train a generator and open a volume in 3D."""

import numpy as np
import pytest

pytest.importorskip("napari")
pytestmark = pytest.mark.gui


def _phase_map() -> np.ndarray:
    from scipy import ndimage as ndi

    f = ndi.gaussian_filter(np.random.default_rng(0).random((96, 96)), 2)
    return (f > np.quantile(f, 0.6)).astype(np.uint8) + 1


def test_painted_mask_is_filled_and_nothing_else_changes(make_napari_viewer):
    viewer = make_napari_viewer()
    image = viewer.add_labels(_phase_map(), name="phases", scale=(0.5, 0.5))
    _, widget = viewer.window.add_plugin_dock_widget("napari-ncm", "Inpaint")
    assert widget.image.value is image  # the one layer is chosen
    mask = widget.add_mask_layer()
    assert mask.data.shape == image.data.shape and widget.mask.value.name == mask.name == "phases mask"
    assert tuple(mask.scale) == (0.5, 0.5), tuple(mask.scale)
    mask.data[30:50, 40:70] = 1  # a painted stroke
    widget.run(sync=True)
    filled = viewer.layers["phases inpainted"]
    assert type(filled).__name__ == "Labels" and tuple(filled.scale) == (0.5, 0.5)
    painted = mask.data > 0
    np.testing.assert_array_equal(filled.data[~painted], image.data[~painted])
    assert set(np.unique(filled.data[painted])) <= {1, 2}


def test_inpaint_chooses_a_2d_image_over_a_generated_volume(make_napari_viewer):
    """A generated 3D volume opened first and a 2D image after it: Inpaint takes 2D images, so that is chosen;
    a mask layer added later does not take its place."""
    viewer = make_napari_viewer()
    viewer.add_labels(np.ones((8, 16, 16), np.uint8), name="generated-0")
    image = viewer.add_labels(_phase_map(), name="phases")
    _, widget = viewer.window.add_plugin_dock_widget("napari-ncm", "Inpaint")
    assert widget.image.value is image
    widget.add_mask_layer()
    assert widget.image.value is image


def test_empty_mask_is_one_line(make_napari_viewer, notifications):
    notifications.expect(r"^error: Inpaint: .*the mask is empty", times=1)
    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(0).random((64, 64)).astype(np.float32), name="grey")
    _, widget = viewer.window.add_plugin_dock_widget("napari-ncm", "Inpaint")
    widget.add_mask_layer()
    assert widget.run(sync=True) is None
    assert widget.status.value.startswith("Error:") and "grey inpainted" not in viewer.layers


def test_generate_widget_trains_and_opens_a_volume_in_3d(make_napari_viewer, tmp_path, notifications):
    from PIL import Image

    Image.fromarray(_phase_map() * 100).save(tmp_path / "phases.png")
    notifications.expect(r"^error: Generate: .*holds a finished generator", times=1)
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-ncm", "Generate")
    widget.images.value = str(tmp_path / "phases.png")
    widget.bundle.value = str(tmp_path / "gen")
    widget.size.value, widget.iterations.value = 16, 3
    widget.run(sync=True)
    assert (tmp_path / "gen" / "model.safetensors").is_file(), widget.status.value
    assert "phase fractions" in widget.status.value and "-> " in widget.status.value  # what calibration did
    # training again into the finished generator's folder: refused in the dock's words, until Replace is ticked
    assert widget.run(sync=True) is None
    assert widget.status.value.endswith("tick 'Replace a finished generator there'"), widget.status.value
    widget.volume_size.value = 24
    widget.generate(sync=True)
    layer = viewer.layers[-1]
    assert type(layer).__name__ == "Labels" and layer.data.shape == (24, 24, 24) and viewer.dims.ndisplay == 3
