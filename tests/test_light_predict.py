"""Short predictions on a cached ONNX graph: same results as PyTorch, no PyTorch import, a robust cache."""

import json
import logging
import subprocess
import sys

import numpy as np
import pytest
import zarr

from ncm_core.data import synth
from ncm_core.inference import onnx_cache
from ncm_core.inference.predict import predict_mosaic
from ncm_core.io.mosaic import write_ome_zarr
from ncm_core.models.bundle import load_bundle

from .conftest import decisive

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A cache folder of this test's own (NCM_CACHE_DIR)."""
    d = tmp_path / "cache"
    monkeypatch.setenv("NCM_CACHE_DIR", str(d))
    return d


@pytest.fixture(scope="module")
def image():
    return synth.sem_mosaic((96, 160), seed=2).image  # 3 x 5 tiles of the bundle's 32 px: one short run


def _read(path, name):
    return np.asarray(zarr.open_array(str(path / name / "0"), mode="r")[...])


def _cached(cache):
    return sorted(cache.glob("*.onnx"))


def test_light_path_gives_the_pytorch_result(tiny_bundle, image, cache, tmp_path, monkeypatch):
    before = sorted(p.name for p in tiny_bundle.iterdir())
    ref = predict_mosaic(tiny_bundle, image, tmp_path / "ref.zarr", backend="torch")
    first = predict_mosaic(tiny_bundle, image, tmp_path / "first.zarr")  # no graph yet: PyTorch, then cached
    assert first.attrs["backend"] == "torch" and len(_cached(cache)) == 1
    import ncm_core.inference.predict as predict_module

    def no_model(*a, **k):
        raise AssertionError("the light path must not load the model")

    monkeypatch.setattr(predict_module, "load_bundle", no_model)
    light = predict_mosaic(tiny_bundle, image, tmp_path / "light.zarr")
    monkeypatch.undo()
    assert light.attrs["backend"] == "onnxruntime" and light.attrs["complete"] and light.attrs["device"] == "cpu"
    assert set(first.attrs) <= set(light.attrs)  # everything the PyTorch path records
    p_ref, p_light = _read(ref.path, "probabilities"), _read(light.path, "probabilities")
    np.testing.assert_allclose(p_light, p_ref, rtol=0, atol=1e-5)
    ok = decisive(np.moveaxis(p_ref, 0, -1))
    assert ok.mean() > 0.9 and np.array_equal(light.classes[ok], ref.classes[ok])
    assert ref.attrs["ood"] and light.attrs["ood"] == ref.attrs["ood"]
    np.testing.assert_allclose(_read(light.path, "ood"), _read(ref.path, "ood"), rtol=1e-5, atol=1e-5)
    assert light.attrs["n_ood"] == ref.attrs["n_ood"]
    # byte for byte what the PyTorch path computes with the same graph
    ort = predict_mosaic(load_bundle(tiny_bundle), image, tmp_path / "ort.zarr", backend="onnxruntime")
    for name in ("labels", "probabilities", "ood"):
        assert _read(ort.path, name).tobytes() == _read(light.path, name).tobytes(), name
    assert sorted(p.name for p in tiny_bundle.iterdir()) == before  # nothing written next to the bundle


SECOND_RUN = """
import json, sys
from ncm_core.inference.predict import predict_mosaic
p = predict_mosaic(sys.argv[1], sys.argv[2], sys.argv[3])
heavy = ("torch", "timm", "distributed", "matplotlib")
print(json.dumps({"backend": p.attrs["backend"], "modules": sorted(m for m in heavy if m in sys.modules)}))
"""


def test_a_second_short_run_imports_neither_torch_nor_timm(tiny_bundle, image, cache, tmp_path):
    mosaic = write_ome_zarr(tmp_path / "m.ome.zarr", image, chunks=64)
    script = tmp_path / "run.py"
    script.write_text(SECOND_RUN)
    runs = []
    for name in ("a.zarr", "b.zarr"):
        r = subprocess.run(
            [sys.executable, str(script), str(tiny_bundle), str(mosaic), str(tmp_path / name)],
            capture_output=True,
            text=True,
            check=True,
        )
        runs.append(json.loads(r.stdout.strip().splitlines()[-1]))
    assert runs[0]["backend"] == "torch" and {"timm", "torch"} <= set(runs[0]["modules"])
    assert runs[1] == {"backend": "onnxruntime", "modules": []}
    files = _cached(cache)
    assert len(files) == 1 and files[0].name.startswith("features-")  # the bundle has an OOD detector


def test_a_damaged_cache_file_is_ignored_and_rewritten(tiny_bundle, image, cache, tmp_path):
    predict_mosaic(tiny_bundle, image, tmp_path / "a.zarr")
    (f,) = _cached(cache)
    good = f.read_bytes()
    f.write_bytes(good[: len(good) // 3])  # truncated
    again = predict_mosaic(tiny_bundle, image, tmp_path / "b.zarr")
    assert again.attrs["backend"] == "torch"  # not used: predicted with PyTorch and exported again
    assert _cached(cache) == [f] and f.read_bytes() == good
    assert predict_mosaic(tiny_bundle, image, tmp_path / "c.zarr").attrs["backend"] == "onnxruntime"
    f.write_bytes(b"not onnx at all")
    assert predict_mosaic(tiny_bundle, image, tmp_path / "d.zarr").attrs["backend"] == "torch"
    assert f.read_bytes() == good
    assert not list(cache.glob("*.tmp"))  # written under a temporary name and renamed


def test_a_graph_cached_for_another_model_is_not_used(tiny_bundle, image, cache, tmp_path):
    predict_mosaic(tiny_bundle, image, tmp_path / "a.zarr")
    (f,) = _cached(cache)
    b = load_bundle(tiny_bundle)
    retagged = onnx_cache.tag(f.read_bytes(), "0" * 64)  # a valid graph whose key is another one
    f.write_bytes(retagged)
    assert onnx_cache.load_cached(b, "features") is None and not f.exists()


def test_the_cache_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("NCM_CACHE_DIR", str(tmp_path / "mine"))
    assert onnx_cache.cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("NCM_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert onnx_cache.cache_dir() == tmp_path / "xdg" / "napari-ncm" / "onnx"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert onnx_cache.cache_dir() == tmp_path / "home" / ".cache" / "napari-ncm" / "onnx"


def test_the_suite_never_writes_to_the_home_cache():
    import os

    assert os.environ.get("NCM_CACHE_DIR")  # set by conftest for the whole run


def test_a_resumed_run_keeps_the_backend_of_its_first_part(tiny_bundle, image, cache, tmp_path):
    import threading

    from ncm_core.errors import Cancelled

    stop = threading.Event()
    kw = dict(max_block_pixels=32 * 32 * 2)
    with pytest.raises(Cancelled):
        predict_mosaic(
            tiny_bundle,
            image,
            tmp_path / "p.zarr",
            cancel=stop,
            progress=lambda d, t, m: stop.set() if d >= 2 else None,
            **kw,
        )
    predict_mosaic(tiny_bundle, image, tmp_path / "other.zarr", **kw)  # caches the graph
    assert _cached(cache)
    resumed = predict_mosaic(tiny_bundle, image, tmp_path / "p.zarr", **kw)
    assert resumed.attrs["backend"] == "torch"


def test_a_failed_export_only_logs_once(tiny_bundle, image, cache, tmp_path, monkeypatch, caplog):
    from ncm_core.inference import light, runtime

    def broken(*a, **k):
        raise RuntimeError("exporter says no\nsecond line")

    monkeypatch.setattr(runtime, "export_to_cache", broken)
    monkeypatch.setattr(light, "_WARNED", [])
    with caplog.at_level(logging.WARNING, logger="ncm_core.inference.light"):
        for name in ("a.zarr", "b.zarr"):
            assert predict_mosaic(tiny_bundle, image, tmp_path / name).attrs["complete"]
    warned = [r for r in caplog.records if "could not cache the ONNX graph" in r.getMessage()]
    assert len(warned) == 1 and "exporter says no" in warned[0].getMessage() and not _cached(cache)


def test_numpy_ood_ratio_matches_the_torch_one(tiny_bundle):
    import torch

    from ncm_core.models.bundle import config_bundle
    from ncm_core.models.ood import ood_ratio, ood_ratio_array

    b = load_bundle(tiny_bundle)
    d = b.extra["ood.transform"].shape[0]
    f = torch.randn(50, d, generator=torch.Generator().manual_seed(0)) * 3
    ref = ood_ratio(b, f).numpy()
    light = config_bundle(tiny_bundle)
    assert isinstance(light.extra["ood.means"], np.ndarray) and light.model is None
    for bundle in (b, light):
        got = ood_ratio_array(bundle, f.numpy())
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


def test_class_colours_are_matplotlibs_tables():
    import matplotlib

    from ncm_core.io.colors import TABLES, class_colors, table_color

    for name, table in TABLES.items():
        cmap = matplotlib.colormaps[name]
        assert len(table) == cmap.N
        for k in range(cmap.N):
            assert table_color(name, k) == tuple(float(v) for v in cmap(k)), (name, k)
    tab20c = matplotlib.colormaps["tab20c"]
    assert class_colors(12)[4] == tuple(float(v) for v in tab20c(5))
    assert class_colors(3) == [tuple(float(v) for v in matplotlib.colormaps["tab10"](k)) for k in range(3)]


def test_class_colours_follow_class_names_not_their_order():
    from ncm_core.data.annotations import Rectangle, class_order
    from ncm_core.data.synth import CLASS_NAMES
    from ncm_core.io.colors import class_colors

    names = list(CLASS_NAMES)  # the sample's (truth map's) order; a bundle sorts them
    assert dict(zip(names, class_colors(names))) == dict(zip(sorted(names), class_colors(sorted(names))))
    assert class_colors(names) == class_colors(12)  # the 12 NCM classes keep their colours
    assert len(set(class_colors(names))) == 12
    user = ["pore", "crack", "binder", "carbon black"]  # other names: stable, distinct, order-free
    by_name = dict(zip(user, class_colors(user)))
    assert by_name == dict(zip(sorted(user), class_colors(sorted(user)))) and len(set(by_name.values())) == 4
    assert class_colors(["pore", *names])[1:] == class_colors(names)  # an extra class changes no NCM colour
    # annotations keep the user's order: painted values first, then rectangle classes as they appear
    rects = [Rectangle("zz", 0, 0, 1, 1), Rectangle("aa", 0, 0, 1, 1)]
    assert class_order({1: "b", 2: "a", 3: "c"}, rects, {"c", "a", "zz", "aa", "b"}) == ["b", "a", "c", "zz", "aa"]
    assert class_order({1: "b", 2: "a"}, [], {"a"}) == ["a"]


def test_class_colours_need_no_matplotlib():
    code = (
        "import sys\n"
        "from ncm_core.io.colors import class_colors\n"
        "class_colors(12)\n"
        "print(sorted(m for m in ('matplotlib',) if m in sys.modules))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "[]"


def test_a_model_whose_file_was_rewritten_is_not_cached(tiny_bundle, image, cache, tmp_path):
    import os
    import shutil

    copy = shutil.copytree(tiny_bundle, tmp_path / "bundle")
    b = load_bundle(copy)
    st = (copy / "model.safetensors").stat()
    os.utime(copy / "model.safetensors", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # e.g. retrained since
    p = predict_mosaic(b, image, tmp_path / "p.zarr", backend="onnxruntime")
    assert p.attrs["backend"] == "onnxruntime" and not _cached(cache)  # exported in memory only
    predict_mosaic(load_bundle(copy), image, tmp_path / "q.zarr", backend="onnxruntime")
    assert len(_cached(cache)) == 1  # loaded afresh: cached
