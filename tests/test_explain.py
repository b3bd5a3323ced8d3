"""Explanations with models of known answer: where the attribution must lie, its sign, occlusion against
captum's one-at-a-time loop, guided backpropagation through SiLU by hand, mosaic heatmaps against the tiles
they came from, resume, the sanity checks, and one clear error for each bad input."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from ncm_core.errors import NcmError
from ncm_core.explain.methods import METHODS, SIGNED, explain
from ncm_core.models.bundle import BundleConfig, ModelBundle, load_bundle
from ncm_core.models.preprocess import InputSpec


class LeftMask(nn.Module):
    def forward(self, x):
        return x * (torch.arange(x.shape[-1], device=x.device) < x.shape[-1] // 2).to(x.dtype)


class LeftHalfNet(nn.Module):
    """Sees only the left half of its input: features on the right half are multiplied by 0."""

    def __init__(self, act: type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        torch.manual_seed(0)
        conv = nn.Conv2d(1, 4, 3, padding=1, bias=False)
        with torch.no_grad():
            conv.weight.copy_(torch.rand_like(conv.weight) + 0.1)  # positive: bright pixels raise class 0
        self.features = nn.Sequential(conv, act(), LeftMask())
        self.fc = nn.Linear(4, 2)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[1.0, 0.5, 0.8, 0.3], [-1.0, -0.5, -0.8, -0.3]]))
            self.fc.bias.zero_()

    def forward_features(self, x):
        return self.features(x)

    def forward_head(self, f, pre_logits: bool = False):
        f = f.mean((2, 3))
        return f if pre_logits else self.fc(f)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


def _bundle(model: nn.Module, size: int = 32, task: str = "classify", names=("a", "b")) -> ModelBundle:
    cfg = BundleConfig(
        "custom",
        task=task,
        class_names=list(names) if task == "classify" else [],
        target_names=list(names) if task == "regress" else [],
        input=InputSpec(1, (size, size)),
        tile_size=size,
    )
    return ModelBundle(model.eval(), cfg)


@pytest.fixture
def tiles(rng):
    return rng.integers(30, 255, (3, 32, 32)).astype(np.uint8)


@pytest.mark.parametrize("method", list(METHODS))
def test_attribution_lies_on_the_half_the_network_sees(method, tiles):
    bundle = _bundle(LeftHalfNet())
    e = explain(bundle, tiles, method, target=0, window=(4, 4), batch_size=2)
    assert e.maps.shape == (3, 1, 32, 32) and e.signed == (method in SIGNED)
    assert e.layer == ("features" if method not in ("guided-backprop", "occlusion") else None)
    mass = np.abs(e.maps)
    seen = 20 if method == "occlusion" else 17  # column 16 reaches the seen features through the 3x3 conv;
    left = mass[..., :seen].sum() / mass.sum()  # occlusion spreads it over its 4-px window
    assert left > 0.97, f"{method}: only {left:.1%} of the attribution on the seen half"
    if method == "occlusion":  # hiding pixels the network never sees changes nothing, exactly
        assert np.abs(e.maps[..., 20:]).max() == 0


def test_flipping_a_regression_output_flips_the_sign_of_grad_ram(rng):
    from ncm_core.models.factory import build_model

    model = build_model("ncm_vgg", 3, in_chans=1, widths=(8, 8, 8), dense=8).eval()
    bundle = _bundle(model, 48, "regress", ("Q_0.2C", "Q_1C", "Q_5C"))
    tiles = rng.integers(0, 255, (2, 48, 48)).astype(np.uint8)
    before = explain(bundle, tiles, "gradram", target="Q_1C")
    with torch.no_grad():
        model.fc.weight[1].neg_()
        model.fc.bias[1].neg_()
    after = explain(bundle, tiles, "gradram", target="output:1")
    assert np.abs(before.maps).max() > 0
    np.testing.assert_allclose(after.maps, -before.maps, atol=1e-6 * np.abs(before.maps).max())
    assert (before.maps < 0).any() and (before.maps > 0).any()  # signed: both directions of influence
    np.testing.assert_allclose(
        after.scores[:, 1] - bundle.config.regression.get("mean", 0), -before.scores[:, 1], rtol=1e-5
    )


@pytest.mark.parametrize("stride", [4, 2])
@pytest.mark.parametrize("local", [None, False])
def test_batched_occlusion_equals_captums_one_at_a_time_loop(stride, local, rng):
    from captum.attr import Occlusion

    from ncm_core.explain.occlusion import local_plan, occlusion_maps
    from ncm_core.models.factory import build_model

    model = build_model("ncm_vgg", 4, in_chans=3, widths=(8, 8, 8), dense=8).eval()
    x = torch.rand(2, 3, 40, 56, generator=torch.Generator().manual_seed(1))
    if local is None:
        assert local_plan(model, x) is not None  # the fast path really is taken
    targets = np.array([[1, 3], [0, 2]])
    fill = torch.tensor([0.4, 0.5, 0.6])
    ours = occlusion_maps(
        model,
        x,
        targets,
        window=(6, 6),
        stride=(stride, stride),
        fill=fill,
        score=lambda z: torch.softmax(z, 1),
        batch_size=7,
        local=local,
    )
    occ = Occlusion(lambda z: torch.softmax(model(z), 1))
    for k in range(2):
        ref = occ.attribute(
            x,
            sliding_window_shapes=(3, 6, 6),
            strides=(3, stride, stride),
            baselines=fill.reshape(3, 1, 1).expand(3, 40, 56),
            target=targets[:, k].tolist(),
            perturbations_per_eval=1,
        )
        np.testing.assert_allclose(ours[:, k], ref[:, 0].numpy(), atol=1e-5)
        np.testing.assert_allclose(ref[:, 0], ref[:, 2], atol=1e-7)  # every channel gets the window's value


def _silu_prime(z: float) -> float:
    s = 1 / (1 + math.exp(-z))
    return s * (1 + z * (1 - s))


class TwoUnits(nn.Module):
    """out = v0 * silu(2 x) + v1 * silu(0.5 x), summed over pixels; v = (1, -1)."""

    def __init__(self, act: type[nn.Module] = nn.SiLU) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1, bias=False)
        self.act = act()
        self.head = nn.Conv2d(2, 1, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([2.0, 0.5]).reshape(2, 1, 1, 1))
            self.head.weight.copy_(torch.tensor([1.0, -1.0]).reshape(1, 2, 1, 1))

    def forward(self, x):
        return self.head(self.act(self.conv(x))).sum((2, 3))


def test_silu_guided_backprop_follows_the_documented_rule_by_hand():
    from captum.attr import GuidedBackprop, Saliency

    from ncm_core.explain.guided import SmoothGuidedBackprop

    model = TwoUnits().eval()
    x = torch.tensor([[[[1.0, -1.0]]]])
    ours = SmoothGuidedBackprop(model).attribute(x.clone().requires_grad_(True), target=0)[0, 0, 0]
    plain = Saliency(model).attribute(x.clone().requires_grad_(True), target=0, abs=False)[0, 0, 0]
    # rule: R_in = max(f'(z), 0) * max(R_out, 0); R_out of unit c is v_c, dz_c/dx = w_c
    hand = [
        2.0 * max(_silu_prime(2.0 * xi), 0) * max(1.0, 0) + 0.5 * max(_silu_prime(0.5 * xi), 0) * max(-1.0, 0)
        for xi in (1.0, -1.0)
    ]
    grad = [2.0 * _silu_prime(2.0 * xi) - 0.5 * _silu_prime(0.5 * xi) for xi in (1.0, -1.0)]
    np.testing.assert_allclose(ours.detach().numpy(), hand, rtol=1e-5)
    np.testing.assert_allclose(plain.detach().numpy(), grad, rtol=1e-5)
    assert hand[1] == 0 and abs(grad[1]) > 0.1  # x = -1: SiLU's falling part and a negative signal pass nothing
    # captum's own guided backprop rewrites ReLU modules only: on SiLU it is the plain gradient
    theirs = GuidedBackprop(model).attribute(x.clone().requires_grad_(True), target=0)[0, 0, 0]
    np.testing.assert_allclose(theirs.detach().numpy(), grad, rtol=1e-5)


def test_guided_rule_is_captums_on_relu_networks():
    from captum.attr import GuidedBackprop

    from ncm_core.explain.guided import SmoothGuidedBackprop

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    ).eval()
    x = torch.randn(2, 1, 12, 12)
    ours = SmoothGuidedBackprop(model).attribute(x.clone().requires_grad_(True), target=[0, 2])
    model[1].inplace = False  # captum cannot hook in-place modules; ours switches them temporarily
    theirs = GuidedBackprop(model).attribute(x.clone().requires_grad_(True), target=[0, 2])
    np.testing.assert_allclose(ours.detach().numpy(), theirs.detach().numpy(), atol=1e-7)
    assert model[1].inplace is False


def test_guided_backprop_on_efficientnet_is_not_the_plain_gradient(rng):
    from captum.attr import Saliency

    from ncm_core.models.factory import build_model

    model = build_model("efficientnet_b0", 3, in_chans=1).eval()
    bundle = _bundle(model, 64, names=("a", "b", "c"))
    tiles = rng.integers(0, 255, (1, 64, 64)).astype(np.uint8)
    g = explain(bundle, tiles, "guided-backprop", target=1).maps[0, 0]
    x = torch.from_numpy(tiles[:, None].astype(np.float32) / 255).requires_grad_(True)
    plain = Saliency(model).attribute(x, target=1, abs=False)[0, 0].numpy()
    assert np.corrcoef(g.ravel(), plain.ravel())[0, 1] < 0.9
    assert all(getattr(m, "inplace", True) for m in model.modules() if isinstance(m, nn.SiLU))  # restored


def _mosaic(rng, shape=(96, 128)):
    from ncm_core.io.mosaic import open_mosaic

    img = rng.integers(20, 255, shape).astype(np.uint8)
    return img, open_mosaic(img, pixel_size=0.5)


def test_mosaic_heatmap_lines_up_with_the_tiles_it_came_from(rng, tmp_path):
    from ncm_core.explain.heatmaps import explain_mosaic

    bundle = _bundle(LeftHalfNet())
    img, mosaic = _mosaic(rng)
    h = explain_mosaic(bundle, mosaic, tmp_path / "h.zarr", "gradram", target="a", overlap=0, factor=1, device="cpu")
    hm = np.asarray(h.data)
    assert hm.shape == (1, 96, 128) and np.isfinite(hm).all()
    for i, j in [(0, 0), (1, 2), (2, 3)]:
        tile = img[i * 32 : (i + 1) * 32, j * 32 : (j + 1) * 32]
        np.testing.assert_allclose(
            hm[0, i * 32 : (i + 1) * 32, j * 32 : (j + 1) * 32],
            explain(bundle, tile[None], "gradram", target="a").maps[0, 0],
            atol=1e-5,
        )
    # overlapping tiles: where one tile alone covers the mosaic, its own map comes through unchanged
    h2 = explain_mosaic(bundle, mosaic, tmp_path / "h2.zarr", "gradram", target="a", overlap=8, factor=1, device="cpu")
    hm2 = np.asarray(h2.data)
    tile = img[24:56, 48:80]  # tile (1, 2) at stride 24
    own = explain(bundle, tile[None], "gradram", target="a").maps[0, 0]
    np.testing.assert_allclose(hm2[0, 24 + 8 : 56 - 8, 48 + 8 : 80 - 8], own[8:-8, 8:-8], atol=1e-5)
    assert h2.world_transform() == ((0.5, 0.5), (0.0, 0.0))


def test_mosaic_heatmap_with_a_factor_is_placed_on_the_pixel_centres(rng, tmp_path):
    from ncm_core.explain.heatmaps import explain_mosaic, open_heatmap

    bundle = _bundle(LeftHalfNet())
    _, mosaic = _mosaic(rng)
    h = explain_mosaic(bundle, mosaic, tmp_path / "h.zarr", "gradcam", target="all", factor=4, device="cpu")
    assert h.data.shape == (2, 24, 32) and h.names == ["a", "b"]
    assert h.world_transform() == ((2.0, 2.0), (0.75, 0.75))  # t + s (f - 1) / 2
    assert open_heatmap(tmp_path / "h.zarr").limits[0][0] == 0.0  # unsigned: from 0
    top2 = explain_mosaic(bundle, mosaic, tmp_path / "t.zarr", "occlusion", target="top-2", window=(8, 8), device="cpu")
    assert top2.names == ["top-1 class", "top-2 class"] and top2.signed
    lo, hi = top2.limits[0]
    assert lo == -hi


def test_mosaic_heatmap_resumes_to_the_same_result(rng, tmp_path):
    import zarr

    from ncm_core.explain.heatmaps import explain_mosaic, explain_mosaic_steps

    bundle = _bundle(LeftHalfNet())
    _, mosaic = _mosaic(rng, (200, 160))
    kw = dict(method="gradram", target="a", factor=1, block_pixels=64, device="cpu")
    whole = np.asarray(explain_mosaic(bundle, mosaic, tmp_path / "whole.zarr", **kw).data)
    gen = explain_mosaic_steps(bundle, mosaic, tmp_path / "cut.zarr", **kw)
    for _ in range(4):  # three blocks, then stop as if killed
        next(gen)
    gen.close()
    status = np.asarray(zarr.open_array(str(tmp_path / "cut.zarr.partial" / "blocks"))[:])
    assert status.sum() == 3 and status.size > 3
    again = explain_mosaic(bundle, mosaic, tmp_path / "cut.zarr", **kw)
    assert not (tmp_path / "cut.zarr.partial").exists()
    np.testing.assert_array_equal(np.asarray(again.data), whole)


def test_randomisation_check_and_attribution_in_mask(tiles):
    from ncm_core.explain.sanity import attribution_in_mask, deletion_insertion, randomisation_check

    bundle = _bundle(LeftHalfNet())
    e = explain(bundle, tiles, "gradcam", target=0)
    left = np.zeros((32, 32), bool)
    left[:, :16] = True
    r = attribution_in_mask(e.maps, left)
    assert r["area_share"] == 0.5 and r["positive_share_in_mask"] > 0.97 and r["enrichment"] > 1.9
    rep = randomisation_check(bundle, tiles, ["gradram", "occlusion"], target=0, window=(4, 4))
    assert set(rep) == {"gradram", "occlusion"}
    for m in rep.values():
        assert -1 <= m["spearman_abs"] <= 1 and m["cascade"] and m["cascade"][-1][0] == "features"
    curves = deletion_insertion(bundle, tiles, e, steps=8)
    assert curves["deletion"].shape == (3, 1, 9) and curves["insertion"].shape == (3, 1, 9)
    # removing the pixels Grad-CAM ranks first lowers the class score faster than removing them at random
    assert curves["deletion_auc"] < curves["random_deletion_auc"]


def test_particle_boundaries_outline_bright_particles():
    from ncm_core.explain.sanity import particle_boundaries

    img = np.zeros((40, 40), np.uint8)
    img[10:30, 10:30] = 200
    b = particle_boundaries(img, width=1)
    assert b[10, 15] and b[29, 20] and not b[20, 20] and not b[2, 2]


def test_bad_input_gives_one_clear_error_each(tiles, rng):
    from ncm_core.models.factory import build_model

    bundle = _bundle(LeftHalfNet())
    cases = [
        (dict(method="grad_cam_pp"), "unknown explanation method 'grad_cam_pp' (did you mean"),
        (dict(method="gradcam", layer="featurs"), "unknown layer 'featurs'; close matches: features"),
        (dict(method="gradcam", target=5), "class 5 is out of range: the model has 2 classes (0-1)"),
        (dict(method="gradcam", target="output:0"), "asks for a regression output, but the model is a classifier"),
        (dict(method="gradcam", layer="fc"), "layer 'fc' has no spatial output"),
        (dict(method="occlusion", window=(40, 40)), "smaller than the occlusion window"),
        (dict(method="gradcam", target="top-3"), "use 'top-K' with K from 1 to 2"),
    ]
    for kw, msg in cases:
        with pytest.raises(NcmError) as err:
            explain(bundle, tiles, **kw)
        assert msg in str(err.value) and "\n" not in str(err.value)
    reg = _bundle(build_model("ncm_vgg", 2, in_chans=1, widths=(4, 4, 4), dense=4), 32, "regress", ("Q_1C", "Q_5C"))
    for target in ("class:a", "predicted", "top-2"):
        with pytest.raises(NcmError, match="regressor"):
            explain(reg, tiles, "gradram", target=target)
    with pytest.raises(NcmError, match="unknown output 'Q_2C'"):
        explain(reg, tiles, "gradram", target="Q_2C")


def test_explain_a_trained_bundle_from_disk(tiny_bundle, sem_folders):
    from ncm_core.io.mosaic import open_mosaic

    bundle = load_bundle(tiny_bundle)
    frame = next(sem_folders.rglob("*.png"))
    img = np.asarray(open_mosaic(frame).data[:96, :96].compute())
    tiles = np.stack([img[y : y + 32, x : x + 32] for y in (0, 32, 64) for x in (0, 32)])
    e = explain(bundle, tiles, "gradcam", target="top-2")
    assert e.maps.shape == (6, 2, 32, 32) and e.layer
    np.testing.assert_array_equal(e.targets, np.argsort(-e.scores, 1, kind="stable")[:, :2])
    assert np.allclose(e.scores.sum(1), 1, atol=1e-5)


def test_explain_folder_writes_maps_table_and_overview_atomically(tiny_bundle, tmp_path, rng):
    """The folder task is a core function: same files as ``ncm explain`` on a folder, nothing half-written."""
    import csv

    import tifffile
    from PIL import Image

    from ncm_core.explain.options import ExplainOptions
    from ncm_core.workflows.explanations import explain_folder

    tiles = tmp_path / "tiles"
    (tiles / "sub").mkdir(parents=True)
    for k in range(2):
        Image.fromarray(rng.integers(0, 255, (32, 32)).astype(np.uint8)).save(tiles / f"t{k}.png")
    Image.fromarray(rng.integers(0, 255, (32, 32)).astype(np.uint8)).save(tiles / "sub" / "t2.png")
    r = explain_folder(
        tiny_bundle, tiles, tmp_path / "ex", ExplainOptions(target="top-2"), methods="gradcam,gradram", device="cpu"
    )
    out = tmp_path / "ex"
    assert r.path == out and r.images == 3 and r.methods == ["gradcam", "gradram"] and r.overview
    assert r.checks is None and r.check_lines() == []
    assert {p.name for p in (out / "maps").iterdir()} == {
        f"{s}__{m}.tif" for s in ("t0", "t1", "sub__t2") for m in ("gradcam", "gradram")
    }
    assert tifffile.imread(out / "maps" / "t0__gradcam.tif").shape == (2, 32, 32)
    with open(out / "explanations.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 3 * 2 * 2 and set(rows[0]) == {
        "image",
        "method",
        "layer",
        "map",
        "target",
        "score",
        "min",
        "max",
    }
    assert (out / "overview.png").is_file() and not (tmp_path / "ex.partial").exists()
    assert "3 image(s) x 2 method(s)" in r.summary() and "overview.png" in r.summary()
    with pytest.raises(NcmError, match="output exists"):
        explain_folder(tiny_bundle, tiles, out)
    with pytest.raises(NcmError, match="unknown option 'windw'.*'window'"):
        explain_folder(tiny_bundle, tiles, tmp_path / "bad", windw=(8, 8))
    with pytest.raises(NcmError, match="class 9 is out of range"):
        explain_folder(tiny_bundle, tiles, tmp_path / "bad", target=9)
    assert not (tmp_path / "bad").exists() and not (tmp_path / "bad.partial").exists()
    (tiles / "empty").mkdir()
    with pytest.raises(NcmError, match="no images"):
        explain_folder(tiny_bundle, tiles / "empty", tmp_path / "none")


def test_target_choices_and_a_clicked_tile_come_from_the_core(tiny_bundle, rng):
    from ncm_core.explain.interactive import explain_tile_at, target_choices, tile_targets

    bundle = load_bundle(tiny_bundle)
    choices = target_choices(tiny_bundle)
    assert choices[:3] == ["predicted", "top-2", "all"] and choices[3:] == bundle.class_names
    assert target_choices(bundle) == choices and tile_targets(bundle.config) == "top-2"
    image = rng.integers(0, 255, (70, 90)).astype(np.uint8)
    te = explain_tile_at(bundle, image, 40, 80, "gradcam")
    assert (te.y0, te.x0, te.size) == (32, 58, 32) and te.explanation.maps.shape == (1, 2, 32, 32)
    np.testing.assert_array_equal(te.tile, image[32:64, 58:90])
    assert te.describe().startswith("tile y 32, x 58: ")
    assert explain_tile_at(bundle, image, 80, 10) is None
