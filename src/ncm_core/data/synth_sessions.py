"""Synthetic SEM frames imaged in microscope *sessions*: a benchmark of generalisation to new sessions.

Real SEM data sets are imaged in sessions, and each class is often imaged in only one or two of them.
Brightness, contrast, gamma, focus, stigmation, noise, JPEG quality and the date/time text of the
information bar are set per session, so a network can learn to recognise the *session* instead of the
particles. :func:`write_sem_sessions` writes frames of :mod:`ncm_core.data.synth` classes with:

* session looks drawn per (class, session), so that in the training sessions each look belongs to one
  class (the trap), and a held-out session of every class shows looks the network has never seen;
* particle sizes that vary from frame to frame and overlap between compositions (a composition cannot be
  told by particle size alone);
* information-bar text that differs per session (a crop that touches it leaks the label);
* imbalanced frame counts per class;
* JPEG files, at each session's quality.

``sessions.csv`` lists every frame with its class and session, so a benchmark can hold out whole sessions.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from ncm_core.data.synth import _COMP, _STATE, CLASS_NAMES, _bar, _fragments, _particle, _scale_bar, _word, class_index

#: The frame files' manifest: ``file,class,session,frame``.
SESSIONS_FILE = "sessions.csv"


@dataclass(frozen=True)
class SemSession:
    """How one microscope session renders a frame (drawn by :meth:`draw`)."""

    gain: float  # contrast, multiplies grey levels about mid-grey
    offset: float  # brightness, grey levels
    gamma: float
    focus: float  # defocus blur, px (Gaussian sigma)
    astigmatism: float  # extra blur along one direction, px
    astig_angle: float  # direction of the astigmatic blur, radians
    noise: float  # scale of the shot noise
    scan_lines: float  # scan-line noise, grey levels
    jpeg_quality: int
    bar_seed: int  # the information bar's text (date, time, settings) of this session

    @classmethod
    def draw(cls, rng: np.random.Generator) -> SemSession:
        """A session look: wide enough that looks of different sessions do not overlap much."""
        return cls(
            gain=float(rng.uniform(0.6, 1.45)),
            offset=float(rng.uniform(-35, 35)),
            gamma=float(np.exp(rng.uniform(-0.4, 0.4))),
            focus=float(rng.uniform(0.4, 1.6)),
            astigmatism=float(rng.uniform(0.0, 1.4)),
            astig_angle=float(rng.uniform(0, np.pi)),
            noise=float(rng.uniform(0.4, 1.3)),
            scan_lines=float(rng.uniform(0.5, 5.0)),
            jpeg_quality=int(rng.integers(35, 92)),
            bar_seed=int(rng.integers(0, 2**31)),
        )


def session_look(class_name: str, session: int, seed: int = 0) -> SemSession:
    """The look of ``session`` of class ``class_name`` (deterministic by seed)."""
    return SemSession.draw(np.random.default_rng([seed, 7919, CLASS_NAMES.index(class_name), session]))


def _anisotropic_kernel(sigma: float, extra: float, angle: float) -> np.ndarray:
    """A normalised 2D Gaussian with ``sigma`` across and ``sqrt(sigma^2 + extra^2)`` along ``angle``."""
    s_along = np.hypot(sigma, extra)
    r = int(np.ceil(3 * max(s_along, 0.5)))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1].astype(np.float64)
    u = xx * np.cos(angle) + yy * np.sin(angle)
    v = -xx * np.sin(angle) + yy * np.cos(angle)
    k = np.exp(-0.5 * ((u / s_along) ** 2 + (v / max(sigma, 0.3)) ** 2))
    return k / k.sum()


def _field(shape: tuple[int, int], composition: str, state: str, rng: np.random.Generator) -> np.ndarray:
    """Particles of one class whose size varies per frame (about +-25 %) and per particle (about +-30 %)."""
    comp, st = _COMP[composition], _STATE[state]
    h, w = shape
    scale = float(np.exp(rng.normal(0, 0.22)))
    out = (38 + 30 * ndimage.gaussian_filter(rng.normal(size=shape), 3)).astype(np.float32)
    _fragments(out, st.fragments * 0.4, rng)
    mean_r = comp.radius * scale
    n = int(0.75 * h * w / (np.pi * mean_r**2)) + 1
    for cy, cx in rng.uniform([-mean_r, -mean_r], [h + mean_r, w + mean_r], size=(n, 2)):
        _particle(out, cy, cx, mean_r * float(np.exp(rng.normal(0, 0.3))), comp, st, rng)
    _fragments(out, st.fragments, rng)
    return out


def _session_bar(img: np.ndarray, rows: int, look: SemSession, frame: int) -> None:
    """A tabletop-SEM bar: session text (date, settings) the same in every frame, plus a frame number."""
    w = img.shape[1]
    bar = _bar(img, rows)
    srng = np.random.default_rng(look.bar_seed)
    x = 8
    for _ in range(int(srng.integers(3, 6))):  # the session's text
        x = _word(bar, x, w * 0.8, srng)
    x = _word(bar, x, w * 0.8, np.random.default_rng([look.bar_seed, frame]))  # the frame's number
    _scale_bar(bar)


def render(img: np.ndarray, look: SemSession, rng: np.random.Generator) -> np.ndarray:
    """Image ``img`` (float grey levels) as ``look``'s session would: blur, stigmation, drift, noise,
    contrast, brightness and gamma; returns uint8 (before JPEG compression)."""
    h, w = img.shape
    img = ndimage.convolve(img, _anisotropic_kernel(look.focus, look.astigmatism, look.astig_angle), mode="reflect")
    gy, gx = np.linspace(-1, 1, h)[:, None], np.linspace(-1, 1, w)[None, :]
    img = img * (1 + 0.06 * rng.normal() * gy + 0.06 * rng.normal() * gx)
    img = img + rng.normal(0, 1, (h, 1)) * look.scan_lines
    img = img + rng.normal(0, 1, img.shape) * np.sqrt(np.clip(img, 1, None)) * 0.7 * look.noise
    img = (img - 110.0) * look.gain + 110.0 + look.offset
    img = 255.0 * (np.clip(img, 0, 255) / 255.0) ** look.gamma
    return np.clip(img, 0, 255).astype(np.uint8)


def jpeg(img: np.ndarray, quality: int) -> bytes:
    """``img`` encoded as JPEG at ``quality`` (Pillow)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=int(quality))
    return buf.getvalue()


def session_frame(
    class_name: str,
    session: int,
    frame: int,
    shape: tuple[int, int] = (512, 512),
    *,
    info_bar: int = 32,
    seed: int = 0,
) -> tuple[np.ndarray, SemSession]:
    """Frame ``frame`` of ``session`` of a class (uint8, before JPEG), and the session's look."""
    comp, state = class_name.split("_")
    look = session_look(class_name, session, seed)
    rng = np.random.default_rng([seed, class_index(comp, state), session, frame])
    img = render(_field(shape, comp, state, rng), look, rng)
    if info_bar:
        _session_bar(img, info_bar, look, frame)
    return img, look


def frame_counts(classes: Sequence[str], frames: int, imbalance: float, seed: int = 0) -> dict[str, int]:
    """Frames per session for each class: from ``frames`` down to ``frames / imbalance`` (at least 2),
    spread geometrically over the classes in a seeded order."""
    rng = np.random.default_rng([seed, 31])
    factors = np.geomspace(1.0, 1.0 / max(imbalance, 1.0), len(classes))[rng.permutation(len(classes))]
    return {c: max(2, int(round(frames * f))) for c, f in zip(classes, factors, strict=True)}


def write_sem_sessions(
    root: str | Path,
    sessions: Sequence[int] = (0, 1),
    frames: int = 6,
    shape: tuple[int, int] = (512, 512),
    *,
    imbalance: float = 3.0,
    info_bar: int = 32,
    seed: int = 0,
    classes: Sequence[str] = CLASS_NAMES,
    overwrite: bool = False,
) -> Path:
    """Write class folders of JPEG frames from ``sessions`` of every class, and ``sessions.csv``.

    ``frames`` is the most frames per session of a class; the counts per class fall to ``frames /
    imbalance`` (:func:`frame_counts`). ``shape`` excludes the ``info_bar`` rows. The same ``seed`` and
    session number give the same look, so ``sessions=(2,)`` written elsewhere holds out session 2 of
    every class. Written whole (under ``<root>.partial``, then renamed).
    """
    from ncm_core.outputs import atomic_output, write_sample_marker

    root = Path(root)
    counts = frame_counts(classes, frames, imbalance, seed)
    rows = []
    with atomic_output(root, overwrite) as part:
        write_sample_marker(part, "sem-sessions", seed)
        for name in classes:
            (part / name).mkdir(parents=True, exist_ok=True)
            for s in sessions:
                for k in range(counts[name]):
                    img, look = session_frame(name, s, k, (shape[0] + info_bar, shape[1]), info_bar=info_bar, seed=seed)
                    fname = f"{name}_s{s}_{k:03d}.jpg"
                    (part / name / fname).write_bytes(jpeg(img, look.jpeg_quality))
                    rows.append({"file": f"{name}/{fname}", "class": name, "session": f"{name}/s{s}", "frame": k})
        with open(part / SESSIONS_FILE, "w", newline="") as f:
            wr = csv.DictWriter(f, fieldnames=["file", "class", "session", "frame"])
            wr.writeheader()
            wr.writerows(rows)
    return root


def describe(look: SemSession) -> dict[str, float]:
    """A session look as a plain dict (for reports)."""
    return {k: round(float(v), 3) for k, v in asdict(look).items()}
