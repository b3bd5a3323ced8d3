"""Generating microstructure: a 3D generator from a 2D phase map, volumes streamed to zarr, inpainting and
super-resolution on the streaming engine, and the bad inputs of each, one line each."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True)
def _one_thread():
    """Small networks: one thread is fastest, and kind to a shared CPU."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def phase_map(shape=(96, 96), fraction=0.3, seed=0) -> np.ndarray:
    """A two-phase map of smooth blobs whose phase 1 covers ``fraction`` of the pixels."""
    from scipy import ndimage as ndi

    f = ndi.gaussian_filter(np.random.default_rng(seed).random(shape), 2)
    return (f > np.quantile(f, 1 - fraction)).astype(np.uint8)


def random_generator(tmp_path, size=16):
    """An untrained generator with non-trivial BatchNorm statistics, saved as a bundle."""
    from ncm_core.models.slicegan import GeneratorBundle, GeneratorSpec, build_generator

    torch.manual_seed(0)
    spec = GeneratorSpec([0, 1], size=size, latent_channels=4, gen_width=4, critic_width=4)
    model = build_generator(spec)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return GeneratorBundle(spec, model.eval()).save(tmp_path / "gen")


# ------------------------------------------------------------------------------------------------ 2D -> 3D


def test_generator_trains_on_a_tiny_two_phase_image(tmp_path):
    from ncm_core.inference.generate import generate_volume, read_volume
    from ncm_core.training.generate import train_generator

    image = phase_map(fraction=0.27)
    seen = []
    bundle = train_generator(
        image,
        tmp_path / "gen",
        size=16,
        iterations=100,
        gen_width=8,
        critic_width=8,
        latent_channels=8,
        batch_size=2,
        lr=1e-3,  # a short run: SliceGAN's 1e-4 needs thousands of steps
        fraction_weight=50.0,  # and leans on the phase-fraction term
        device="cpu",
        progress=lambda done, total, msg: seen.append(done) if msg.startswith("step") else None,
    )
    assert seen[-1] == 100
    assert not (bundle / "checkpoint").exists()  # a finished run leaves the bundle only
    vol = generate_volume(bundle, tmp_path / "v.zarr", size=(32, 32, 32), device="cpu")
    v = read_volume(vol)
    assert set(np.unique(v)) == {1, 2}  # both phases (value k + 1 for phase k)
    assert abs((v == 2).mean() - image.mean()) < 0.03, ((v == 2).mean(), image.mean())  # calibrated fractions


def test_calibration_gives_generated_volumes_the_images_phase_fractions(tmp_path):
    from ncm_core.inference.generate import generate_volume, read_volume
    from ncm_core.models.slicegan import GeneratorBundle, load_generator
    from ncm_core.training.generate import calibrate_fractions

    raw = load_generator(random_generator(tmp_path))
    volume = generate_volume(raw.path, tmp_path / "raw.zarr", size=(48, 48, 48), seed=5, device="cpu")
    before = (read_volume(volume) == 1).mean()  # phase 0 (value 1) of an untrained generator
    target = [0.25, 0.75] if before > 0.35 else [0.6, 0.4]  # far from where it is
    offsets, record = calibrate_fractions(raw.model, target, raw.spec, "cpu")
    assert record["after"] == pytest.approx(target, abs=2e-3) and not record["capped"]
    raw.spec.logit_offsets = offsets
    GeneratorBundle(raw.spec, raw.model).save(tmp_path / "calibrated")  # offsets in config.json, weights unchanged
    volume = generate_volume(tmp_path / "calibrated", tmp_path / "cal.zarr", size=(48, 48, 48), seed=5, device="cpu")
    after = (read_volume(volume) == 1).mean()  # other latents than calibration's
    assert abs(after - target[0]) < 0.03 < abs(before - target[0]), (before, after, target)
    with torch.no_grad():  # a saturated generator: logits far apart, so no offset within the cap flips a voxel
        [m for m in raw.model if isinstance(m, torch.nn.ConvTranspose3d)][-1].weight.mul_(1000)
    _, unreachable = calibrate_fractions(raw.model, target, raw.spec, "cpu", volumes=4)
    assert unreachable["capped"]  # offsets stop at the cap (structure never redrawn), and the record says so
    assert abs(unreachable["after"][0] - target[0]) > 0.02, unreachable  # short of the target


def test_training_resumes_from_its_checkpoint_to_the_same_weights(tmp_path):
    from ncm_core.errors import Cancelled
    from ncm_core.models.slicegan import load_generator
    from ncm_core.training.generate import train_generator

    image = phase_map(shape=(40, 40))
    kw = dict(size=16, iterations=4, gen_width=4, critic_width=4, latent_channels=4, batch_size=1, critic_iters=1)
    train_generator(image, tmp_path / "whole", checkpoint_every=2, device="cpu", **kw)
    steps = []
    with pytest.raises(Cancelled):
        train_generator(image, tmp_path / "cut", checkpoint_every=2, device="cpu", **kw,
                        progress=lambda d, t, m: steps.append(d), cancel=lambda: len(steps) >= 3)  # fmt: skip
    assert (tmp_path / "cut" / "checkpoint" / "state.json").exists()
    train_generator(image, tmp_path / "cut", checkpoint_every=2, device="cpu", **kw)
    a = load_generator(tmp_path / "whole").model.state_dict()
    b = load_generator(tmp_path / "cut").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_calibration_reports_progress_and_a_cancel_there_keeps_the_checkpoint(tmp_path):
    """The phase-fraction calibration after the last step takes ~25 s on two cores: the Generate dock showed
    the last step meanwhile and its Cancel waited for the end."""
    from ncm_core.errors import Cancelled
    from ncm_core.training.generate import train_generator

    image = phase_map(shape=(40, 40))
    kw = dict(size=16, iterations=2, gen_width=4, critic_width=4, latent_channels=4, batch_size=1, critic_iters=1)
    msgs = []
    with pytest.raises(Cancelled):
        train_generator(image, tmp_path / "g", device="cpu", **kw, progress=lambda d, t, m: msgs.append(m),
                        cancel=lambda: any(m.startswith("calibrating") for m in msgs))  # fmt: skip
    assert msgs[-2:] == ["step 2/2 wasserstein " + msgs[-2].split()[-1], "calibrating phase fractions: volume 1/128"]
    assert (tmp_path / "g" / "checkpoint" / "state.json").exists()  # Train again resumes, then calibrates
    msgs.clear()
    bundle = train_generator(image, tmp_path / "g", device="cpu", **kw, progress=lambda d, t, m: msgs.append(m))
    assert msgs[-1] == "calibrating phase fractions: volume 128/128" and not (bundle / "checkpoint").exists()


def test_streamed_volume_equals_the_whole_latents_and_memory_is_bounded(tmp_path):
    from ncm_core.inference.generate import generate_volume, read_volume
    from ncm_core.models.slicegan import load_generator

    bundle = load_generator(random_generator(tmp_path))
    whole = read_volume(generate_volume(bundle, tmp_path / "whole.zarr", size=(40, 50, 37), block=64, seed=3))
    calls = []
    forward = bundle.model.forward
    bundle.model.forward = lambda z: calls.append(z.shape[2:]) or forward(z)
    streamed = read_volume(generate_volume(bundle, tmp_path / "blocks.zarr", size=(40, 50, 37), block=16, seed=3))
    assert len(calls) == 3 * 4 * 3  # one generator call per block
    assert max(int(np.prod(s)) for s in calls) <= 5**3  # each a small latent sub-block, whatever the volume size
    np.testing.assert_array_equal(streamed, whole)  # no seams: every block is the whole latent's output
    other = read_volume(generate_volume(bundle, tmp_path / "other.zarr", size=(40, 50, 37), block=64, seed=4))
    assert (other != whole).any()  # the seed decides the volume


def test_reader_opens_a_generated_volume_in_3d(tmp_path):
    from napari_ncm._reader import napari_get_reader
    from ncm_core.inference.generate import generate_volume

    out = generate_volume(random_generator(tmp_path), tmp_path / "v.zarr", size=(20, 24, 28), block=16)
    (data, kw, kind), *_ = napari_get_reader(str(out))(str(out))
    assert kind == "labels" and data.shape == (20, 24, 28) and len(kw["scale"]) == 3


def test_check_measures_known_inputs_and_writes_its_record(tmp_path):
    import json

    from ncm_core.evaluation.generate import check_generator, compare, image_measures, slice_measures
    from ncm_core.models.slicegan import GeneratorBundle, load_generator

    image = phase_map((48, 48), fraction=0.35)
    real = image_measures(image, [0, 1])
    assert real["1"]["fraction"] == pytest.approx(image.mean())
    assert real["1"]["s2"][0] == pytest.approx(image.mean(), abs=0.02)  # S2(0) is the phase fraction
    stacked = np.repeat(image[None], 8, axis=0)  # every slice normal to z is the image itself
    along_z = slice_measures(stacked, [0, 1], slices=3)[0]
    c = compare(real, along_z)["1"]
    assert c["fraction_difference"] == 0 and c["s2_rmse"] < 1e-9 and c["chord_cdf_rmse"] < 1e-9
    assert c["interface_density_ratio"] == pytest.approx(1) and c["d50_ratio"] == pytest.approx(1)

    b = load_generator(random_generator(tmp_path))
    b.spec.training["measures"] = {"images": [real]}
    bundle = GeneratorBundle(b.spec, b.model).save(tmp_path / "with-measures")
    record = check_generator(bundle, tmp_path / "check", volumes=2, size=16, slices=2, tortuosity=False, device="cpu")
    assert len(record["comparison"]) == 3 and len(record["volumetric"]["1"]["fraction"]["values"]) == 2
    assert json.loads((tmp_path / "check" / "check.json").read_text())["phases"] == [0, 1]
    assert (tmp_path / "check" / "check.png").stat().st_size > 0


# ------------------------------------------------------------------------------------------------ inpainting


@pytest.mark.parametrize("kind", ["labels", "grey"])
def test_inpainting_fills_the_mask_only_and_matches_its_surroundings(kind):
    from scipy import ndimage as ndi

    from ncm_core.inference.inpaint import inpaint_array

    image = phase_map((160, 160), fraction=0.4)
    if kind == "grey":
        image = (ndi.gaussian_filter(image * 150.0, 1.5) + 50).astype(np.float32)
    mask = np.zeros(image.shape, bool)
    mask[60:100, 50:90] = True
    filled = inpaint_array(image, mask)
    np.testing.assert_array_equal(filled[~mask], image[~mask])  # unmasked pixels unchanged
    if kind == "labels":
        assert set(np.unique(filled[mask])) == {0, 1}

    def stats(a):  # the bright (phase 1) fraction and the interface density of a 40 x 40 region
        bright = a > (0.5 if kind == "labels" else 125)
        return bright.mean(), (np.diff(bright, axis=0) != 0).mean() + (np.diff(bright, axis=1) != 0).mean()

    rng = np.random.default_rng(1)
    regions = []  # the same statistics over unmasked regions of the same size
    while len(regions) < 40:
        y, x = rng.integers(0, 120, 2)
        if not mask[y : y + 40, x : x + 40].any():
            regions.append(stats(image[y : y + 40, x : x + 40]))
    lo, hi = np.min(regions, axis=0), np.max(regions, axis=0)
    fraction, interfaces = stats(filled[60:100, 50:90])
    assert lo[0] <= fraction <= hi[0], (fraction, lo[0], hi[0])
    # patch seams add a little interface: within the spread, or at most 15 % above it (benchmarks/generate.py)
    assert lo[1] <= interfaces <= 1.15 * hi[1], (interfaces, lo[1], hi[1])


@pytest.mark.parametrize("suffix", [".tif", ".png"])
def test_inpaint_overwrite_replaces_its_own_output_and_nothing_else(tmp_path, capsys, suffix):
    from ncm_core.cli import main

    image = _png(tmp_path / "image.png", phase_map((64, 64)))
    mask_arr = np.zeros((64, 64), np.uint8)
    mask_arr[20:30, 20:30] = 1
    mask = _png(tmp_path / "mask.png", mask_arr)
    out = tmp_path / f"filled{suffix}"
    assert main(["inpaint", str(image), str(mask), str(out), "-q"]) in (0, None)
    first = out.read_bytes()
    line = _one_line(capsys, "inpaint", image, mask, out, "-q")
    assert "output exists" in line and "--overwrite" in line
    assert main(["inpaint", str(image), str(mask), str(out), "--seed", "7", "-q", "--overwrite"]) in (0, None)
    assert out.read_bytes() != first  # replaced: it carries napari-ncm's Software tag
    foreign = tmp_path / f"foreign{suffix}"
    foreign.write_bytes((tmp_path / "image.png").read_bytes() if suffix == ".png" else first[:0] + b"not ours")
    line = _one_line(capsys, "inpaint", image, mask, foreign, "-q", "--overwrite")
    assert "a file napari-ncm did not write" in line
    assert foreign.exists()


# -------------------------------------------------------------------------------------------- super-resolution


def test_superres_on_the_engine_has_no_seams(tmp_path):
    from ncm_core.inference.superres import apply_superres, read_superres
    from ncm_core.models.superres import SuperresBundle, SuperresSpec, build_superres
    from ncm_core.training.superres import upscale

    torch.manual_seed(0)
    spec = SuperresSpec(factor=2, width=8, depth=4)
    model = build_superres(spec)
    torch.nn.init.normal_(model.body[-1].weight, std=0.1)  # a network that does more than bicubic
    bundle = SuperresBundle(spec, model.eval())
    image = np.random.default_rng(0).random((70, 90)).astype(np.float32)
    out = apply_superres(bundle, image, tmp_path / "sr.zarr", window=32, chunk=24, device="cpu")
    tiled = read_superres(out)
    h = spec.halo
    whole = upscale(model, np.pad(image, h, mode="reflect"))[2 * h : -2 * h, 2 * h : -2 * h]  # the same borders
    assert tiled.shape == (140, 180)
    np.testing.assert_allclose(tiled, whole, atol=1e-5)


def test_superres_training_reports_against_bicubic(tmp_path):
    import json

    from scipy import ndimage as ndi

    from ncm_core.training.superres import train_superres

    image = ndi.gaussian_filter(phase_map((160, 200), 0.4) * 200.0, 1.0).astype(np.float32)
    out = train_superres(image, tmp_path / "sr", factor=4, iterations=60, batch_size=8, width=16, crop=64, device="cpu")
    held = json.loads((out / "config.json").read_text())["training"]["held_out"]
    assert held["network"]["psnr"] > held["bicubic"]["psnr"]


# --------------------------------------------------------------------------------------- bad input, one line


def _one_line(capsys, *argv):
    from ncm_core.cli import main

    assert main(list(map(str, argv))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def _png(path, array):
    from PIL import Image

    Image.fromarray(np.asarray(array, np.uint8)).save(path)
    return path


def test_bad_inputs_are_one_line_each(tmp_path, capsys):
    grey = _png(tmp_path / "grey.png", np.random.default_rng(0).integers(0, 255, (64, 64)))
    two = _png(tmp_path / "two.png", phase_map((64, 64)))
    three = _png(tmp_path / "three.png", phase_map((64, 64)) + (phase_map((64, 64), seed=1) > 0) * 2 % 3)
    small = _png(tmp_path / "small.png", phase_map((24, 24)))
    line = _one_line(capsys, "generate", "train", grey, tmp_path / "g", "-q")
    assert "grey-level image" in line and "segment it first" in line
    line = _one_line(capsys, "generate", "train", two, two, three, tmp_path / "g", "-q")
    assert "same phases" in line
    line = _one_line(capsys, "generate", "train", small, tmp_path / "g", "--size", "32", "-q")
    assert "smaller than the generator's field of view" in line
    full = _png(tmp_path / "full.png", np.ones((64, 64)))
    line = _one_line(capsys, "inpaint", two, full, tmp_path / "f.png", "-q")
    assert "covers the whole image" in line
    gen = random_generator(tmp_path)
    line = _one_line(capsys, "generate", "volume", gen, tmp_path / "v.zarr", "--size", "100000", "-q")
    assert "too large for the disk" in line
    from ncm_core.models.superres import SuperresBundle, SuperresSpec, build_superres

    SuperresBundle(SuperresSpec(factor=4), build_superres(SuperresSpec(factor=4))).save(tmp_path / "sr")
    line = _one_line(capsys, "superres", "apply", tmp_path / "sr", two, tmp_path / "o.zarr", "--factor", "2", "-q")
    assert "trained for 4x super-resolution, not 2x" in line
    assert not (tmp_path / "g").exists() and not (tmp_path / "o.zarr").exists()
