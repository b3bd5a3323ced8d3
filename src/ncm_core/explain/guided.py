"""Guided backpropagation that is correct for SiLU/Swish networks (EfficientNet and friends).

captum's :class:`~captum.attr.GuidedBackprop` overrides the backward pass of
``nn.ReLU`` modules only. EfficientNet has no ReLU: its activations are SiLU
(Swish), so on EfficientNet captum's guided backprop silently returns the plain
input gradient. This module extends captum's class to every element-wise
activation module with the same rule, generalised from ReLU:

    R_in = max(f'(x), 0) * max(R_out, 0)

where ``x`` is the activation's input, ``f'`` its derivative and ``R_out``
the relevance (gradient) arriving from above. For ReLU ``f'(x) = 1[x > 0]``
and the rule is exactly the original guided backpropagation (Springenberg et
al. 2015: pass only positive signals, and only through units that were
active), which captum implements; for SiLU, ``f'(x) = s(x) (1 + x (1 - s(x)))``
with ``s`` the logistic function: units pass signal in proportion to their
local slope, and the part of SiLU that decreases (x < about -1.28, where
``f'`` is negative) passes nothing, as an inactive ReLU does. Sigmoid gates
(squeeze-and-excitation) and pooling keep their ordinary gradient, as in the
original method for max-pooling.

Activations are applied through a forward pre-hook that records their input
and a full backward hook (captum's own hook helper) that returns the rule's
value; in-place activations are switched to out-of-place while the hooks are
in place, because full backward hooks cannot see in-place modules.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from captum.attr import GuidedBackprop
from torch import Tensor, nn

__all__ = ["SmoothGuidedBackprop", "GUIDED_ACTIVATIONS", "guided_rule"]

#: Element-wise activation modules whose backward pass is rewritten by the guided rule.
GUIDED_ACTIVATIONS: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.SiLU,
    nn.GELU,
    nn.Hardswish,
    nn.Mish,
    nn.ELU,
    nn.LeakyReLU,
    nn.Softplus,
    nn.ReLU6,
)


def _timm_activations() -> tuple[type[nn.Module], ...]:
    try:  # timm's own Swish/GELU classes (used when timm is not in 'exportable' mode)
        from timm.layers import activations as ta
    except ImportError:  # pragma: no cover
        return ()
    names = ("Swish", "SiLU", "Mish", "HardSwish", "GELU", "GELUTanh", "HardMish")
    return tuple(getattr(ta, n) for n in names if isinstance(getattr(ta, n, None), type))


def guided_rule(module: nn.Module, x: Tensor, grad_out: Tensor) -> Tensor:
    """``max(f'(x), 0) * max(grad_out, 0)`` for the activation ``module`` (``f'`` by autograd)."""
    with torch.enable_grad():
        xi = x.detach().requires_grad_(True)
        (slope,) = torch.autograd.grad(module.forward(xi).sum(), xi)  # .forward: no hooks
    return slope.clamp_min(0) * grad_out.clamp_min(0)


@contextmanager
def _out_of_place(model: nn.Module) -> Iterator[None]:
    changed = [m for m in model.modules() if getattr(m, "inplace", False) is True]
    for m in changed:
        m.inplace = False
    try:
        yield
    finally:
        for m in changed:
            m.inplace = True


class SmoothGuidedBackprop(GuidedBackprop):
    """captum's GuidedBackprop, with the guided rule applied to SiLU/Swish (and other smooth
    element-wise activations) as well as to ReLU. See the module docstring for the rule."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self._kinds = GUIDED_ACTIVATIONS + _timm_activations()
        self._inputs: dict[int, Tensor] = {}

    def attribute(self, inputs: Any, target: Any = None, additional_forward_args: Any = None) -> Any:
        import warnings

        with _out_of_place(self.model), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")
            try:
                return super().attribute(inputs, target=target, additional_forward_args=additional_forward_args)
            finally:
                self._inputs.clear()

    def _register_hooks(self, module: nn.Module) -> None:
        from captum._utils.common import _register_backward_hook

        if isinstance(module, self._kinds):
            self.backward_hooks.append(module.register_forward_pre_hook(self._keep_input))
            self.backward_hooks.extend(_register_backward_hook(module, self._guided_hook, self))

    def _keep_input(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        self._inputs[id(module)] = args[0].detach()

    def _guided_hook(self, module: nn.Module, grad_input: Any, grad_output: Any) -> Any:
        g_out = grad_output[0] if isinstance(grad_output, tuple) else grad_output
        new = guided_rule(module, self._inputs[id(module)], g_out)
        return (new,) if isinstance(grad_input, tuple) else new
