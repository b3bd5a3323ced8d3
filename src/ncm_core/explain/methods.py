"""Explanation maps for image tiles: one function, :func:`explain`, for every method.

Methods (``METHODS``):

- ``gradcam``, ``gradcam++``, ``scorecam``, ``layercam``: torchcam's extractors
  (unsigned: ReLU of the weighted activations).
- ``gradram``: Grad-CAM without the ReLU (captum's ``LayerGradCam`` with
  ``relu_attributions=False``): positive where the layer's features raise the
  output, negative where they lower it. Used for regression outputs (Deeg et
  al. 2024), and works for class scores too (signed Grad-CAM).
- ``guided-backprop``: captum's guided backpropagation extended to SiLU/Swish
  networks (:mod:`ncm_core.explain.guided`), summed over input channels.
- ``guided-gradcam``: guided backpropagation times the (upsampled) Grad-CAM.
- ``occlusion``: captum's occlusion definition, batched and computed locally
  where the network allows it (:mod:`ncm_core.explain.occlusion`): the drop of the
  class probability (classifiers) or of the predicted value in the target's
  units (regression) when a window is filled with the dataset mean.

Maps are returned at the size of the tiles passed in. CAM maps are not
normalised per tile, so tiles of a mosaic can be compared and blended; scale
them for display only. For a regression bundle, the gradient methods work on
the standardised output (a positive factor per target), so their signs are the
signs of the effect on the value in its own units.

Targets: ``"predicted"`` (classifiers; the default), ``"top-K"`` (the K most
probable classes), a class index or name, ``"output:K"`` / a target name / an
index (regression), ``"all"`` (every class or output), or a list of these.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from ncm_core.devices import exact_float32
from ncm_core.errors import NcmError
from ncm_core.explain.targets import default_layer, output_names, resolve_layer, resolve_targets
from ncm_core.models.bundle import ModelBundle, load_bundle
from ncm_core.progress import CancelFlag, check_cancel

__all__ = [
    "METHODS",
    "SIGNED",
    "Explanation",
    "explain",
    "explain_tensor",
    "resolve_targets",
    "resolve_layer",
    "default_layer",
    "fill_value",
]

#: method name -> short description (the library it comes from)
METHODS: dict[str, str] = {
    "gradcam": "Grad-CAM (torchcam)",
    "gradcam++": "Grad-CAM++ (torchcam)",
    "scorecam": "Score-CAM (torchcam)",
    "layercam": "Layer-CAM (torchcam)",
    "gradram": "Grad-RAM: signed Grad-CAM (captum LayerGradCam, relu_attributions=False)",
    "guided-backprop": "guided backpropagation, SiLU-aware (captum + ncm_core.explain.guided)",
    "guided-gradcam": "guided backpropagation x Grad-CAM",
    "occlusion": "occlusion (captum's definition, batched and local)",
}
#: methods whose maps have a sign (shown with a diverging colormap and symmetric limits)
SIGNED = frozenset({"gradram", "guided-backprop", "guided-gradcam", "occlusion"})
#: methods that need a target layer
LAYERED = frozenset({"gradcam", "gradcam++", "scorecam", "layercam", "gradram", "guided-gradcam"})
_TORCHCAM = {"gradcam": "GradCAM", "gradcam++": "GradCAMpp", "scorecam": "ScoreCAM", "layercam": "LayerCAM"}


@dataclass
class Explanation:
    """Maps for a batch of tiles.

    ``maps`` is ``(N, K, h, w)`` float32 at the tiles' size; ``targets`` ``(N, K)`` the output index of
    each map and ``names`` their names; ``scores`` ``(N, outputs)`` the class probabilities
    (classifiers) or predicted values in the targets' units (regression).
    """

    maps: np.ndarray
    targets: np.ndarray
    names: list[list[str]]
    scores: np.ndarray
    method: str
    layer: str | None
    signed: bool
    task: str

    @classmethod
    def concat(cls, parts: list[Explanation]) -> Explanation:
        """One explanation of all tiles of ``parts`` (same method, targets per tile kept)."""
        first = parts[0]
        return cls(
            np.concatenate([e.maps for e in parts]),
            np.concatenate([e.targets for e in parts]),
            [row for e in parts for row in e.names],
            np.concatenate([e.scores for e in parts]),
            first.method,
            first.layer,
            first.signed,
            first.task,
        )

    def __getitem__(self, tiles: slice) -> Explanation:
        """The explanation of a slice of the tiles."""
        return Explanation(
            self.maps[tiles],
            self.targets[tiles],
            self.names[tiles],
            self.scores[tiles],
            self.method,
            self.layer,
            self.signed,
            self.task,
        )


def check_method(method: str) -> str:
    m = str(method).lower().replace("_", "-")
    m = {
        "grad-cam": "gradcam",
        "grad-cam++": "gradcam++",
        "gradcampp": "gradcam++",
        "score-cam": "scorecam",
        "layer-cam": "layercam",
        "grad-ram": "gradram",
        "guided": "guided-backprop",
        "gbp": "guided-backprop",
        "guided-grad-cam": "guided-gradcam",
    }.get(m, m)
    if m not in METHODS:
        close = difflib.get_close_matches(m, list(METHODS), n=1)
        raise NcmError(
            f"unknown explanation method {method!r}"
            + (f" (did you mean {close[0]!r}?)" if close else "")
            + f"; choose from {', '.join(METHODS)}"
        )
    return m


@contextmanager
def _gradients_from(model: Any, module: Any) -> Iterator[None]:
    """Build the autograd graph from ``module``'s output on only: CAM weights need gradients at that layer,
    not below it, so the trunk runs as cheaply as plain inference."""
    import torch

    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    h = module.register_forward_hook(
        lambda m, i, o: o.detach().requires_grad_(True).clone() if torch.is_grad_enabled() else o
    )
    try:
        yield
    finally:
        h.remove()
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)


# --------------------------------------------------------------------------- methods


def fill_value(bundle: ModelBundle, x: Any) -> Any:
    """Occlusion fill in model-input units: the training data's mean input per channel when the bundle
    records it (``training.input_mean``), else the mean of the inputs being explained."""
    import torch

    mean = bundle.config.training.get("input_mean")
    if mean is not None:
        return torch.as_tensor(mean, dtype=x.dtype, device=x.device)
    return x.mean(dim=(0, 2, 3))


def _upsample(maps: Any, size: tuple[int, int]) -> Any:
    import torch.nn.functional as F

    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)


def _cam_maps(model: Any, x: Any, targets: Any, method: str, layer: str, batch_size: int) -> tuple[Any, Any]:
    """``(N, K, h, w)`` maps at the layer's resolution from torchcam or captum, and the raw outputs.

    ``targets`` is an ``(N, K)`` array, or a function of the raw outputs that returns one: then the
    gradient methods take targets and maps from a single forward pass.
    """
    import torch
    import torchcam.methods as tcm

    module = dict(model.named_modules())[layer]
    out = []
    with _gradients_from(model, module):
        if method == "gradram":
            from captum.attr import LayerGradCam

            with torch.inference_mode():
                z = model(x)
            targets = targets(z) if callable(targets) else targets
            lgc = LayerGradCam(model, module)
            for k in range(targets.shape[1]):
                a = lgc.attribute(x, target=targets[:, k].tolist(), relu_attributions=False)
                out.append(a[:, 0].detach())
            return torch.stack(out, 1), z
        kw = {"batch_size": max(batch_size, 64)} if method == "scorecam" else {}
        with getattr(tcm, _TORCHCAM[method])(model, target_layer=layer, input_shape=tuple(x.shape[1:]), **kw) as ex:
            grad = method != "scorecam"
            with torch.set_grad_enabled(grad):
                z = model(x)
                targets = targets(z.detach()) if callable(targets) else targets
                for k in range(targets.shape[1]):
                    extra = {"retain_graph": k < targets.shape[1] - 1} if grad else {}
                    cam = ex(class_idx=targets[:, k].tolist(), scores=z, normalized=False, **extra)[0]
                    out.append(cam.detach())
    return torch.stack(out, 1), z.detach()


def _guided_maps(model: Any, x: Any, targets: np.ndarray) -> Any:
    """``(N, K, H, W)`` guided backpropagation summed over input channels."""
    import torch

    from ncm_core.explain.guided import SmoothGuidedBackprop

    gbp = SmoothGuidedBackprop(model)
    maps = []
    for k in range(targets.shape[1]):
        a = gbp.attribute(x.clone().requires_grad_(True), target=targets[:, k].tolist())
        maps.append(a.detach().sum(1))
    return torch.stack(maps, 1)


@exact_float32()
def explain_tensor(
    bundle: ModelBundle,
    x: Any,
    method: str = "gradcam",
    target: Any = None,
    layer: str | None = None,
    *,
    size: tuple[int, int] | None = None,
    batch_size: int = 16,
    window: tuple[int, int] = (7, 7),
    stride: tuple[int, int] | None = None,
    fill: Any = "mean",
    cancel: CancelFlag = None,
) -> Explanation:
    """:func:`explain` for prepared model inputs ``x`` ``(N, C, H, W)``
    (see :func:`ncm_core.models.preprocess.tiles_to_tensor`);
    maps are resized to ``size`` (default: the input size)."""
    import torch

    method = check_method(method)
    model = bundle.model
    model.eval()
    c = bundle.config
    x = x.to(next(model.parameters()).device)
    H, W = x.shape[-2:]
    size = tuple(size or (H, W))  # type: ignore[assignment]
    if method in LAYERED:
        layer = resolve_layer(model, layer, tuple(x.shape[1:]))
    else:
        layer = None
    window = tuple(window)  # type: ignore[assignment]
    stride = tuple(stride or window)  # type: ignore[assignment]
    if method == "occlusion" and (window[0] > H or window[1] > W):
        raise NcmError(
            f"the tile ({H} x {W} px at the model's input size) is smaller than the occlusion "
            f"window ({window[0]} x {window[1]} px); use a smaller window"
        )
    names = output_names(bundle)

    def score_of(z: Any) -> np.ndarray:
        z = z.float()
        if c.task == "classify":
            return torch.softmax(z, 1).cpu().numpy()
        reg = c.regression
        return z.cpu().numpy() * np.asarray(reg.get("std", 1.0)) + np.asarray(reg.get("mean", 0.0))

    parts, all_scores, all_targets = [], [], []
    for k0 in range(0, len(x), batch_size):
        check_cancel(cancel)
        xb = x[k0 : k0 + batch_size]
        tgt = target[k0 : k0 + batch_size] if isinstance(target, np.ndarray) and target.ndim == 2 else target
        got: dict[str, np.ndarray] = {}

        def targets_of(z: Any, got: dict[str, np.ndarray] = got, tgt: Any = tgt) -> np.ndarray:
            got["scores"] = score_of(z)
            got["targets"] = resolve_targets(bundle, tgt, got["scores"])
            return got["targets"]

        if method in _TORCHCAM or method == "gradram":  # targets from the method's own forward pass
            m, _ = _cam_maps(model, xb, targets_of, method, layer, batch_size)
        else:
            with torch.inference_mode():
                tb = targets_of(model(xb))
            if method == "occlusion":
                unit = torch.as_tensor(np.asarray(c.regression.get("std", 1.0), np.float32)).reshape(-1)
                f = fill_value(bundle, x) if isinstance(fill, str) else fill
                score = (
                    (lambda o: torch.softmax(o.float(), 1))
                    if c.task == "classify"
                    else (lambda o, unit=unit: o.float() * unit.to(o.device))
                )
                m = torch.from_numpy(_occlusion(model, xb, tb, window, stride, f, score, cancel))
            elif method == "guided-backprop":
                m = _guided_maps(model, xb, tb)
            else:  # guided-gradcam
                cam = _upsample(torch.relu(_cam_maps(model, xb, tb, "gradcam", layer, batch_size)[0]), (H, W))
                m = _guided_maps(model, xb, tb) * cam
        parts.append(_upsample(m.float(), size).cpu().numpy())
        all_scores.append(got["scores"])
        all_targets.append(got["targets"])
    maps = np.concatenate(parts).astype(np.float32)
    targets = np.concatenate(all_targets)
    return Explanation(
        maps=maps,
        targets=targets,
        names=[[names[i] for i in row] for row in targets],
        scores=np.concatenate(all_scores).astype(np.float32),
        method=method,
        layer=layer,
        signed=method in SIGNED,
        task=c.task,
    )


def _occlusion(
    model: Any, x: Any, targets: np.ndarray, window: Any, stride: Any, fill: Any, score: Any, cancel: CancelFlag
) -> np.ndarray:
    from ncm_core.explain.occlusion import occlusion_maps

    return occlusion_maps(model, x, targets, window=window, stride=stride, fill=fill, score=score, cancel=cancel)


def explain(
    bundle: str | Any,
    images: Any,
    method: str = "gradcam",
    target: Any = None,
    layer: str | None = None,
    *,
    batch_size: int = 16,
    window: tuple[int, int] = (7, 7),
    stride: tuple[int, int] | None = None,
    fill: Any = "mean",
    device: str = "cpu",
    cancel: CancelFlag = None,
) -> Explanation:
    """Explanation maps for image tiles.

    Parameters
    ----------
    bundle
        A bundle directory or a loaded :class:`~ncm_core.models.bundle.ModelBundle`.
    images
        Tiles as the mosaic holds them: ``(N, h, w)`` or ``(N, h, w, C)`` (any pixel type), or a
        sequence of same-sized tiles. They are prepared exactly as for prediction.
    method
        One of :data:`METHODS`.
    target
        What to explain (module docstring): ``"predicted"``, ``"top-2"``, a class, ``"all"``, ...
    layer
        Target layer for CAM methods, by name (``model.named_modules()``); default: the last layer
        with a spatial output.
    window, stride, fill
        Occlusion window and stride in model-input pixels (default 7 x 7, stride = window) and the
        fill value (default ``"mean"``: the training inputs' mean, see :func:`fill_value`).
    """
    from ncm_core.devices import resolve_device
    from ncm_core.models.preprocess import tiles_to_tensor

    bundle = load_bundle(bundle)
    dev = resolve_device(device)
    bundle.model.to(dev)
    tiles = np.stack(images) if isinstance(images, (list, tuple)) else np.asarray(images)
    if tiles.ndim not in (3, 4) or min(tiles.shape[1:3]) < 1:
        raise NcmError(f"images must be (N, h, w) or (N, h, w, C) tiles; got an array of shape {tiles.shape}")
    x = tiles_to_tensor(tiles, bundle.config.input, dev)
    return explain_tensor(
        bundle,
        x,
        method,
        target,
        layer,
        size=tuple(tiles.shape[1:3]),
        batch_size=batch_size,
        window=window,
        stride=stride,
        fill=fill,
        cancel=cancel,
    )
