"""Pretrained backbones: a timm model without its classifier, as safetensors + a JSON sidecar.

``backbone.safetensors`` holds the state dict of ``timm.create_model(architecture, num_classes=0,
in_chans=...)`` (the keys of the timm model without its classifier, which is what ``features_only``
encoders use) with the architecture in its metadata; ``backbone.json`` says how it was made (format
``ncm-backbone``, architecture, input channels, method, epochs, input size, the information-bar band).
``ncm train --pretrained backbone.safetensors`` loads it for classification (:func:`build_model`), and
:func:`load_encoder_weights` into the encoder of a segmentation network (``smp.Unet(encoder_name="tu-<arch>")``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ncm_core.errors import NcmError

WEIGHTS = "backbone.safetensors"
SIDECAR = "backbone.json"
FORMAT = "ncm-backbone"


def save_backbone(backbone: Any, meta: dict[str, Any], folder: str | Path) -> Path:
    """Write ``backbone`` (a timm model without classifier) and ``meta`` into ``folder``; each file is written
    under a temporary name, then renamed. Returns the weights file."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in backbone.state_dict().items()}
    info = {"format": FORMAT, **meta}
    tags = {"architecture": str(meta["architecture"]), "in_chans": str(meta["in_chans"]), "format": FORMAT}
    path, side = folder / WEIGHTS, folder / SIDECAR
    save_file(state, str(path) + ".partial", metadata=tags)
    os.replace(str(path) + ".partial", path)
    side.with_suffix(".json.partial").write_text(json.dumps(info, indent=1, default=str))
    os.replace(side.with_suffix(".json.partial"), side)
    return path


def backbone_info(path: str | Path) -> dict[str, Any]:
    """The sidecar of a backbone weights file (``{}`` when there is none)."""
    side = Path(path).with_name(SIDECAR)
    try:
        return json.loads(side.read_text()) if side.is_file() else {}
    except (OSError, ValueError):
        return {}


def load_encoder_weights(model: Any, path: str | Path) -> Any:
    """Load a pretrained backbone into ``model``'s encoder and return ``model``.

    ``model`` is a segmentation network with a timm encoder (``smp.Unet(encoder_name="tu-resnet18",
    encoder_weights=None)``: its ``encoder.model`` is timm's ``features_only`` model), or a timm model itself.
    Every tensor of the encoder must be in the file with the same shape; otherwise one line says how
    many were found and which architecture the weights are for.
    """
    from safetensors.torch import load_file

    from ncm_core.models.factory import weights_architecture

    path = Path(path).expanduser()
    if not path.is_file():
        raise NcmError("pretrained backbone file not found", path)
    try:
        tensors = load_file(str(path))
    except Exception as exc:
        raise NcmError(f"cannot read the backbone ({type(exc).__name__}: {str(exc)[:200]})", path) from None
    enc = getattr(model, "encoder", model)
    inner = getattr(enc, "model", enc)
    # features_only models flatten top-level Sequentials: ``stem.0.weight`` becomes ``stem_0.weight``
    flat = {k.replace(".", "_", 1): k for k in tensors}
    own = inner.state_dict()
    found = {k: tensors[k] if k in tensors else tensors.get(flat.get(k, ""), None) for k in own}
    source = weights_architecture(path) or backbone_info(path).get("architecture")
    target = getattr(enc, "name", None) or type(inner).__name__
    missing = [k for k, v in found.items() if v is None]
    if missing:
        raise NcmError(
            f"these weights hold {len(own) - len(missing)} of the {len(own)} tensors of the encoder ({target})"
            + (f"; they are for {source}" if source else "; are they for another network?"),
            path,
        )
    for k, v in found.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise NcmError(
                f"tensor {k} is {tuple(v.shape)} in the weights ({source or 'unknown architecture'}) but "
                f"{tuple(own[k].shape)} in the encoder ({target}); "
                + ("input channels differ" if v.ndim == 4 and v.shape[0] == own[k].shape[0] else "another network?"),
                path,
            )
    inner.load_state_dict(found, strict=True)
    return model
