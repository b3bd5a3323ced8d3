"""Building models: timm architectures by name, weights only from local files.

:func:`build_model` is a thin layer over ``timm.create_model`` that keeps
timm's naming (``efficientnet_b0`` ... ``efficientnet_b7``, ``resnet18``,
``convnext_tiny``, ``mobilenetv3_small_100``, ...) and its adaptation of
pretrained weights to another number of input channels or classes, but never
downloads: pretrained weights come from a file the user names.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from ncm_core.errors import NcmError

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


def check_architecture(name: str) -> str:
    """Return ``name`` if timm knows it (or it is one of :mod:`ncm_core.models.nets`), else raise with close matches."""
    import timm

    from ncm_core.models import nets

    del nets  # imported for its effect: it registers the project's own models with timm

    if name in timm.list_models():
        return name
    close = difflib.get_close_matches(name, timm.list_models(), n=4, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see timm.list_models() for names"
    raise NcmError(f"unknown architecture {name!r}{hint}")


def weights_architecture(path: Path) -> str | None:
    """The architecture a weights file was made for, where it says: a bundle's ``config.json`` beside it, or
    the ``architecture`` entry of the safetensors metadata (as napari-ncm's pretraining writes it)."""
    config = path.parent / "config.json"
    try:
        if config.is_file():
            import json

            arch = json.loads(config.read_text()).get("architecture")
            if arch:
                return str(arch)
        if path.name.endswith(".safetensors"):
            from safetensors import safe_open

            with safe_open(str(path), "np") as fh:
                return (fh.metadata() or {}).get("architecture")
    except Exception:  # unreadable metadata: the caller's own message stands
        return None
    return None


def weights_in_chans(path: Path) -> int | None:
    """The input channels a safetensors weights file says it was made for (``ncm pretrain`` writes them), or None."""
    if not path.name.endswith(".safetensors"):
        return None
    try:
        from safetensors import safe_open

        with safe_open(str(path), "np") as fh:
            value = (fh.metadata() or {}).get("in_chans")
        return int(value) if value else None
    except Exception:  # unreadable metadata: loading says what is wrong
        return None


def check_coverage(model: Any, path: Path, architecture: str, minimum: float = 0.5) -> None:
    """timm loads a weights file leniently (names it does not know are skipped with a log line), so a file
    for another network would give an untrained model without a word: refuse one that names fewer than
    ``minimum`` of the model's tensors outside the classifier, which timm replaces for the new classes."""
    if path.name.endswith(".safetensors"):
        from safetensors import safe_open

        with safe_open(str(path), "np") as fh:
            names = set(fh.keys())
    else:  # timm's own reader (weights only: nothing is unpickled beyond tensors)
        from timm.models import load_state_dict

        names = set(load_state_dict(str(path)))
    head = str(model.pretrained_cfg.get("classifier") or "")
    want = [k for k in model.state_dict() if not (head and k.startswith(head + "."))]
    found = sum(k in names for k in want)
    if want and found < minimum * len(want):
        source = weights_architecture(path)
        raise NcmError(
            f"these weights hold {found} of the {len(want)} tensors of {architecture}"
            + (f"; they are for {source}" if source and source != architecture else "; are they for another network?"),
            path,
        )


def build_model(
    architecture: str,
    num_outputs: int,
    *,
    in_chans: int = 1,
    pretrained: str | Path | bool | None = None,
    **kwargs: Any,
):
    """Create a timm model with ``num_outputs`` outputs and ``in_chans`` input channels.

    ``pretrained`` is a local weights file (``.safetensors`` preferred; ``.pth``
    files are read with ``torch.load(weights_only=True)``, which never runs
    pickled code). timm drops a classifier of another size and adapts the first
    convolution to ``in_chans``. ``pretrained=True`` is refused: nothing is
    downloaded at run time.
    """
    import timm

    if architecture in ("ncm_descriptors", "ncm_hybrid"):  # heads that read descriptors (models/hybrid.py)
        from ncm_core.models.hybrid import build_head_model

        backbone = None
        if architecture == "ncm_hybrid":  # its backbone by name, pooled features only
            name, bkw = kwargs.pop("backbone", "ncm_vgg"), kwargs.pop("backbone_kwargs", None) or {}
            backbone = build_model(name, 1, in_chans=in_chans, pretrained=pretrained, **bkw)
            backbone.reset_classifier(0)
        return build_head_model(architecture, num_outputs, backbone=backbone, **kwargs)
    check_architecture(architecture)
    if num_outputs < 1:
        raise NcmError(f"a model needs at least one output, got {num_outputs}")
    if in_chans not in (1, 3):
        raise NcmError(f"in_chans must be 1 (grayscale) or 3 (RGB), got {in_chans}")
    if pretrained is True:
        raise NcmError(
            f"{architecture}: napari-ncm does not download weights. Download them once on a machine with "
            f"network access (e.g. timm.create_model('{architecture}', pretrained=True) and "
            "safetensors.torch.save_file(model.state_dict(), 'weights.safetensors')), then pass "
            "pretrained='weights.safetensors' (CLI: --pretrained weights.safetensors)"
        )
    if pretrained:
        path = Path(pretrained).expanduser()
        if not path.is_file():
            raise NcmError("pretrained weights file not found", path)
        if not path.name.endswith(WEIGHT_SUFFIXES):
            raise NcmError(f"pretrained weights must be one of {', '.join(WEIGHT_SUFFIXES)}", path)
        chans = weights_in_chans(path)
        if chans is not None and chans != in_chans and chans != 3:  # timm adapts 3-channel weights itself
            raise NcmError(
                f"these weights were pretrained on {chans}-channel images, the model takes {in_chans} "
                f"({'grayscale' if in_chans == 1 else 'colour'} training images); pretrain on images of that kind",
                path,
            )
        overlay: dict[str, Any] = {"file": str(path)}
        if chans is not None:  # the file's own channel count: timm adapts only what differs (and says nothing)
            cfg = timm.models.get_pretrained_cfg(architecture)
            size = tuple(getattr(cfg, "input_size", None) or (3, 224, 224))
            overlay["input_size"] = (chans, *size[1:])
        try:
            model = timm.create_model(
                architecture,
                pretrained=True,
                num_classes=num_outputs,
                in_chans=in_chans,
                pretrained_cfg_overlay=overlay,
                **kwargs,
            )
            check_coverage(model, path, architecture)
            return model
        except NcmError:
            raise
        except Exception as exc:
            source = weights_architecture(path)
            if source and source != architecture:
                raise NcmError(
                    f"these weights are for {source}, not for {architecture}; train with --arch {source} or give "
                    f"weights of {architecture}",
                    path,
                ) from None
            raise NcmError(
                f"cannot load these weights into {architecture} ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:300]})",
                path,
            ) from None
    return timm.create_model(architecture, pretrained=False, num_classes=num_outputs, in_chans=in_chans, **kwargs)
