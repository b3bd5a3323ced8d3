"""Model bundles: a directory holding ``model.safetensors`` and ``config.json``.

The config names the timm architecture, input channels and size, class or
target names, normalisation, the pixel size and tile size the model was trained
at, training metadata and library versions. Loading a bundle reads JSON and
safetensors only: nothing is unpickled.
"""

from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from ncm_core.errors import NcmError
from ncm_core.io.mosaic import read_json
from ncm_core.models.preprocess import InputSpec

FORMAT = "ncm-bundle"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
EXTRA = "extra.safetensors"  # tensors that are not model weights (the OOD detector's statistics)
CONFIG = "config.json"


@dataclass
class BundleConfig:
    """Everything needed to rebuild a model and feed it the right input."""

    architecture: str
    task: Literal["classify", "regress"] = "classify"
    class_names: list[str] = field(default_factory=list)
    target_names: list[str] = field(default_factory=list)
    input: InputSpec = field(default_factory=InputSpec)
    tile_size: int = 224  # pixels of the source image per model input
    pixel_size: float | None = None  # micrometres per pixel of the training images
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    ood: dict[str, Any] = field(default_factory=dict)  # out-of-distribution detector (see ncm_core.models.ood)
    regression: dict[str, Any] = field(
        default_factory=dict
    )  # target scaling, loss, C-rates (see ncm_core.training.regression)
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def num_outputs(self) -> int:
        return len(self.class_names) if self.task == "classify" else len(self.target_names)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input"] = self.input.to_dict()
        return {"format": FORMAT, "format_version": FORMAT_VERSION, **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "config") -> BundleConfig:
        if d.get("format") != FORMAT:
            raise NcmError(f"not a napari-ncm bundle config (format is {d.get('format')!r})", where)
        if int(d.get("format_version", 0)) > FORMAT_VERSION:
            raise NcmError(
                f"bundle format version {d['format_version']} is newer than this napari-ncm "
                f"supports ({FORMAT_VERSION}); upgrade napari-ncm",
                where,
            )
        try:
            cfg = cls(
                architecture=str(d["architecture"]),
                task=d.get("task", "classify"),
                class_names=list(d.get("class_names") or []),
                target_names=list(d.get("target_names") or []),
                input=InputSpec.from_dict(d["input"]),
                tile_size=int(d["tile_size"]),
                pixel_size=d.get("pixel_size"),
                model_kwargs=dict(d.get("model_kwargs") or {}),
                training=dict(d.get("training") or {}),
                ood=dict(d.get("ood") or {}),
                regression=dict(d.get("regression") or {}),
                versions=dict(d.get("versions") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise NcmError(
                f"bundle config is missing or has a bad field ({type(exc).__name__}: {exc})", where
            ) from None
        if cfg.task not in ("classify", "regress"):
            raise NcmError(f"unknown task {cfg.task!r} (expected 'classify' or 'regress')", where)
        if cfg.num_outputs < 1:
            raise NcmError("bundle config names no classes or targets", where)
        return cfg


def library_versions() -> dict[str, str]:
    import timm
    import torch

    from ncm_core._version import __version__

    return {
        "napari-ncm": __version__,
        "torch": torch.__version__,
        "timm": timm.__version__,
        "python": platform.python_version(),
    }


@dataclass
class ModelBundle:
    """A model in evaluation mode with its config; ``path`` is where it was loaded from."""

    model: Any
    config: BundleConfig
    path: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def class_names(self) -> list[str]:
        return self.config.class_names

    def save(self, path: str | Path) -> Path:
        return save_bundle(self.model, self.config, path, extra=self.extra or None)


def save_bundle(model: Any, config: BundleConfig, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model``'s weights (safetensors) and ``config`` (JSON) to directory ``path``.

    Files are written under temporary names and renamed, so a crash never
    leaves a bundle that looks complete but is not.
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if not config.versions:
        config.versions = library_versions()
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp_w, tmp_c = path / (WEIGHTS + ".tmp"), path / (CONFIG + ".tmp")
    save_file(state, str(tmp_w), metadata={"format": FORMAT, "architecture": config.architecture})
    tmp_c.write_text(json.dumps(config.to_dict(), indent=2))
    if extra:
        save_file({k: v.detach().cpu().contiguous() for k, v in extra.items()}, str(path / (EXTRA + ".tmp")))
        (path / (EXTRA + ".tmp")).replace(path / EXTRA)
    elif (path / EXTRA).exists():
        (path / EXTRA).unlink()
    tmp_w.replace(path / WEIGHTS)
    tmp_c.replace(path / CONFIG)
    return path


def read_bundle_config(path: str | Path) -> BundleConfig:
    """The validated config of the bundle directory ``path`` (which must also hold its weights file),
    without loading the model: JSON only, no PyTorch."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise NcmError(
            "model bundle not found (expected a directory with config.json and model.safetensors)"
            if not path.exists()
            else "a model bundle is a directory with config.json and model.safetensors",
            path,
        )
    cfg = BundleConfig.from_dict(read_json(path / CONFIG, "bundle config"), str(path / CONFIG))
    if not (path / WEIGHTS).is_file():
        raise NcmError(f"bundle has no {WEIGHTS}", path)
    return cfg


def read_bundle_extra(path: str | Path) -> dict[str, Any]:
    """The bundle's extra tensors (``extra.safetensors``: the OOD detector's statistics) as numpy
    arrays, without PyTorch; ``{}`` when it has none."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    file = Path(path).expanduser() / EXTRA
    if not file.is_file():
        return {}
    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError) as exc:
        raise NcmError(f"file is damaged or not safetensors ({exc})", file) from None


def config_bundle(path: str | Path) -> ModelBundle:
    """A bundle without its model (``model`` is None): config, path and extra tensors as numpy arrays.

    Enough for a prediction with a cached ONNX graph (:mod:`ncm_core.inference.light`); no PyTorch.
    """
    path = Path(path).expanduser()
    cfg = read_bundle_config(path)
    return ModelBundle(model=None, config=cfg, path=path, extra=read_bundle_extra(path))


def load_bundle(path: str | Path | ModelBundle, device: str = "cpu") -> ModelBundle:
    """Load a bundle directory: rebuild the model from its config and load its safetensors weights."""
    if isinstance(path, ModelBundle):
        if path.model is not None:
            return path
        path = path.path  # a config-only bundle: load its model
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from ncm_core.models.factory import build_model

    path = Path(path).expanduser()
    cfg = read_bundle_config(path)
    wfile = path / WEIGHTS
    try:
        state = load_file(str(wfile), device=device)
    except (SafetensorError, OSError, ValueError) as exc:
        raise NcmError(f"weights file is damaged or not safetensors ({exc})", wfile) from None
    model = build_model(cfg.architecture, cfg.num_outputs, in_chans=cfg.input.in_chans, **cfg.model_kwargs)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            k = wrong[0]
            parts.append(
                f"{len(wrong)} tensor(s) of the wrong shape, e.g. {k} is {tuple(state[k].shape)} "
                f"in the weights but {tuple(own[k].shape)} in the model"
            )
        if missing:
            parts.append(f"{len(missing)} missing, e.g. {missing[0]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected, e.g. {unexpected[0]}")
        raise NcmError(
            f"weights do not match the config ({cfg.architecture}, {cfg.input.in_chans} input "
            f"channel(s), {cfg.num_outputs} outputs): " + "; ".join(parts),
            path,
        )
    model.load_state_dict(state, strict=True)
    model.to(device).eval()
    extra = {}
    if (path / EXTRA).is_file():
        try:
            extra = load_file(str(path / EXTRA), device=device)
        except (SafetensorError, OSError, ValueError) as exc:
            raise NcmError(f"file is damaged or not safetensors ({exc})", path / EXTRA) from None
    bundle = ModelBundle(model=model, config=cfg, path=path, extra=extra)
    st = wfile.stat()  # which version of the file the model holds (an exported graph is cached only for it)
    bundle.__dict__["_ncm_weights_stat"] = (st.st_mtime_ns, st.st_size)
    return bundle
