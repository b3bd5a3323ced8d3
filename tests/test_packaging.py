"""Hub-readiness: the manifest validates with imports, and ships in the wheel as well as in the editable install."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_npe2_validate_with_imports():
    npe2 = Path(sys.executable).parent / "npe2"
    r = subprocess.run([str(npe2), "validate", "napari-ncm", "--imports"], capture_output=True, text=True)
    assert r.returncode == 0 and "valid" in r.stdout, r.stdout + r.stderr


def test_editable_install_finds_the_top_level_manifest():
    from npe2 import PluginManifest

    pm = PluginManifest.from_distribution("napari-ncm")
    assert pm.name == "napari-ncm"
    assert (
        Path(pm.package_metadata and __import__("napari_ncm").__file__).parent.joinpath("napari.yaml").read_text()
        == (ROOT / "napari.yaml").read_text()
    )


@pytest.mark.slow
def test_built_wheel_ships_the_manifest_and_entry_point(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(
        ROOT,
        src,
        symlinks=True,
        ignore=shutil.ignore_patterns(".venv", ".git", "ncm-demo", "*.egg-info", "build", "dist", "__pycache__"),
    )
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path / "dist"),
            str(src),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    [whl] = (tmp_path / "dist").glob("napari_ncm-*.whl")
    with zipfile.ZipFile(whl) as z:
        names = z.namelist()
        assert "napari_ncm/napari.yaml" in names
        assert z.read("napari_ncm/napari.yaml").decode() == (ROOT / "napari.yaml").read_text()
        ep = z.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
        meta = z.read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert "napari-ncm = napari_ncm:napari.yaml" in ep and "ncm = ncm_core.cli:main" in ep
    assert "Classifier: Framework :: napari" in meta and "License-Expression: BSD-3-Clause" in meta
    from npe2 import PluginManifest

    with zipfile.ZipFile(whl) as z:
        z.extract("napari_ncm/napari.yaml", tmp_path / "x")
    assert PluginManifest.from_file(tmp_path / "x" / "napari_ncm" / "napari.yaml").name == "napari-ncm"
