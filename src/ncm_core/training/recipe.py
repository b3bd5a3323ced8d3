"""Training recipes of tile classifiers: what ``TrainConfig.recipe`` turns on, and the weight average.

``"basic"`` is the plain recipe (flips and quarter turns, cross-entropy, the last weights of the best
epoch). ``"generalise"`` (the default) is made for frames imaged in different microscope sessions,
where brightness, contrast, focus and JPEG quality differ between sessions and a network would
otherwise learn the session look instead of the particles:

* ``standardize``: each tile mapped by its own 1st/99th percentiles (``InputSpec.standardize``), the
  same at training, evaluation and prediction time;
* ``augment``: flips, quarter turns, zoom (``scale``) and random looks (``intensity``, ``blur``,
  ``noise``, ``jpeg``; :mod:`ncm_core.data.augment`);
* ``balanced``: every class drawn equally often per epoch, whatever its number of frames;
* ``label_smoothing``: 0.1 of the target spread over the other classes;
* ``ema``: an exponential moving average of the weights, validated and kept in the bundle;
* ``tta``: evaluation averages each tile's probabilities over flips and quarter turns.

Each field of :class:`~ncm_core.training.config.TrainConfig` that is None takes the recipe's choice;
one that is set overrides it.
"""

from __future__ import annotations

import copy
import hashlib
from typing import Any

import numpy as np

from ncm_core.data.augment import AUGMENTATIONS
from ncm_core.errors import NcmError

RECIPES: dict[str, dict[str, Any]] = {
    "basic": {
        "standardize": False,
        "augment": ("flip", "rot90"),
        "balanced": False,
        "label_smoothing": 0.0,
        "ema": False,
        "tta": False,
    },
    "generalise": {
        "standardize": True,
        "augment": AUGMENTATIONS["classify"],
        "balanced": True,
        "label_smoothing": 0.1,
        "ema": True,
        "tta": True,
    },
}


def recipe_settings(c: Any) -> dict[str, Any]:
    """The effective recipe settings of a ``TrainConfig``: its own value where set, else the recipe's
    (``augment=True`` is the recipe's selection)."""
    if c.recipe not in RECIPES:
        raise NcmError(f"recipe must be one of {', '.join(RECIPES)}, got {c.recipe!r}")
    r = dict(RECIPES[c.recipe])
    for key in ("standardize", "balanced", "label_smoothing", "ema", "tta"):
        if getattr(c, key) is not None:
            r[key] = getattr(c, key)
    if c.augment is not True:
        r["augment"] = c.augment
    return r


def ema_decay(decay: float | None, steps_per_epoch: int) -> float:
    """The EMA decay per step: as given, or one that averages over about one epoch's steps."""
    if decay is not None:
        return float(decay)
    return min(0.9999, max(0.9, 1.0 - 1.0 / max(1, steps_per_epoch)))


class WeightAverage:
    """An exponential moving average of a model's weights (and buffers), updated after each step.

    ``module`` is the averaged copy (validate and save it). The decay warms up, ``min(decay, (1 + n) /
    (10 + n))`` after ``n`` updates, so the first epochs are not dominated by the random start.
    """

    def __init__(self, model: Any, decay: float) -> None:
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = float(decay)
        self.updates = 0

    def update(self, model: Any) -> None:
        import torch

        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        self.updates += 1
        with torch.no_grad():
            ema, own = self.module.state_dict(), model.state_dict()
            for k, v in ema.items():
                src = own[k].detach()
                if v.dtype.is_floating_point:
                    v.mul_(d).add_(src.to(v.dtype), alpha=1 - d)
                else:
                    v.copy_(src)

    def state(self) -> dict[str, Any]:
        return {"weights": self.module.state_dict(), "updates": self.updates}

    def load(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["weights"])
        self.updates = int(state["updates"])


def recalibrate_batchnorm(model: Any, batches: list[Any], device: Any) -> None:
    """Set every BatchNorm's running statistics to their mean over ``batches`` (the current weights'), so
    the evaluated network sees what training saw: after a few hundred steps of fast-changing weights the
    running averages still carry the early weights' statistics. Used by the U-Net and the 3D generator."""
    import torch

    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms or not batches:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches below
    model.train()
    with torch.no_grad():
        for xb in batches:
            model(torch.as_tensor(xb, device=device))
    for m, mom in zip(norms, momenta):
        m.momentum = mom
    model.eval()


def array_digest(arrays: list[np.ndarray], settings: str = "") -> str:
    """SHA-1 of ``settings`` and the shapes and bytes of ``arrays``: what a training checkpoint's
    fingerprint holds of its data."""
    h = hashlib.sha1(settings.encode())
    for a in arrays:
        h.update(str(a.shape).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()
