"""Shared fixtures: small bundles and datasets made by the project itself (nothing downloaded)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")
# exported ONNX graphs go to a temporary cache, never the user's; set at import, so that subprocesses and
# environments copied at import time (tests/test_cli.py) inherit it
_CACHE = tempfile.mkdtemp(prefix="ncm-test-cache-")
os.environ["NCM_CACHE_DIR"] = _CACHE


def pytest_configure(config) -> None:
    # fixtures may import torch after a viewer has loaded Mesa's LLVM: keep triton out, as the plugin does
    from napari_ncm._torch import guard_triton

    guard_triton()


@pytest.fixture(scope="session", autouse=True)
def _onnx_cache_dir():
    """The temporary ONNX graph cache of this run (``NCM_CACHE_DIR``), removed at the end."""
    yield _CACHE
    shutil.rmtree(_CACHE, ignore_errors=True)


@pytest.fixture(scope="session")
def sem_folders(tmp_path_factory) -> Path:
    """A class-per-folder dataset: 3 classes x 3 small SEM frames with a 16-row info bar."""
    from ncm_core.data import synth

    root = tmp_path_factory.mktemp("data") / "frames"
    return synth.write_sem_dataset(
        root,
        frames_per_class=3,
        shape=(144, 128),
        info_bar=16,
        classes=("NCM333_pristine", "NCM811_pristine", "NCM811_cycled100"),
    )


@pytest.fixture(scope="session")
def tiny_bundle(sem_folders, tmp_path_factory) -> Path:
    """A briefly trained ResNet-10t bundle: 3 SEM classes, grayscale, 32 px tiles.

    Trained (two seconds on CPU) rather than random, so its outputs differ
    from tile to tile and tests can tell tiles apart by their probabilities
    (an untrained or briefly trained EfficientNet gives the same output for
    every tile).
    """
    from ncm_core.training.classify import train

    out = tmp_path_factory.mktemp("bundles") / "tiny"
    train(
        sem_folders,
        out,
        architecture="resnet10t",
        tile_size=32,
        epochs=3,
        crops_per_image=24,
        batch_size=16,
        lr=3e-3,
        exclude_rows=(-16, None),
        seed=0,
        recipe="basic",  # the plain recipe: three epochs give outputs that differ from tile to tile
    )
    return out


def decisive(probs: np.ndarray, margin: float = 1e-3) -> np.ndarray:
    """Cells whose top two class probabilities differ by more than ``margin`` (argmax is stable there)."""
    top2 = np.sort(probs, axis=-1)[..., -2:]
    return (top2[..., 1] - top2[..., 0]) > margin


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def section_set(tmp_path_factory) -> Path:
    """Six synthetic cross-section mosaics (three porosities, tilted up to 3 degrees) and targets.csv."""
    from ncm_core.data import synth

    return synth.write_section_dataset(
        tmp_path_factory.mktemp("sections") / "mosaics",
        porosities=(0.25, 0.35, 0.45),
        per_porosity=2,
        shape=(460, 1200),
        thickness_px=280,
    )


@pytest.fixture(scope="session")
def section_crops(section_set, tmp_path_factory) -> Path:
    """Sliding-window crops of 128 x 384 px of every mosaic of ``section_set``."""
    from ncm_core.data.sections import extract_sections

    return extract_sections(
        sorted(section_set.glob("*.ome.tif")),
        tmp_path_factory.mktemp("crops") / "crops",
        crop=(128, 384),
        mode="sliding",
        stride=(64, 192),
    )


@pytest.fixture(scope="session")
def tiny_regressor(section_crops, section_set, tmp_path_factory) -> Path:
    """An ncm_vgg regression bundle (the CNN alone) trained for a few epochs on ``section_crops`` (32 x 96 px input)."""
    from ncm_core.training.regression import train_regressor

    out = tmp_path_factory.mktemp("bundles") / "regressor"
    train_regressor(
        section_crops,
        section_set / "targets.csv",
        out,
        groups=["porosity"],
        input_size=(32, 96),
        epochs=3,
        batch_size=8,
        seed=0,
        model="cnn",
    )
    return out


class NotificationRecorder:
    """napari notifications shown during a test: ``expect(pattern, times)`` declares the ones the test
    means to cause; any other error or warning notification fails the test (see the ``notifications``
    fixture), as a person would see it as a toast."""

    def __init__(self, manager) -> None:
        self.manager, self.start = manager, len(manager.records)
        self.expected: list[tuple[str, int | None]] = []

    def new(self, severities=("error", "warning")) -> list:
        return [n for n in self.manager.records[self.start :] if str(n.severity) in severities]

    def expect(self, pattern: str, times: int | None = None) -> None:
        """Notifications matching ``pattern`` (a regular expression) are expected, exactly ``times`` of
        them when given (so that a duplicate error fails)."""
        self.expected.append((pattern, times))

    def unexpected(self) -> list[str]:
        import re

        msgs = [f"{n.severity}: {n.message}" for n in self.new()]
        bad = [m for m in msgs if not any(re.search(p, m) for p, _ in self.expected)]
        for p, times in self.expected:
            n = sum(bool(re.search(p, m)) for m in msgs)
            if times is not None and n != times:
                bad.append(f"{n} notifications match {p!r}, expected {times}")
        return bad


@pytest.fixture(autouse=True)
def notifications(request):
    """For GUI tests: record napari's notifications and fail on any error or warning notification the
    test did not declare with ``notifications.expect``."""
    if request.node.get_closest_marker("gui") is None:
        yield None
        return
    from napari.utils.notifications import notification_manager

    rec = NotificationRecorder(notification_manager)
    yield rec
    bad = rec.unexpected()
    if bad:
        pytest.fail("unexpected napari notifications:\n  " + "\n  ".join(bad), pytrace=False)
