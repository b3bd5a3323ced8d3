"""The session benchmark's data: frames imaged in microscope sessions (ncm_core.data.synth_sessions)."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from PIL import Image

from ncm_core.data.infobar import detect_info_bar
from ncm_core.data.synth_sessions import (
    SESSIONS_FILE,
    frame_counts,
    jpeg,
    session_frame,
    session_look,
    write_sem_sessions,
)

CLASSES = ("NCM333_pristine", "NCM811_cycled100", "NCM622_formation")


def test_a_session_has_one_look_and_sessions_differ():
    assert session_look("NCM333_pristine", 0) == session_look("NCM333_pristine", 0)
    looks = [session_look(c, s) for c in CLASSES for s in range(3)]
    assert len({(lk.gain, lk.offset, lk.jpeg_quality) for lk in looks}) == len(looks)
    gains = [lk.gain for lk in looks]
    assert max(gains) / min(gains) > 1.3  # contrast differs a lot between sessions


def test_frames_are_deterministic_by_seed_and_differ_between_frames():
    a, _ = session_frame("NCM523_formation", 1, 0, (96, 96), info_bar=0, seed=3)
    b, _ = session_frame("NCM523_formation", 1, 0, (96, 96), info_bar=0, seed=3)
    c, _ = session_frame("NCM523_formation", 1, 1, (96, 96), info_bar=0, seed=3)
    d, _ = session_frame("NCM523_formation", 1, 0, (96, 96), info_bar=0, seed=4)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c) and not np.array_equal(a, d)


def test_the_session_sets_brightness_not_the_class():
    """Mean grey level of frames: the spread between sessions of one class exceeds that between classes
    imaged in one look (the trap the benchmark sets for a network that keys on brightness)."""
    means = {
        (c, s): float(np.mean([session_frame(c, s, k, (128, 128), info_bar=0)[0].mean() for k in range(2)]))
        for c in CLASSES
        for s in range(3)
    }
    within = np.mean([np.ptp([means[(c, s)] for s in range(3)]) for c in CLASSES])
    assert within > 25


def test_session_info_bar_text_is_per_session_and_detected():
    (a, _), (b, _) = (session_frame("NCM333_pristine", 0, k, (160, 160)) for k in (0, 1))
    (c, _) = session_frame("NCM333_pristine", 1, 0, (160, 160))
    bar = slice(-32 + 4, -4), slice(0, 60)  # the session text at the left of the bar
    assert np.array_equal(a[bar], b[bar]) and not np.array_equal(a[bar], c[bar])
    for img in (a, c):
        assert detect_info_bar(img) == (-32, None)


def test_frame_counts_are_imbalanced():
    n = frame_counts(CLASSES + ("NCM811_pristine",), 6, 3.0)
    assert max(n.values()) == 6 and min(n.values()) == 2


def test_written_sessions_are_jpeg_with_a_manifest(tmp_path):
    root = write_sem_sessions(tmp_path / "s", (0, 2), 2, (64, 64), imbalance=1, info_bar=16, classes=CLASSES[:2])
    with open(root / SESSIONS_FILE) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 2 * 2
    assert {r["session"] for r in rows} == {f"{c}/s{s}" for c in CLASSES[:2] for s in (0, 2)}
    img = Image.open(root / rows[0]["file"])
    assert img.format == "JPEG" and img.size == (64, 80)
    # session 2 written on its own gives the very same frames (a held-out session)
    alone = write_sem_sessions(tmp_path / "held", (2,), 2, (64, 64), imbalance=1, info_bar=16, classes=CLASSES[:2])
    f2 = next(r["file"] for r in rows if r["session"].endswith("s2"))
    assert (alone / f2).read_bytes() == (root / f2).read_bytes()


def test_jpeg_quality_is_the_sessions():
    img, look = session_frame("NCM811_cycled100", 0, 0, (128, 128), info_bar=0)
    low, high = (np.asarray(Image.open(io.BytesIO(jpeg(img, q))), float) for q in (20, 95))
    assert np.abs(low - img).mean() > np.abs(high - img).mean()
    assert 35 <= look.jpeg_quality < 92


def test_an_unknown_class_writes_nothing(tmp_path):
    with pytest.raises(ValueError):
        write_sem_sessions(tmp_path / "e", (0,), 1, (32, 32), classes=("NCM999_pristine",))
    assert not (tmp_path / "e").exists() and not (tmp_path / "e.partial").exists()
